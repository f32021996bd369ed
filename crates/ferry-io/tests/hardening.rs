//! Issue 14's findings, each against a file made by a script in `scripts/`: pickle bombs and a
//! stride-0 view from `scripts/make_bomb_fixtures.py` (`fixtures/bombs/`), tied tensors from
//! `scripts/make_fixtures.py` (`fixtures/pytorch/tied.pth`), checked by torch itself where a
//! Python with torch is found.

use std::path::Path;

use ferry_io::convert::{self, ConvertOptions, Plan, TargetFormat};
use ferry_io::{Checkpoint, Error};
use ferry_testkit::fixture;

/// Opens `rel` and returns the error, which must be the pickle budget's.
fn over_pickle_budget(rel: &str) -> String {
    let err = Checkpoint::open(fixture(rel)).expect_err(rel);
    assert!(
        matches!(&err, Error::OverBudget { name: "pickle", .. }),
        "{rel}: {err}"
    );
    err.to_string()
}

/// A kilobyte of memo references that a flattener expands to 3.2e11 values (was 5.8 GB, 19 s).
#[test]
fn memo_list_bomb_stops_at_the_pickle_budget() {
    let e = over_pickle_budget("bombs/memo_list_bomb.pth");
    assert!(
        e.contains("memo_list_bomb.pth") && e.contains("FERRY_MAX_PICKLE_BYTES"),
        "{e}"
    );
}

/// 64 KiB keys nested 200 deep through shared references (aborted at 7.7 GB).
#[test]
fn long_keys_bomb_stops_at_the_pickle_budget() {
    let e = over_pickle_budget("bombs/long_keys_bomb.pth");
    assert!(e.contains("object tree expands"), "{e}");
}

/// One list referenced 7,500 times: 56M scalars from 30 KB (made `convert` abort).
#[test]
fn wide_list_bomb_stops_at_the_pickle_budget() {
    over_pickle_budget("bombs/wide_list_bomb.pth");
}

/// `set(L)` called 20,000 times on one memoized 20,000-item argument: 4e8 copied values.
#[test]
fn call_copy_bomb_stops_at_the_pickle_budget() {
    let e = over_pickle_budget("bombs/call_copy_bomb.pth");
    assert!(e.contains("copies its calls make"), "{e}");
}

/// A real `torch.save` of `ones(1).expand(65536, 65536)`: 1.9 KB that is 16 GiB written out
/// (convert aborted, leaving a 0-byte temp file). It opens, inspects, and converting it is an
/// error naming the tensor, its size and the flag; the small tensor beside it is unaffected.
#[test]
fn a_stride_zero_view_is_refused_with_its_size_and_the_flag() {
    let path = fixture("bombs/expanded_view.pth");
    let ck = Checkpoint::open(&path).unwrap();
    let big = ck.get("big").unwrap();
    assert_eq!(big.shape, vec![65536, 65536]);
    assert_eq!(big.repeated_span(), Some(1));
    assert_eq!(ck.get("small").unwrap().repeated_span(), None);
    for target in [
        TargetFormat::Safetensors,
        TargetFormat::Gguf,
        TargetFormat::Pth,
    ] {
        let e = Plan::new(&ck, target, &ConvertOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expanded_view.pth")
                && e.contains("`big`")
                && e.contains("16.0 GiB")
                && e.contains("--materialize-views"),
            "{target}: {e}"
        );
    }
    // Asked to materialize it, ferry still refuses where the writer would hold it in memory.
    let opts = ConvertOptions {
        materialize_views: true,
        ..Default::default()
    };
    let e = Plan::new(&ck, TargetFormat::Npz, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("only safetensors and GGUF"), "{e}");
    assert!(Plan::new(&ck, TargetFormat::Safetensors, &opts).is_ok());
    // Reading it whole is refused by the budget, not attempted.
    let e = big.data().unwrap_err();
    assert!(matches!(e, Error::OverBudget { name: "tensor", .. }), "{e}");
}

/// A view is streamed into safetensors in pieces: the written tensor equals torch's own
/// `.contiguous()` of it (`views.pth`'s `expanded` has stride [0, 1]).
#[test]
fn views_are_streamed_into_safetensors_bit_exactly() {
    let src = fixture("pytorch/views.pth");
    let ck = Checkpoint::open(&src).unwrap();
    let plan = Plan::new(&ck, TargetFormat::Safetensors, &ConvertOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.safetensors");
    convert::write(&plan, &ck, &out, &Default::default(), None, &mut |_, _| {}).unwrap();
    // The reference reader (the `safetensors` crate, what transformers uses) accepts it.
    safetensors::SafeTensors::deserialize(&std::fs::read(&out).unwrap()).unwrap();
    let back = Checkpoint::open(&out).unwrap();
    for name in ["transposed", "cols_step2", "expanded"] {
        let a = ck.get(name).unwrap();
        assert!(a.is_gathered_view(), "{name}");
        let b = back.get(name).unwrap();
        assert_eq!(&*a.data().unwrap(), &*b.data().unwrap(), "{name}");
        let c = ferry_io::compare::compare_tensors(a, b, None).unwrap();
        assert!(c.bit_exact, "{name}");
    }
}

const STRICT_LOAD: &str = r#"
import json, sys, torch
from safetensors.torch import load_file
sd = load_file(sys.argv[1])
ref = torch.load(sys.argv[2], weights_only=True)
model = torch.nn.Module()
for k, v in ref.items():
    mod = model
    parts = k.split(".")
    for p in parts[:-1]:
        if not hasattr(mod, p):
            mod.add_module(p, torch.nn.Module())
        mod = getattr(mod, p)
    mod.register_parameter(parts[-1], torch.nn.Parameter(torch.zeros_like(v)))
model.load_state_dict(sd, strict=True)
print(json.dumps({"keys": sorted(sd), "equal": all(torch.equal(sd[k], ref[k]) for k in ref)}))
"#;

/// `tied.pth` (lm_head.weight is embed.weight) to safetensors keeps both names, so PyTorch's
/// `load_state_dict(strict=True)` loads it (was: one name plus an alias in ferry's metadata).
#[test]
fn tied_tensors_keep_every_name_in_safetensors() {
    let src = fixture("pytorch/tied.pth");
    let ck = Checkpoint::open(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |opts: &ConvertOptions, name: &str| {
        let plan = Plan::new(&ck, TargetFormat::Safetensors, opts).unwrap();
        let out = dir.path().join(name);
        convert::write(&plan, &ck, &out, &Default::default(), None, &mut |_, _| {}).unwrap();
        out
    };
    let plain = write(&ConvertOptions::default(), "tied.safetensors");
    safetensors::SafeTensors::deserialize(&std::fs::read(&plain).unwrap()).unwrap();
    let names = |p: &Path| {
        let mut v: Vec<String> = Checkpoint::open(p)
            .unwrap()
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect();
        v.sort();
        v
    };
    let all: Vec<String> = {
        let mut v: Vec<String> = ck.tensors.iter().map(|t| t.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&plain), all);
    // --dedupe-tied writes the copy once (ferry reads the alias back).
    let opts = ConvertOptions {
        dedupe_tied: true,
        ..Default::default()
    };
    let deduped = write(&opts, "deduped.safetensors");
    assert!(std::fs::metadata(&deduped).unwrap().len() < std::fs::metadata(&plain).unwrap().len());
    if let Some(py) = ferry_testkit::python_with("torch, safetensors") {
        let out = ferry_testkit::run_python(&py, STRICT_LOAD, &[&plain, &src]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["equal"], true, "{out}");
    }
}

/// Errors that did not name their file (finding 9): an `.npz` entry named `.npy` (what
/// `np.savez(f, **{"": a})` writes), a `ferry.tied` alias that collides with a tensor, and a
/// rename that maps two names to one.
#[test]
fn errors_name_their_file() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(py) = ferry_testkit::python_with("numpy") {
        let npz = dir.path().join("unnamed.npz");
        ferry_testkit::run_python(
            &py,
            "import sys, numpy as np\nnp.savez(sys.argv[1], **{'': np.zeros(3)})",
            &[&npz],
        );
        let e = Checkpoint::open(&npz).unwrap_err().to_string();
        assert!(e.contains("unnamed.npz") && e.contains("`.npy`"), "{e}");
    }
    let st = dir.path().join("aliased.safetensors");
    let header = r#"{"__metadata__":{"ferry.tied":"{\"a\":\"b\"}"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&st, bytes).unwrap();
    let e = Checkpoint::open(&st).unwrap_err().to_string();
    assert!(
        e.contains("aliased.safetensors") && e.contains("already holds"),
        "{e}"
    );
    let ck = Checkpoint::open(fixture("pytorch/proto2.pth")).unwrap();
    let opts = ConvertOptions {
        renamer: ferry_io::rename::Renamer {
            rules: vec![ferry_io::rename::RenameRule::parse(r".*=same").unwrap()],
            ..Default::default()
        },
        ..Default::default()
    };
    let e = Plan::new(&ck, TargetFormat::Safetensors, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("proto2.pth") && e.contains("`same`"), "{e}");
}

/// Every input that once crashed a fuzz target of a ferry-io reader (`fuzz/regressions/`,
/// see its README) opens and loads each tensor into candle without a panic: an error or a
/// value, never a crash. New regression files are picked up as they are added.
#[test]
fn fuzz_regressions_are_errors_not_panics() {
    let root = ferry_testkit::repo_root().join("fuzz/regressions");
    let mut seen = 0;
    for target in [
        "pickle",
        "zip",
        "safetensors",
        "sharded_index",
        "gguf",
        "numpy",
    ] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for f in dir {
            let path = f.unwrap().path();
            seen += 1;
            let tmp = tempfile::tempdir().unwrap();
            // Readers sniff by content; give the file its format's usual name too.
            let ext = match target {
                "gguf" => "gguf",
                "numpy" => "npy",
                "sharded_index" => "json",
                "safetensors" => "safetensors",
                _ => "pth",
            };
            let p = tmp.path().join(format!("input.{ext}"));
            std::fs::copy(&path, &p).unwrap();
            let result = std::panic::catch_unwind(|| {
                if let Ok(ck) = Checkpoint::open(&p) {
                    for t in &ck.tensors {
                        let _ = t.to_candle(&candle_core::Device::Cpu);
                    }
                }
            });
            assert!(result.is_ok(), "{} panicked", path.display());
        }
    }
    assert!(seen > 0, "no regression inputs under {}", root.display());
}
