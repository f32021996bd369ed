//! Crash consistency (issue 14, findings 6 and 7): `kill -9` a real `ferry convert` at several
//! points while it writes over an older output, a single file and a sharded set (with another
//! shard count). After every kill the output is the old model whole, the new model whole, or
//! (sharded only) no model at all; never a partial or mixed set. The next complete run removes
//! the temporaries the killed ones left, says so, and leaves none of its own.

use std::borrow::Cow;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_io::{Checkpoint, DType, Metadata, OutTensor};

const TENSORS: usize = 24;
const ELEMS: usize = 1 << 20;

/// A 96 MB f32 safetensors source: enough work that a convert can be killed mid-write.
fn source(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("src.safetensors");
    let data: Vec<Vec<u8>> = (0..TENSORS)
        .map(|i| {
            (0..ELEMS)
                .flat_map(|j| ((i * 7 + j % 97) as f32 * 0.01).to_le_bytes())
                .collect()
        })
        .collect();
    let outs: Vec<OutTensor<'_>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            OutTensor::new(
                format!("layer.{i}.weight"),
                DType::F32,
                vec![ELEMS],
                move || Ok(Cow::Borrowed(&d[..])),
            )
        })
        .collect();
    ferry_io::formats::safetensors::write(&p, &outs, &Metadata::new(), &mut |_, _| {}).unwrap();
    p
}

fn convert(src: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("convert").arg(src).arg(out).args(extra);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// The dtype of a whole model at `p` (every tensor present, readable, of one dtype), or `None`
/// when `p` does not open as a model. Panics on a partial or mixed model.
fn whole_model(p: &Path) -> Option<DType> {
    let ck = Checkpoint::open(p).ok()?;
    assert_eq!(
        ck.tensors.len(),
        TENSORS,
        "a partial model opened at {}",
        p.display()
    );
    let dtype = ck.tensors[0].dtype;
    for t in &ck.tensors {
        assert_eq!(t.dtype, dtype, "a mixed model opened at {}", p.display());
        assert_eq!(t.data().unwrap().len(), ELEMS * 2, "{}", t.name);
    }
    Some(dtype)
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ferry-tmp") || n.ends_with(".ferry-staging"))
        .collect()
}

/// Writes the old output (bf16) when `old_args` are given, then kills new writes (f16) at
/// several points.
fn kill_during_writes(
    open_at: &str,
    old_args: Option<&[&str]>,
    new_args: &[&str],
    may_vanish: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let out_dir = dir.path().join("out");
    let out = out_dir.join("model.safetensors");
    let open = out_dir.join(open_at);
    std::fs::create_dir_all(&out_dir).unwrap();
    if let Some(old_args) = old_args {
        let old = convert(&src, &out, old_args).output().unwrap();
        assert!(
            old.status.success(),
            "{}",
            String::from_utf8_lossy(&old.stderr)
        );
        assert_eq!(whole_model(&open), Some(DType::BF16));
    }
    let mut seen_new = false;
    // Kills that caught the write in progress (it left a temporary behind).
    let mut mid_write = 0;
    for delay_ms in [1, 5, 15, 30, 50, 80, 120, 170, 240] {
        let mut child = convert(&src, &out, new_args).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        mid_write += usize::from(!temporaries(&out_dir).is_empty());
        match whole_model(&open) {
            Some(DType::BF16) => assert!(!seen_new, "the old model came back"),
            Some(DType::F16) => seen_new = true,
            Some(other) => panic!("unexpected {other}"),
            None => assert!(may_vanish, "the old output was lost at {delay_ms} ms"),
        }
    }
    assert!(mid_write > 0, "no kill caught a write in progress");
    let left = temporaries(&out_dir);
    let done = convert(&src, &out, new_args).output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert_eq!(whole_model(&open), Some(DType::F16));
    assert!(
        temporaries(&out_dir).is_empty(),
        "{:?}",
        temporaries(&out_dir)
    );
    if !left.is_empty() {
        assert!(
            stderr.contains("removed") && stderr.contains("interrupted"),
            "{left:?} were left, the run did not say it removed them: {stderr}"
        );
    }
}

#[test]
fn a_killed_convert_leaves_the_old_file_or_the_new_one() {
    kill_during_writes(
        "model.safetensors",
        Some(&["--dtype", "bf16"]),
        &["--dtype", "f16"],
        false,
    );
}

/// Over an older set of the same shard names: new shards must never open under the old index
/// (the old writer mixed them: 7 of 10 kills).
#[test]
fn a_killed_sharded_convert_never_leaves_a_mixed_set() {
    let shards = ["--shard-size", "8MB"];
    kill_during_writes(
        "",
        Some(&["--dtype", "bf16", shards[0], shards[1]]),
        &["--dtype", "f16", shards[0], shards[1]],
        true,
    );
}

/// Into an empty folder: the first shards alone must not open as a smaller model.
#[test]
fn a_killed_sharded_convert_never_leaves_a_partial_set() {
    kill_during_writes("", None, &["--dtype", "f16", "--shard-size", "8MB"], true);
}
