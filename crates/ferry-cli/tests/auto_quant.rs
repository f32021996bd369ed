//! `--quant auto` as a user runs it, on the real all-MiniLM-L6-v2 over three languages of
//! three scripts (seconds per run): at the size of uniform q4_0 its worst language is closer
//! to the original than uniform q4_0's; the file holds the chosen types, quantized with auto's
//! calibration and saying so (`--auto-no-imatrix`: without), and gguf-py reads it;
//! a budget gives a file that is verified on the held-out probes; goals out of reach and
//! misplaced options are errors that say what to do.

mod support;

use std::path::Path;

use ferry_io::Checkpoint;
use serde_json::Value;
use support::{ferry, json};

const LANGS: &str = "en,ru,zh";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn auto(model: &Path, out: &Path, extra: &[&str], cwd: &Path) -> Value {
    let mut args = vec![
        "convert",
        s(model),
        s(out),
        "--quant",
        "auto",
        "--auto-languages",
        LANGS,
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&ferry(&args, cwd))
}

fn worst(plan: &Value) -> f64 {
    plan["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["measured"].as_f64().unwrap())
        .fold(0.0, f64::max)
}

#[test]
fn auto_beats_uniform_at_equal_size_and_writes_what_it_chose() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Uniform q4_0: the only candidate, any size, quantized without an importance matrix as
    // `--quant q4_0` would.
    let uniform = auto(
        &model,
        &d.join("q4_0.gguf"),
        &[
            "--auto-types",
            "q4_0",
            "--target-bpw",
            "32",
            "--auto-no-imatrix",
        ],
        d,
    );
    let u = &uniform["auto"];
    assert_eq!(u["quantized_with_imatrix"], false);
    let plain = Checkpoint::open(d.join("q4_0.gguf")).unwrap();
    assert!(
        !plain
            .metadata
            .keys()
            .any(|k| k.starts_with("quantize.imatrix")),
        "--auto-no-imatrix records no importance matrix"
    );
    // The same, quantized with auto's calibration (the default): the candidates it measures
    // are rounded with the matrix, so their weighted error is lower.
    let weighted = auto(
        &model,
        &d.join("q4_0-im.gguf"),
        &["--auto-types", "q4_0", "--target-bpw", "32"],
        d,
    );
    // The blocks' matrices have importance entries; the embeddings, as in llama.cpp's
    // imatrix, have none and are rounded the same either way.
    let error = |plan: &Value, blocks: bool| -> f64 {
        plan["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"].as_str().unwrap().starts_with("blk.") == blocks)
            .map(|t| t["error"].as_f64().unwrap())
            .sum()
    };
    let (e_plain, e_weighted) = (error(u, true), error(&weighted["auto"], true));
    assert!(
        e_weighted < 0.95 * e_plain,
        "q4_0 with auto's calibration: weighted error {e_weighted:.4e}, without {e_plain:.4e}"
    );
    let (o_plain, o_weighted) = (error(u, false), error(&weighted["auto"], false));
    assert!(
        (o_plain - o_weighted).abs() <= 1e-9 * o_plain,
        "tensors without an entry: {o_plain:.6e} against {o_weighted:.6e}"
    );
    // A choice that quantizes nothing needs no matrix (and is no error).
    let floats = auto(
        &model,
        &d.join("f16.gguf"),
        &["--auto-types", "f16", "--target-bpw", "32"],
        d,
    );
    assert_eq!(floats["auto"]["types"][0][0], "f16");
    let f16 = Checkpoint::open(d.join("f16.gguf")).unwrap();
    assert!(!f16.metadata.contains_key("quantize.imatrix.dataset"));
    assert!(u["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["dtype"] == "q4_0"));
    let bytes = u["bytes"].as_u64().unwrap();
    let chosen = auto(
        &model,
        &d.join("auto.gguf"),
        &["--target-size", &bytes.to_string()],
        d,
    );
    let a = &chosen["auto"];
    assert!(a["bytes"].as_u64().unwrap() <= bytes);
    assert_eq!(a["languages"].as_array().unwrap().len(), 3);
    let (wu, wa) = (worst(u), worst(a));
    assert!(
        wa < wu,
        "auto's worst language (1 - cosine {wa:.5}) is not better than uniform q4_0's ({wu:.5}) at the same size"
    );
    let types: Vec<&str> = a["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap())
        .collect();
    assert!(types.len() > 1, "a mix of types: {types:?}");
    // The prediction (sum of group costs) is within a factor of 3 of the measurement.
    for l in a["languages"].as_array().unwrap() {
        let (p, m) = (
            l["predicted"].as_f64().unwrap(),
            l["measured"].as_f64().unwrap(),
        );
        assert!(p < 3.0 * m && m < 3.0 * p, "{l}");
    }
    // By default auto quantizes with the calibration it weighed the errors by, and the file
    // says so as llama-quantize's keys do (no file name: the matrix was made in memory).
    assert_eq!(a["quantized_with_imatrix"], true);
    let ck = Checkpoint::open(d.join("auto.gguf")).unwrap();
    let meta = &ck.metadata;
    assert_eq!(
        meta["quantize.imatrix.dataset"],
        ferry_io::MetaValue::String("embedded:udhr-train".into())
    );
    assert_eq!(
        meta["quantize.imatrix.languages"],
        ferry_io::MetaValue::Array(
            LANGS
                .split(',')
                .map(|l| ferry_io::MetaValue::String(l.into()))
                .collect()
        )
    );
    assert!(!meta.contains_key("quantize.imatrix.file"));
    // The file holds exactly the chosen types.
    for t in a["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let got = ck.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(got.dtype.name(), t["dtype"].as_str().unwrap(), "{name}");
    }
    if let Some(py) = ferry_testkit::python_with("gguf") {
        let script = "import sys\nfrom gguf import GGUFReader\nr = GGUFReader(sys.argv[1])\nprint(len(r.tensors), len({t.tensor_type.name for t in r.tensors}))";
        let out = ferry_testkit::run_python(&py, script, &[&d.join("auto.gguf")]);
        let n: Vec<usize> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(n[0], ck.tensors.len());
        assert!(n[1] > 2, "gguf-py sees {} types", n[1]);
    }
}

#[test]
fn a_budget_gives_the_file_verified_on_held_out_probes() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ferry(
        &[
            "convert",
            s(&model),
            "b.gguf",
            "--quant",
            "auto",
            "--budget",
            "cos>=0.995",
            "--auto-languages",
            LANGS,
            "--json",
        ],
        d,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &v["auto"];
    assert_eq!(
        plan["ok"], true,
        "measured within the budget on the calibration text"
    );
    assert!(worst(plan) <= 0.005 + 1e-12);
    // Smaller than q8_0 everywhere (8.5 bits).
    assert!(plan["bpw"].as_f64().unwrap() < 8.5, "{}", plan["bpw"]);
    // The held-out verdict decides the exit status.
    let held_out = v["verify"]["result"]["ok"].as_bool().unwrap();
    assert_eq!(out.status.success(), held_out, "{}", v["verify"]["result"]);
    assert_eq!(out.status.code(), Some(if held_out { 0 } else { 1 }));
    assert_eq!(
        v["verify"]["result"]["languages"].as_array().unwrap().len(),
        3
    );

    // Out of reach with the candidates given: an error that says so and writes nothing.
    let out = ferry(
        &[
            "convert",
            s(&model),
            "c.gguf",
            "--quant",
            "auto",
            "--budget",
            "cos>=0.99999999",
            "--auto-types",
            "q4_0",
            "--auto-languages",
            LANGS,
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out of reach"), "{err}");
    assert!(!d.join("c.gguf").exists());
}

#[test]
fn auto_options_out_of_place_are_refused() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, want) in [
        (
            vec!["x.gguf", "--quant", "q4_0", "--budget", "q4"],
            "go with --quant auto",
        ),
        (
            vec!["x.safetensors", "--quant", "auto", "--budget", "q4"],
            "writes GGUF",
        ),
        (vec!["x.gguf", "--quant", "auto"], "needs a goal"),
        (
            vec![
                "x.gguf",
                "--quant",
                "auto",
                "--target-size",
                "1MB",
                "--target-bpw",
                "4",
            ],
            "give one size",
        ),
        (
            vec![
                "x.gguf",
                "--quant",
                "auto",
                "--budget",
                "q4",
                "--quant-rule",
                "q8_0:attn",
            ],
            "leave out --quant-rule",
        ),
        (
            vec!["x.gguf", "--quant", "q4_0", "--auto-no-imatrix"],
            "go with --quant auto",
        ),
        (
            vec![
                "x.gguf",
                "--quant",
                "auto",
                "--budget",
                "q4",
                "--auto-no-imatrix",
                "--imatrix",
                "m.gguf",
            ],
            "contradict",
        ),
    ] {
        let mut all = vec!["convert", s(&model)];
        all.extend(args);
        let out = ferry(&all, d);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{all:?}: {err}");
    }
    // Too small for the cheapest candidates.
    let out = ferry(
        &[
            "convert",
            s(&model),
            "x.gguf",
            "--quant",
            "auto",
            "--target-size",
            "1MB",
            "--auto-languages",
            "en",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cheapest candidates"), "{err}");
    assert!(!d.join("x.gguf").exists());
}
