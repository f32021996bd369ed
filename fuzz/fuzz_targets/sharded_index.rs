//! A shard index (`model.safetensors.index.json`) beside the three real shards of
//! fixtures/safetensors/sharded: opened as a file and as a model folder, tensors read.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferry_io::formats::sharded;
use ferry_io::Checkpoint;
use libfuzzer_sys::fuzz_target;

/// The scratch folder with the fixture shards copied in (once per process).
fn folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/safetensors/sharded");
        let dir = ferry_fuzz::scratch().join("sharded");
        std::fs::create_dir_all(&dir).expect("create the shard folder");
        for e in std::fs::read_dir(&src).expect("fixtures/safetensors/sharded") {
            let e = e.expect("read the fixture folder");
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".safetensors") {
                std::fs::copy(e.path(), dir.join(&name)).expect("copy a shard");
            }
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(&index, data).expect("write the index");
    if let Ok(ck) = sharded::open(&index) {
        ferry_fuzz::exercise(&ck);
    }
    if let Ok(ck) = Checkpoint::open(dir) {
        ferry_fuzz::exercise(&ck);
    }
});
