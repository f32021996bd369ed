//! Shared helpers of the fuzz targets: a scratch folder per process for readers that take a
//! path, and [`exercise`], which reads what a reader returned the way `ferry inspect` and
//! `ferry convert` would (every tensor's bytes, then a candle tensor), so data paths are fuzzed
//! and not only headers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferry_io::{Checkpoint, Storage, TensorEntry};

/// Tensors whose data (logical size, or size of the storage behind them) is larger than this
/// are listed but not read: a legitimate claim of a large tensor in a small file would
/// otherwise make the fuzzer time out on work, not on a bug. Memory beyond it is still caught
/// by libFuzzer's `-rss_limit_mb` / `-malloc_limit_mb` (fuzz/run.sh sets 2048).
pub const MAX_READ: u64 = 16 << 20;

/// Tensors at most this large are also turned into candle tensors (casts, dequantization).
pub const MAX_CANDLE: u64 = 1 << 20;

/// This process's scratch folder: `$TMPDIR/ferry-fuzz-<pid>` (fuzz/run.sh points `TMPDIR` at
/// a folder in `/dev/shm` and removes it afterwards).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        dir
    })
}

/// Writes `data` to `name` in the scratch folder (replacing the previous input) and returns
/// its path. The previous input's maps must be dropped by then: they are, since each run
/// drops everything it opened.
pub fn write_input(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("write the fuzz input");
    path
}

/// Reads every tensor of `ck` (up to [`MAX_READ`]) and checks what a reader promises: a tensor
/// that reads has exactly `nbytes()` bytes.
pub fn exercise(ck: &Checkpoint) {
    let _ = ck.validate();
    let _ = ck.tied_groups();
    let _ = ck.param_count();
    let _ = ck.total_bytes();
    for t in &ck.tensors {
        read_tensor(t);
    }
}

/// One tensor: its bytes, then (small ones) a candle tensor on the CPU.
pub fn read_tensor(t: &TensorEntry) {
    let _ = t.validate();
    let _ = t.file_extent();
    if t.nbytes() > MAX_READ || storage_len(&t.storage) > MAX_READ {
        return;
    }
    if let Ok(data) = t.data() {
        assert_eq!(
            data.len() as u64,
            t.nbytes(),
            "tensor `{}` read {} bytes, nbytes() says {}",
            t.name,
            data.len(),
            t.nbytes()
        );
        std::hint::black_box(&data);
    }
    if t.nbytes() <= MAX_CANDLE {
        let _ = std::hint::black_box(t.to_candle(&candle_core::Device::Cpu));
    }
}

fn storage_len(s: &Storage) -> u64 {
    s.len()
}
