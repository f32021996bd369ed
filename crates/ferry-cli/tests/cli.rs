//! End-to-end tests of the `ferry` binary, run as a user would run it.

use std::path::Path;

mod support;

use ferry_testkit::fixture;
use support::{ferry, ferry_env, json, ok};

#[test]
fn migrate_without_arguments_runs_the_embedded_model_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(&["migrate", "--quiet"], dir.path());
    let stdout = ok(&out);
    assert!(stdout.contains("migration verified"), "{stdout}");
    // The per-language verdict is on the terminal: the languages furthest from the original.
    assert!(
        stdout.contains("47 of 47 languages within tolerance q4") && stdout.contains("same class"),
        "{stdout}"
    );
    let out_dir = dir.path().join("ferry-out");
    assert!(
        out_dir.join("model.gguf").is_file(),
        "a q4_k GGUF by default"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    let tensors = report["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 3);
    assert!(tensors.iter().all(|t| t["check"]["ok"] == true));
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "resolve",
            "plan",
            "convert",
            "verify",
            "verify-outputs",
            "task-eval",
            "report"
        ]
    );
    assert_eq!(report["inputs"][0]["path"], "embedded:langid-demo");
    assert_eq!(report["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
    let check = &report["outputs_check"]["report"]["result"];
    assert_eq!(check["kind"], "classifier");
    assert_eq!(check["languages"].as_array().unwrap().len(), 47);
    let agreement = check["overall"]["classifier"]["agreement"]
        .as_f64()
        .unwrap();
    assert!(agreement > 0.95 && agreement <= 1.0, "{agreement}");
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("Verification PASSED"), "{md}");
    assert!(
        md.contains("| same class |") && md.contains("| zh |"),
        "{md}"
    );
    // The written folder is a model ferry runs: card, tokenizer and the q4_k weights.
    let ran = json(&ferry(
        &[
            "run",
            out_dir.to_str().unwrap(),
            "--text",
            "Guten Morgen, wie geht es Ihnen heute",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(ran["format"], "gguf");
    assert_eq!(ran["top_k"][0][0]["token"], "de", "{ran}");
}

#[test]
fn migrate_to_bf16_verifies_within_cast_tolerance_and_json_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(
        &["migrate", "--dtype", "bf16", "--json", "--out", "o"],
        dir.path(),
    );
    let report = json(&out);
    assert_eq!(report["ok"], true);
    let floats: Vec<_> = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["from"] == "f32")
        .collect();
    assert!(!floats.is_empty());
    for t in floats {
        assert_eq!(t["to"], "bf16");
        assert_eq!(t["check"]["bit_exact"], false);
        assert!(t["check"]["max_rel"].as_f64().unwrap() <= 2f64.powi(-8));
    }
}

#[test]
fn migrate_to_f8e4m3_keeps_matching_tensors_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let report = json(&ferry(
        &[
            "migrate",
            "--dtype",
            "f8e4m3",
            "--keep",
            "f32:classifier",
            "--json",
            "--out",
            "o",
        ],
        dir.path(),
    ));
    assert_eq!(report["ok"], true, "{}", report["tensors"]);
    for t in report["tensors"].as_array().unwrap() {
        let kept = t["name"].as_str().unwrap().contains("classifier");
        assert_eq!(t["to"], if kept { "f32" } else { "f8e4m3" }, "{t}");
        assert_eq!(t["check"]["bit_exact"], kept, "{t}");
    }
}

#[test]
fn sharded_migration_verifies_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let report = json(&ferry(
        &["migrate", "--shard-size", "10KB", "--json", "--out", "s"],
        dir.path(),
    ));
    assert_eq!(report["ok"], true, "{}", report["missing"]);
    let outputs: Vec<&str> = report["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert!(
        outputs
            .iter()
            .any(|p| p.ends_with("model.safetensors.index.json")),
        "{outputs:?}"
    );
    assert!(
        outputs.iter().filter(|p| p.contains("-of-")).count() >= 2,
        "{outputs:?}"
    );
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("pytorch/tied.pth");
    let out = ferry(
        &[
            "convert",
            src.to_str().unwrap(),
            "x.safetensors",
            "--dtype",
            "f16",
            "--dry-run",
        ],
        dir.path(),
    );
    let text = ok(&out);
    assert!(text.contains("dry run"), "{text}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let out = ferry(&["migrate", "--dry-run", "--out", "o"], dir.path());
    ok(&out);
    assert!(!dir.path().join("o").exists());
}

#[test]
fn convert_round_trips_every_writer_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("default/model.pth");
    for ext in ["safetensors", "gguf", "npz", "pth"] {
        let out = dir.path().join(format!("m.{ext}"));
        ok(&ferry(
            &[
                "convert",
                src.to_str().unwrap(),
                out.to_str().unwrap(),
                "-q",
            ],
            dir.path(),
        ));
        let d = ferry(
            &[
                "diff",
                src.to_str().unwrap(),
                out.to_str().unwrap(),
                "--json",
            ],
            dir.path(),
        );
        let rep = json(&d);
        assert!(
            rep["only_in_a"].as_array().unwrap().is_empty(),
            "{ext}: {rep}"
        );
        assert!(
            rep["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["bit_exact"] == true),
            "{ext}: {rep}"
        );
    }
}

#[test]
fn diff_reports_differences_with_exit_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("default/model.pth");
    ok(&ferry(
        &[
            "convert",
            src.to_str().unwrap(),
            "h.safetensors",
            "--dtype",
            "f16",
            "-q",
        ],
        dir.path(),
    ));
    let d = ferry(
        &["diff", src.to_str().unwrap(), "h.safetensors"],
        dir.path(),
    );
    assert_eq!(d.status.code(), Some(1));
    let d = ferry(
        &[
            "diff",
            src.to_str().unwrap(),
            "h.safetensors",
            "--rtol",
            "1e-3",
            "--atol",
            "1e-7",
        ],
        dir.path(),
    );
    assert!(ok(&d).contains("equal within tolerance"));
    // --quiet: the exit status alone, nothing printed.
    let q = |args: &[&str]| ferry(args, dir.path());
    let (a, b) = (src.to_str().unwrap(), "h.safetensors");
    let d = q(&["diff", "-q", a, b]);
    assert_eq!((d.status.code(), d.stdout.len()), (Some(1), 0));
    let d = q(&["diff", "-q", a, b, "--rtol", "1e-3", "--atol", "1e-7"]);
    assert_eq!((d.status.code(), d.stdout.len()), (Some(0), 0));
    let i = q(&["inspect", "-q", b]);
    assert_eq!((i.status.code(), i.stdout.len()), (Some(0), 0));
    let bytes = std::fs::read(src.as_path()).unwrap();
    std::fs::write(dir.path().join("cut.pth"), &bytes[..bytes.len() / 2]).unwrap();
    let i = q(&["inspect", "-q", "cut.pth"]);
    assert_eq!((i.status.code(), i.stdout.len()), (Some(2), 0));
    assert!(String::from_utf8_lossy(&i.stderr).contains("cut.pth"));
}

#[test]
fn quantized_gguf_lists_kept_float_tensors_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("default/model.pth");
    let out = ferry(
        &[
            "convert",
            src.to_str().unwrap(),
            "q.gguf",
            "--quant",
            "q8_0",
            "--json",
        ],
        dir.path(),
    );
    let rep = json(&out);
    let plan = rep["plan"]["entries"].as_array().unwrap();
    assert!(
        plan.iter().any(|e| e["action"]["op"] == "quantize"),
        "{rep}"
    );
    assert!(
        plan.iter().any(|e| e["kept_float"].is_string()),
        "1-D tensors stay float: {rep}"
    );
    let errors = rep["quant_errors"].as_object().unwrap();
    assert!(!errors.is_empty());
    for e in errors.values() {
        assert!(e["cosine"].as_f64().unwrap() > 0.999, "{e}");
    }
    let inspect = json(&ferry(&["inspect", "q.gguf", "--json"], dir.path()));
    assert!(inspect["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["dtype"] == "q8_0"));
}

#[test]
fn rename_rules_apply_and_unmatched_rules_warn() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("default/model.pth");
    let out = ferry(
        &[
            "convert",
            src.to_str().unwrap(),
            "r.safetensors",
            "--add-prefix",
            "lid.",
            "--rename",
            "^nothing$=x",
            "-q",
        ],
        dir.path(),
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("matched no tensor name"));
    let inspect = json(&ferry(&["inspect", "r.safetensors", "--json"], dir.path()));
    assert!(inspect["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["name"].as_str().unwrap().starts_with("lid.")));
}

#[test]
fn hostile_pickle_is_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Path::new("/tmp/ferry_pwned");
    let _ = std::fs::remove_file(marker);
    for f in ["pytorch/hostile_os_system.pth", "hostile/os_system.pkl"] {
        let out = ferry(&["inspect", fixture(f).to_str().unwrap()], dir.path());
        assert_eq!(out.status.code(), Some(2), "{f}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("system") && err.contains("refused"),
            "{f}: {err}"
        );
        assert!(
            err.contains(f.rsplit('/').next().unwrap()),
            "error names the file: {err}"
        );
    }
    assert!(!marker.exists(), "the payload ran");
}

#[test]
fn inspect_reports_tied_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = json(&ferry(
        &[
            "inspect",
            fixture("pytorch/tied.pth").to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    ));
    assert!(!out["tied_groups"].as_array().unwrap().is_empty(), "{out}");
}

#[test]
fn missing_file_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(&["inspect", "no/such/model.pth"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/model.pth"));
}

/// Every crate reports a file it cannot read in one shape (ferry-io's `FileError`): the path
/// first, then the reason, each once (the reason used to be repeated as its own source).
#[test]
fn file_errors_name_the_file_and_the_reason_once_in_every_crate() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["inspect", "no/such/model.pth"], "no/such/model.pth"),
        (&["run", "no/such/model.onnx"], "no/such/model.onnx"),
        (
            &["verify", "--replay", "no/such/report.json"],
            "no/such/report.json",
        ),
        (
            &["data", "stats", "no/such/corpus.jsonl"],
            "no/such/corpus.jsonl",
        ),
        (
            &["eval", "--model", "bad-model", "--data", "x.jsonl"],
            "ferry-model.json",
        ),
    ];
    std::fs::create_dir(dir.path().join("bad-model")).unwrap();
    std::fs::write(dir.path().join("bad-model/ferry-model.json"), "{").unwrap();
    for (args, path) in cases {
        let out = ferry(args, dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(
            err.starts_with(&format!("error: {path}")) || err.contains(&format!("/{path}: ")),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.matches(path).count(),
            1,
            "{args:?}: the path once: {err}"
        );
        let reason = err.trim_end().rsplit(": ").next().unwrap();
        assert_eq!(
            err.matches(reason).count(),
            1,
            "{args:?}: the reason once: {err}"
        );
    }
}

#[test]
fn every_fixture_format_migrates_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [
        ("pytorch/all_dtypes.pth", "pytorch-zip"),
        ("pytorch/views.pth", "pytorch-zip"),
        ("pytorch/nested.pth", "pytorch-zip"),
        ("pytorch/proto2.pth", "pytorch-zip"),
        ("pytorch/proto4.pth", "pytorch-zip"),
        ("pytorch/deflated.pth", "pytorch-zip"),
        ("pytorch/legacy.pth", "pytorch-legacy"),
        ("torchscript/mlp.pt", "torchscript"),
        ("safetensors/single.safetensors", "safetensors"),
        ("safetensors/sharded", "safetensors-sharded"),
        ("gguf/tiny.gguf", "gguf"),
        ("gguf/tiny_v2.gguf", "gguf"),
        ("numpy/arrays.npz", "npz"),
        ("numpy/compressed.npz", "npz"),
        ("numpy/fortran.npy", "npy"),
    ];
    for (i, (rel, format)) in inputs.iter().enumerate() {
        for to in ["safetensors", "pth"] {
            let out = format!("o{i}-{to}");
            let report = json(&ferry(
                &[
                    "migrate",
                    fixture(rel).to_str().unwrap(),
                    "--to",
                    to,
                    "--out",
                    &out,
                    "--json",
                ],
                dir.path(),
            ));
            assert_eq!(report["input_format"], *format, "{rel}");
            assert_eq!(report["ok"], true, "{rel} -> {to}: {}", report["tensors"]);
        }
    }
}

#[test]
fn torchscript_parameters_match_the_state_dict_torch_saved() {
    let dir = tempfile::tempdir().unwrap();
    let ts = fixture("torchscript/mlp.pt");
    let reference = fixture("torchscript/mlp_reference.safetensors");
    let d = ferry(
        &["diff", reference.to_str().unwrap(), ts.to_str().unwrap()],
        dir.path(),
    );
    assert!(ok(&d).contains("identical"));
}

#[test]
fn hub_ids_resolve_from_the_local_cache_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    let snap = cache.join("models--acme--lid/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.join("models--acme--lid/refs")).unwrap();
    std::fs::write(cache.join("models--acme--lid/refs/main"), "0123abcd").unwrap();
    let src = fixture("default/model.pth");
    ok(&ferry(
        &[
            "convert",
            src.to_str().unwrap(),
            snap.join("model.safetensors").to_str().unwrap(),
            "-q",
        ],
        dir.path(),
    ));
    std::fs::write(snap.join("config.json"), "{}").unwrap();
    let env = [("HF_HUB_CACHE", cache.as_path())];
    let out = json(&ferry_env(
        &["inspect", "acme/lid", "--json"],
        dir.path(),
        &env,
    ));
    assert_eq!(out["format"], "safetensors");
    assert_eq!(out["companions"].as_array().unwrap().len(), 1);
    // Not cached and not asked to go online: a clear error that says how.
    let out = ferry_env(&["inspect", "acme/other"], dir.path(), &env);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("acme/other") && err.contains("--online"),
        "{err}"
    );
}

#[test]
fn online_download_failure_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    // A closed port on loopback: the download fails at once, and nothing is left in the cache.
    let endpoint = Path::new("http://127.0.0.1:9");
    let env = [("HF_HUB_CACHE", cache.as_path()), ("HF_ENDPOINT", endpoint)];
    let out = ferry_env(&["inspect", "acme/lid", "--online"], dir.path(), &env);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("downloading `acme/lid` from the Hugging Face Hub"),
        "{err}"
    );
}

/// A view that repeats its elements past the tensor budget is refused, naming the tensor and
/// the flag; with `--materialize-views` it is written in full and reads back as torch's own
/// `.contiguous()` of it (the budget lowered to 16 bytes so that `views.pth`'s small
/// `expanded`, [3, 4] from 4 stored elements, is over it).
#[test]
fn materialize_views_writes_what_the_budget_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("pytorch/views.pth");
    let budget = [("FERRY_MAX_TENSOR_BYTES", Path::new("16"))];
    let args = |extra: &'static str| {
        let mut v = vec!["convert", src.to_str().unwrap(), "v.safetensors"];
        if !extra.is_empty() {
            v.push(extra);
        }
        v
    };
    let out = ferry_env(&args(""), dir.path(), &budget);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("views.pth")
            && err.contains("`expanded`")
            && err.contains("--materialize-views"),
        "{err}"
    );
    assert!(!dir.path().join("v.safetensors").exists());
    ok(&ferry_env(
        &args("--materialize-views"),
        dir.path(),
        &budget,
    ));
    let back = ferry_io::Checkpoint::open(dir.path().join("v.safetensors")).unwrap();
    let reference = ferry_io::Checkpoint::open(fixture("pytorch/views.reference.npz")).unwrap();
    assert_eq!(
        &*back.get("expanded").unwrap().data().unwrap(),
        &*reference.get("expanded").unwrap().data().unwrap()
    );
}
