//! `ferry calibrate` and `--imatrix` as a user runs them: an importance matrix of the real
//! all-MiniLM-L6-v2 (one run of SmolLM2-135M too), read by gguf-py, identical on a second run,
//! and a q4_k conversion with it closer to the original where calibrated inputs look than one
//! without. Few tokens, so that each run takes seconds.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use ferry_io::imatrix::{Imatrix, ImatrixEntry};
use ferry_io::{quant, Checkpoint};
use support::{ferry, json, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// gguf-py's view of an imatrix: general.type, the datasets, and per weight the sums' shape
/// (ggml order), whether they are finite and positive, and the count.
const PY_IMATRIX: &str = r#"
import sys, json, numpy as np
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
field = lambda k: r.fields[k].contents()
out = {"type": field("general.type"), "datasets": field("imatrix.datasets"),
       "chunks": field("imatrix.chunk_count"), "languages": field("ferry.imatrix.languages"),
       "entries": {}}
t = {x.name: x for x in r.tensors}
for name, x in t.items():
    if not name.endswith(".in_sum2"):
        continue
    w = name[:-len(".in_sum2")]
    sums = np.asarray(x.data, dtype=np.float32)
    counts = np.asarray(t[w + ".counts"].data, dtype=np.float32)
    out["entries"][w] = {"shape": [int(d) for d in x.shape], "type": x.tensor_type.name,
                         "finite_positive": bool(np.all(np.isfinite(sums)) and np.all(sums > 0)),
                         "count": float(counts.reshape(-1)[0])}
print(json.dumps(out))
"#;

/// Checks an imatrix through gguf-py: every entry f32 with `cols(name)` columns, one
/// matrix, `tokens` counted, finite positive sums; returns the entry names.
fn check_with_gguf_py(path: &Path, tokens: u64, cols: impl Fn(&str) -> usize) -> Vec<String> {
    let Some(py) = ferry_testkit::python_with("gguf, numpy") else {
        return Vec::new();
    };
    let v: serde_json::Value =
        serde_json::from_str(&ferry_testkit::run_python(&py, PY_IMATRIX, &[path])).unwrap();
    assert_eq!(v["type"], "imatrix");
    assert_eq!(v["datasets"], serde_json::json!(["embedded:udhr-train"]));
    assert!(v["chunks"].as_u64().unwrap() > 0);
    assert_eq!(v["languages"].as_array().unwrap().len(), 47);
    let entries = v["entries"].as_object().unwrap();
    for (name, e) in entries {
        assert_eq!(e["type"], "F32", "{name}");
        assert_eq!(e["shape"], serde_json::json!([cols(name), 1]), "{name}");
        assert_eq!(e["finite_positive"], true, "{name}");
        assert_eq!(e["count"].as_f64().unwrap(), tokens as f64, "{name}");
    }
    entries.keys().cloned().collect()
}

/// The dequantized values of `name` in the GGUF `ck`.
fn values(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let t = ck.get(name).unwrap_or_else(|| panic!("no {name}"));
    let data = t.data().unwrap();
    if t.dtype.is_quantized() {
        quant::dequantize(&data, t.dtype, t.numel() as usize).unwrap()
    } else {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// sum_j importance[j] * sum_rows (a - b)^2.
fn weighted_error(a: &[f32], b: &[f32], importance: &[f32]) -> f64 {
    let cols = importance.len();
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| f64::from(importance[i % cols]) * f64::from(x - y).powi(2))
        .sum()
}

#[test]
fn minilm_imatrix_is_llama_cpp_form_deterministic_and_lowers_q4_k_error() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = 1024u64;
    let run = |out: &str| {
        json(&ferry(
            &[
                "calibrate",
                s(&model),
                "--tokens",
                "1024",
                "--out",
                out,
                "--json",
            ],
            d,
        ))
    };
    let r = run("a.imatrix.gguf");
    let c = &r["calibration"];
    assert_eq!(c["tokens"], tokens);
    assert_eq!(c["entries"], 36, "6 linear weights in each of 6 layers");
    let langs = c["languages"].as_array().unwrap();
    assert_eq!(langs.len(), 47);
    assert!(
        langs.iter().all(|l| l["tokens"].as_u64().unwrap() >= 20),
        "every language runs"
    );
    run("b.imatrix.gguf");
    let (a, b) = (d.join("a.imatrix.gguf"), d.join("b.imatrix.gguf"));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "a second run writes the same bytes"
    );
    let names = check_with_gguf_py(
        &a,
        tokens,
        |n| if n.contains("ffn_down") { 1536 } else { 384 },
    );
    if !names.is_empty() {
        let mut want: Vec<String> = (0..6)
            .flat_map(|i| {
                [
                    "attn_q",
                    "attn_k",
                    "attn_v",
                    "attn_output",
                    "ffn_up",
                    "ffn_down",
                ]
                .map(|t| format!("blk.{i}.{t}.weight"))
            })
            .collect();
        want.sort();
        assert_eq!(names, want);
    }

    // q4_k with and without the matrix, and the original under the same (llama.cpp) names.
    for (out, extra) in [
        ("f32.gguf", vec![]),
        ("q4k.gguf", vec!["--quant", "q4_k"]),
        (
            "q4k-im.gguf",
            vec!["--quant", "q4_k", "--imatrix", "a.imatrix.gguf"],
        ),
    ] {
        let mut args = vec!["convert", s(&model), out, "-q"];
        args.extend(extra);
        ok(&ferry(&args, d));
    }
    let plain = std::fs::read(d.join("q4k.gguf")).unwrap();
    assert_ne!(plain, std::fs::read(d.join("q4k-im.gguf")).unwrap());
    let (orig, q, qi) = (
        Checkpoint::open(d.join("f32.gguf")).unwrap(),
        Checkpoint::open(d.join("q4k.gguf")).unwrap(),
        Checkpoint::open(d.join("q4k-im.gguf")).unwrap(),
    );
    let im = Imatrix::read(&a).unwrap();
    // Every entry names a tensor of the converted model, with its column count.
    for (name, e) in &im.entries {
        let t = orig
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the GGUF"));
        assert_eq!(t.shape.last(), Some(&e.columns()), "{name}");
    }
    // MiniLM's hidden 384 is no multiple of 256: ffn_down is q4_k (candle's weighted kernel),
    // the rest take llama.cpp's q5_0 fallback (ferry's port of llama.cpp's weighted q5_0).
    // Both kinds are closer to the original where the calibration inputs look.
    for kind in ["ffn_down", "attn_q", "attn_v", "ffn_up"] {
        let (mut with, mut without) = (0f64, 0f64);
        for i in 0..6 {
            let name = format!("blk.{i}.{kind}.weight");
            let cols = orig.get(&name).unwrap().shape[1];
            let imp = im.importance_for(&name, cols).unwrap().unwrap();
            let o = values(&orig, &name);
            let (ep, ei) = (
                weighted_error(&o, &values(&q, &name), &imp),
                weighted_error(&o, &values(&qi, &name), &imp),
            );
            assert!(
                ei < ep,
                "{name}: {ei:.4e} with the imatrix vs {ep:.4e} without"
            );
            with += ei;
            without += ep;
        }
        eprintln!(
            "MiniLM q4_k {kind} imatrix-weighted squared error: {without:.4e} without, {with:.4e} with ({:.1}% lower)",
            100.0 * (1.0 - with / without)
        );
    }
    let meta = &qi.metadata;
    assert_eq!(
        meta["quantize.imatrix.file"],
        ferry_io::MetaValue::String("a.imatrix.gguf".into())
    );
    assert_eq!(
        meta["quantize.imatrix.entries_count"],
        ferry_io::MetaValue::U32(36)
    );

    // migrate takes it too (planned only here).
    let m = json(&ferry(
        &[
            "migrate",
            s(&model),
            "--to",
            "gguf",
            "--quant",
            "q4_k",
            "--imatrix",
            "a.imatrix.gguf",
            "--dry-run",
            "--json",
            "--out",
            "m",
        ],
        d,
    ));
    let text = m.to_string();
    assert!(text.contains("36 with the importance matrix"), "{text}");
}

#[test]
fn a_wrong_or_broken_imatrix_is_an_error_naming_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = ferry_testkit::fixture("decoders/llama-gqa");
    // The fixture's matrices have rows of 32 and 64: q4_0 quantizes them (weighted).
    let mut entries = BTreeMap::new();
    entries.insert(
        "blk.0.attn_q.weight".to_string(),
        ImatrixEntry {
            sum_sq: vec![1.0; 48],
            counts: vec![4.0],
        },
    );
    let wrong = Imatrix {
        entries,
        ..Imatrix::default()
    };
    wrong.write(&d.join("wrong.gguf")).unwrap();
    let out = ferry(
        &[
            "convert",
            s(&model),
            "x.gguf",
            "--quant",
            "q4_0",
            "--imatrix",
            "wrong.gguf",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong.gguf")
            && err.contains("blk.0.attn_q.weight")
            && err.contains("32 input columns"),
        "{err}"
    );
    let bytes = std::fs::read(d.join("wrong.gguf")).unwrap();
    std::fs::write(d.join("cut.gguf"), &bytes[..bytes.len() / 2]).unwrap();
    let out = ferry(
        &[
            "convert",
            s(&model),
            "y.gguf",
            "--quant",
            "q4_k",
            "--imatrix",
            "cut.gguf",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.gguf") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!d.join("x.gguf").exists() && !d.join("y.gguf").exists());
    // Calibration refuses a tokenizer whose ids the model does not have.
    let out = ferry(
        &[
            "calibrate",
            s(&model),
            "--tokenizer",
            s(&ferry_testkit::fixture("langid-demo/tokenizer.json")),
            "--tokens",
            "64",
            "--out",
            "t.gguf",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokenizer.json") && err.contains("vocabulary of 512"),
        "{err}"
    );
    assert!(!d.join("t.gguf").exists());
}

#[test]
fn smollm2_imatrix_has_every_linear_weight() {
    let Some(model) = ferry_testkit::smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dry = ok(&ferry(
        &["calibrate", s(&model), "--tokens", "512", "--dry-run"],
        d,
    ));
    assert!(
        dry.contains("210 matrices") && dry.contains("dry run"),
        "{dry}"
    );
    assert!(!d.join("imatrix.gguf").exists());
    let r = json(&ferry(
        &["calibrate", s(&model), "--tokens", "512", "--json"],
        d,
    ));
    assert_eq!(r["calibration"]["tokens"], 512);
    let path = d.join("imatrix.gguf");
    let im = Imatrix::read(&path).unwrap();
    assert_eq!(
        im.entries.len(),
        30 * 7,
        "SmolLM2's head is tied: no output.weight"
    );
    for i in 0..30 {
        for (t, cols) in [
            ("attn_q", 576),
            ("attn_k", 576),
            ("attn_v", 576),
            ("attn_output", 576),
            ("ffn_gate", 576),
            ("ffn_up", 576),
            ("ffn_down", 1536),
        ] {
            let name = format!("blk.{i}.{t}.weight");
            let e = &im.entries[&name];
            assert_eq!(
                (e.columns(), e.counts.clone()),
                (cols, vec![512.0]),
                "{name}"
            );
            assert!(e.sum_sq.iter().all(|v| v.is_finite() && *v > 0.0), "{name}");
        }
    }
    check_with_gguf_py(
        &path,
        512,
        |n| if n.contains("ffn_down") { 1536 } else { 576 },
    );
}
