//! `ferry devices` and `ferry place` as a user runs them: the inventory, dry-run plans whose
//! bytes are the checkpoint's tensors plus the stated KV-cache and activation formulas, splits
//! with caps and maps, the errors for a model that does not fit and for a device this build
//! lacks, and a placement verified against the f32 CPU run in every language.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{ferry, json, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The tiny grouped-query Llama (2 blocks, hidden 32, 8 heads over 2 KV heads of 8,
/// feed-forward 64, vocabulary 512, untied head).
fn tiny() -> std::path::PathBuf {
    ferry_testkit::fixture("decoders/llama-gqa")
}

/// Bytes of every float tensor of `dir/model.safetensors` in f32 that `keep` selects.
fn f32_bytes(dir: &Path, keep: impl Fn(&str) -> bool) -> u64 {
    let ck = ferry_io::Checkpoint::open(dir.join("model.safetensors")).unwrap();
    ck.tensors
        .iter()
        .filter(|t| t.dtype.is_float() && keep(&t.name))
        .map(|t| t.numel() * 4)
        .sum()
}

/// `ferry place MODEL --dry-run --json ARGS...`.
fn dry_run(model: &Path, args: &[&str], cwd: &Path) -> Value {
    let mut all = vec!["place", s(model), "--dry-run", "--json"];
    all.extend_from_slice(args);
    json(&ferry(&all, cwd))
}

/// The plan's device `name`.
fn device<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == name)
        .unwrap_or_else(|| panic!("no {name} in {plan}"))
}

/// One f32 block's activation peak in elements (docs: `2BTH + 3BTI + 3BT heads hd +
/// 2B heads T^2`, plus a decoder's `BT^2` mask).
fn block_peak(b: u64, t: u64, h: u64, heads: u64, hd: u64, i: u64, decoder: bool) -> u64 {
    let mask = if decoder { b * t * t } else { 0 };
    2 * b * t * h + 3 * b * t * i + 3 * b * t * heads * hd + 2 * b * heads * t * t + mask
}

/// The same block computing in bf16 with its attention (and mask) in f32, in bytes.
fn block_peak_bf16(b: u64, t: u64, h: u64, heads: u64, hd: u64, i: u64) -> u64 {
    (2 * b * t * h + 3 * b * t * i) * 2
        + (3 * b * t * heads * hd + 2 * b * heads * t * t + b * t * t) * 4
}

#[test]
fn devices_lists_the_cpu_and_the_backends_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let v = json(&ferry(&["devices", "--json"], dir.path()));
    assert!(v["cpu"]["total_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(v["compiled"][0], "cpu");
    assert_eq!(v["compute_dtype"]["cpu"], "f32");
    let text = ok(&ferry(&["devices"], dir.path()));
    assert!(text.starts_with("cpu "), "{text}");
    assert!(text.contains("built with: cpu"), "{text}");
}

/// A CUDA device on a build without the `cuda` feature: `run`, `verify` and `place` name the
/// feature and the build command (exit 2), rather than failing deep inside candle.
#[test]
fn a_gpu_on_a_cpu_only_build_names_the_feature_and_the_build() {
    if cfg!(feature = "cuda") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = tiny();
    for args in [
        vec![
            "run",
            s(&m),
            "--input",
            "input_ids=x.npy",
            "--device",
            "cuda:0",
        ],
        vec!["verify", s(&m), s(&m), "--device", "cuda:0"],
        vec!["place", s(&m), "--devices", "cuda:0,cpu"],
    ] {
        let out = ferry(&args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = stderr(&out);
        assert!(e.contains("`cuda` feature"), "{args:?}: {e}");
        assert!(e.contains("--features cuda"), "{args:?}: {e}");
    }
    // Planned with its memory given, it is a dry run on this machine; loading it is not.
    ok(&ferry(
        &[
            "place",
            s(&m),
            "--devices",
            "cuda:0",
            "--max-memory",
            "cuda:0=1GiB",
            "--context",
            "128",
            "--dry-run",
        ],
        dir.path(),
    ));
    let out = ferry(
        &[
            "place",
            s(&m),
            "--devices",
            "cuda:0",
            "--max-memory",
            "cuda:0=1GiB",
            "--context",
            "128",
        ],
        dir.path(),
    );
    assert!(stderr(&out).contains("--features cuda"), "{}", stderr(&out));
}

/// The tiny decoder's dry run: weights are its tensors in the compute dtype, the KV cache and
/// activations the stated formulas; a capped GPU takes what fits in bf16 and the CPU the rest
/// in f32; a map moves a block; a cap too small says by how much and which context fits.
#[test]
fn dry_run_plans_count_the_tensors_and_the_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny();
    let (b, t) = (2u64, 16u64);
    let plan = |extra: &[&str]| -> Value {
        let mut args = vec![
            "place",
            s(&m),
            "--dry-run",
            "--json",
            "--batch",
            "2",
            "--context",
            "16",
        ];
        args.extend_from_slice(extra);
        json(&ferry(&args, dir.path()))["plan"].clone()
    };
    let p = plan(&["--devices", "cpu"]);
    let cpu = device(&p, "cpu");
    assert_eq!(cpu["dtype"], "f32");
    assert_eq!(
        cpu["weights_bytes"].as_u64().unwrap(),
        f32_bytes(&m, |_| true)
    );
    // 2 blocks x 2 (K and V) x 2 KV heads x 8 x context x batch, f32.
    assert_eq!(cpu["kv_bytes"].as_u64().unwrap(), 2 * 2 * 2 * 8 * t * b * 4);
    // The largest peak: a block's, or the head's (f32 logits over 512 tokens).
    let head = b * t * 32 * 4 + b * t * 512 * 4;
    let block = block_peak(b, t, 32, 8, 8, 64, true) * 4;
    assert_eq!(cpu["activation_bytes"].as_u64().unwrap(), block.max(head));
    assert_eq!(
        p["assignment"].as_array().unwrap().len(),
        4,
        "embed, layers.0, layers.1, head"
    );

    // A GPU this machine lacks, capped so that the embedding and one block fit in bf16.
    let embed_bf16 = 512 * 32 * 2;
    let block_bf16 = f32_bytes(&m, |n| n.starts_with("model.layers.0.")) / 2;
    let cap = embed_bf16 + block_bf16 + 2 * 2 * 8 * t * b * 2 + block_peak_bf16(b, t, 32, 8, 8, 64);
    let cap_arg = format!("cuda:0={cap}");
    let p = plan(&["--devices", "cuda:0,cpu", "--max-memory", &cap_arg]);
    let gpu = device(&p, "cuda:0");
    assert_eq!(gpu["dtype"], "bf16");
    assert_eq!(gpu["units"], serde_json::json!(["embed", "layers.0"]));
    assert_eq!(
        gpu["weights_bytes"].as_u64().unwrap(),
        embed_bf16 + block_bf16
    );
    assert_eq!(gpu["budget_bytes"].as_u64().unwrap(), cap);
    assert_eq!(
        device(&p, "cpu")["units"],
        serde_json::json!(["layers.1", "head"])
    );
    // A map sends block 0 to the CPU; the next units still fill the GPU first.
    let p = plan(&[
        "--devices",
        "cuda:0,cpu",
        "--max-memory",
        &cap_arg,
        "--map",
        r"layers\.0=cpu",
    ]);
    assert_eq!(
        device(&p, "cuda:0")["units"],
        serde_json::json!(["embed", "layers.1"])
    );
    assert_eq!(
        device(&p, "cpu")["units"],
        serde_json::json!(["layers.0", "head"])
    );

    // Too little memory: by how much, and the longest context that fits.
    let out = ferry(
        &[
            "place",
            s(&m),
            "--dry-run",
            "--devices",
            "cpu",
            "--max-memory",
            "cpu=400KiB",
            "--context",
            "128",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("exceeds total capacity by"), "{e}");
    let fits: u64 = e
        .split("it fits at a context of ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no context hint in {e}"));
    let at = |c: u64| {
        ferry(
            &[
                "place",
                s(&m),
                "--dry-run",
                "--devices",
                "cpu",
                "--max-memory",
                "cpu=400KiB",
                "--context",
                &c.to_string(),
            ],
            dir.path(),
        )
        .status
        .success()
    };
    assert!(
        at(fits) && !at(fits + 1),
        "context {fits} is the longest that fits"
    );
}

/// The real models' dry runs: SmolLM2 (tied head: the head holds its own copy of the
/// embedding) and all-MiniLM-L6-v2 (an encoder on one device, its pooler not loaded).
#[test]
fn real_models_dry_run_bytes_are_their_tensors_plus_the_formulas() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(m) = ferry_testkit::smollm2() {
        let args = ["--devices", "cpu", "--context", "256", "--batch", "2"];
        let p = dry_run(&m, &args, dir.path())["plan"].clone();
        let cpu = device(&p, "cpu");
        let embed = 49152 * 576 * 4;
        assert_eq!(
            cpu["weights_bytes"].as_u64().unwrap(),
            f32_bytes(&m, |_| true) + embed
        );
        assert_eq!(
            cpu["kv_bytes"].as_u64().unwrap(),
            30 * 2 * 3 * 64 * 256 * 2 * 4
        );
        let head = 2 * 256 * 576 * 4 + 2 * 256 * 49152 * 4;
        let block = block_peak(2, 256, 576, 9, 64, 1536, true) * 4;
        assert_eq!(cpu["activation_bytes"].as_u64().unwrap(), block.max(head));
    }
    if let Some(m) = ferry_testkit::minilm() {
        let v = dry_run(&m, &["--devices", "cpu", "--context", "128"], dir.path());
        assert_eq!(v["cost"]["splittable"], false);
        let cpu = device(&v["plan"], "cpu");
        assert_eq!(
            cpu["weights_bytes"].as_u64().unwrap(),
            f32_bytes(&m, |n| !n.starts_with("pooler."))
        );
        assert_eq!(cpu["kv_bytes"].as_u64().unwrap(), 0);
        assert_eq!(
            cpu["activation_bytes"].as_u64().unwrap(),
            block_peak(1, 128, 384, 12, 32, 1536, false) * 4
        );
    }
}

/// SmolLM2 with the bf16 policy on the CPU, verified against its f32 run on every embedded
/// language: within the `bf16` preset everywhere, and really computed in bf16 (not equal).
#[test]
fn bf16_on_the_cpu_passes_the_bf16_preset_in_every_language() {
    let Some(m) = ferry_testkit::smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let v = json(&ferry(
        &["place", s(&m), "--dtype", "bf16", "--json", "-q"],
        dir.path(),
    ));
    assert_eq!(device(&v["plan"], "cpu")["dtype"], "bf16");
    let r = &v["verification"]["result"];
    assert_eq!(r["budget"]["name"], "bf16", "{}", r["budget"]);
    let langs = r["languages"].as_array().unwrap();
    assert_eq!(langs.len(), 47);
    for l in langs {
        let kld = l["decoder"]["kld_mean"].as_f64().unwrap();
        assert!(kld > 0.0 && kld <= 0.005, "{}: {kld}", l["lang"]);
    }
    assert_eq!(r["ok"], true);
}

/// An ONNX export's nodes are placed by the block their names carry.
#[test]
fn an_onnx_graph_is_placed_by_its_blocks() {
    let Some(m) = ferry_testkit::minilm() else {
        return;
    };
    let onnx = m.join("model.onnx");
    if !onnx.is_file() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v = json(&ferry(
        &["place", s(&onnx), "--dry-run", "--json"],
        dir.path(),
    ));
    let units: Vec<&str> = v["cost"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(units.first(), Some(&"embed"), "{units:?}");
    assert!(units.contains(&"layers.5"), "{units:?}");
    let bytes: u64 = v["plan"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["weights_bytes"].as_u64().unwrap())
        .sum();
    // The export's initializers: the model's floats (as stored) and a few shape constants.
    let floats = f32_bytes(&m, |n| !n.starts_with("pooler."));
    assert!(
        bytes >= floats && bytes < floats + (1 << 20),
        "{bytes} vs {floats}"
    );
}

/// A ferry classifier computes in f32 on any device: placed, it is verified (identical on the
/// CPU), and a compute dtype is refused by name; a small ONNX graph is placed by its blocks.
#[test]
fn classifiers_and_graphs_keep_their_own_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let demo = ferry_testkit::fixture("langid-demo");
    let v = json(&ferry(
        &["place", s(&demo), "--languages", "en,de", "--json", "-q"],
        dir.path(),
    ));
    assert_eq!(v["cost"]["dtype"], "f32");
    assert_eq!(v["verification"]["result"]["ok"], true);
    let out = ferry(&["place", s(&demo), "--dtype", "bf16"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("computes in f32"), "{}", stderr(&out));
    let g = ferry_testkit::fixture("graph/encoder.onnx");
    let v = json(&ferry(&["place", s(&g), "--dry-run", "--json"], dir.path()));
    let units: Vec<&str> = v["plan"]["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[0].as_str().unwrap())
        .collect();
    assert_eq!(units, ["embed", "layers.0", "layers.1", "head"]);
}
