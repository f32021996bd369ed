//! `ferry train`, `ferry eval` and `ferry migrate` on a trained model, as a user runs them.

use std::path::Path;
use std::process::Output;

use ferry_testkit::repo_root;

mod support;

fn ferry(args: &[&str]) -> Output {
    support::ferry(args, &repo_root())
}

fn ok(args: &[&str]) -> String {
    support::ok(&ferry(args))
}

/// The BPE identifier config, shortened: the same data, tokenizer and model, fewer steps.
fn config(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("configs/langid-udhr-bpe.toml"))
        .unwrap()
        .replace("steps = 1500", "steps = 200")
        .replace("eval_every = 250", "eval_every = 50")
        .replace("vocab_size = 8000", "vocab_size = 2000");
    let p = dir.join("run.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn train_eval_resume_and_migrate_a_language_identifier() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let cfg_s = cfg.to_str().unwrap();

    let plan = ok(&[
        "train",
        "--config",
        cfg_s,
        "--out",
        a.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert!(plan.contains("\"dry_run\":true") && !a.exists(), "{plan}");

    let out = ok(&[
        "train",
        "--config",
        cfg_s,
        "--out",
        a.to_str().unwrap(),
        "--json",
    ]);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "finished");
    let test_acc = last["evaluations"][0]["accuracy"].as_f64().unwrap();
    assert!(test_acc > 0.9, "held-out article accuracy {test_acc}");
    assert!(out.lines().any(|l| l.contains("\"event\":\"eval\"")));
    for f in [
        "report.md",
        "report.json",
        "accuracy.svg",
        "loss.svg",
        "metrics.jsonl",
        "best/model.safetensors",
        "last/ferry-model.json",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }

    // Interrupted after step 120 (newest checkpoint: 100), then resumed: the same run.
    support::train_interrupted_then_resumed(&cfg, &b, 120, &repo_root());
    let metrics = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics(&a),
        metrics(&b),
        "a resumed run logs different metrics"
    );
    assert_eq!(
        std::fs::read(a.join("last/model.safetensors")).unwrap(),
        std::fs::read(b.join("last/model.safetensors")).unwrap()
    );

    let best = a.join("best");
    let json = ok(&[
        "eval",
        "--model",
        best.to_str().unwrap(),
        "--data",
        "corpora/udhr/test.tsv",
        "--snippet-words",
        "4",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[1]["name"], "4-word snippets");
    let per_lang = v[0]["evaluation"]["report"]["per_language"]
        .as_object()
        .unwrap();
    assert_eq!(per_lang.len(), 47);
    let md = ok(&[
        "eval",
        "--model",
        best.to_str().unwrap(),
        "--data",
        "corpora/udhr/test.tsv",
    ]);
    assert!(
        md.contains("## Per language") && md.contains("| zh |"),
        "{md}"
    );

    let mig = tmp.path().join("q8");
    let out = ok(&[
        "migrate",
        best.to_str().unwrap(),
        "--to",
        "gguf",
        "--quant",
        "q8_0",
        "--out",
        mig.to_str().unwrap(),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["ok"], true);
    // verify-outputs runs the migrated folder as a classifier, on the embedded UDHR probes.
    let check = &r["outputs_check"]["report"]["result"];
    assert_eq!(check["kind"], "classifier", "{}", r["outputs_check"]);
    assert_eq!(check["ok"], true);
    assert_eq!(check["languages"].as_array().unwrap().len(), 47);
    let all = &check["overall"]["classifier"];
    assert!(all["agreement"].as_f64().unwrap() > 0.97, "{all}");
    assert!(
        all["labelled"].as_u64().unwrap() > 300,
        "every probe's language is a class"
    );
    let t = &r["task_eval"];
    assert_eq!(t["per_language"].as_object().unwrap().len(), 47);
    let (before, after) = (
        t["accuracy_before"].as_f64().unwrap(),
        t["accuracy_after"].as_f64().unwrap(),
    );
    assert!(
        (before - test_acc).abs() < 1e-9,
        "the task check evaluates the test set: {before} vs {test_acc}"
    );
    assert!(
        (before - after).abs() < 0.02,
        "q8_0 changed accuracy {before} -> {after}"
    );
    // The migrated folder is a model folder too.
    let md = ok(&[
        "eval",
        "--model",
        mig.to_str().unwrap(),
        "--data",
        "corpora/udhr/dev.tsv",
    ]);
    assert!(md.contains("| en |"));
}

#[test]
fn bad_configs_name_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.toml");
    std::fs::write(&p, "[data]\ntrain = \"x.tsv\"\n[tokenizer]\n[model]\nkind = \"bag\"\ndim = 8\n[optimizer]\nkind = \"adamw\"\nlr = 0.1\n[train]\nsteps = 1\nbatch_size = 2\n[output]\ndir = \"o\"\n").unwrap();
    let o = ferry(&["train", "--config", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("bad.toml")
            && err.contains("[tokenizer] needs `path`, `train` or `char_ngrams`"),
        "{err}"
    );
    std::fs::write(&p, "[data]\ntrain = 3\n").unwrap();
    let err = String::from_utf8_lossy(&ferry(&["train", "--config", p.to_str().unwrap()]).stderr)
        .to_string();
    assert!(err.contains("bad.toml") && err.contains("train"), "{err}");
    let err = String::from_utf8_lossy(
        &ferry(&[
            "eval",
            "--model",
            tmp.path().to_str().unwrap(),
            "--data",
            "x",
        ])
        .stderr,
    )
    .to_string();
    assert!(err.contains("not a ferry model folder"), "{err}");
}

/// A UDHR-style corpus from the repo's English, French and Greek training articles, under the
/// UDHR's own codes (`eng`, `fra` and `ell_monotonic`, which is not a language code), plus two
/// records no label can save: an empty text and a 65-byte label.
fn udhr_style_corpus(dir: &Path) -> (std::path::PathBuf, usize) {
    let src = std::fs::read_to_string(repo_root().join("corpora/udhr/train.tsv")).unwrap();
    let mut out = String::from("lang\ttext\n");
    let mut greek = 0;
    for line in src.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let code = match cols[0] {
            "el" => "ell_monotonic",
            "en" => "eng",
            "fr" => "fra",
            _ => continue,
        };
        greek += usize::from(code == "ell_monotonic");
        out += &format!("{code}\t{}\n", cols[2]);
    }
    out += "eng\t\n";
    out += &format!("{}\tA label too long to name a language.\n", "x".repeat(65));
    let p = dir.join("udhr-style.tsv");
    std::fs::write(&p, out).unwrap();
    (p, greek)
}

/// A small run on `data` (train and test), strict about language codes or not.
fn udhr_style_config(dir: &Path, data: &Path, strict: bool) -> std::path::PathBuf {
    let data = data.to_str().unwrap();
    // The default (not strict) is left unsaid.
    let strict_line = if strict {
        "strict_language_codes = true\n"
    } else {
        ""
    };
    let text = format!(
        "[data]\ntrain = \"{data}\"\ntest = \"{data}\"\n{strict_line}\
         [tokenizer]\ntrain = {{ kind = \"bpe\", vocab_size = 400 }}\n\
         [model]\nkind = \"bag\"\ndim = 16\n\
         [optimizer]\nkind = \"adamw\"\nlr = 0.05\n\
         [train]\nsteps = 20\nbatch_size = 16\nseed = 1\n\
         [output]\ndir = \"{}\"\n",
        dir.join(if strict { "strict" } else { "lenient" })
            .display()
    );
    let p = dir.join(format!("strict-{strict}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn classes(model: &Path) -> serde_json::Value {
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("ferry-model.json")).unwrap())
            .unwrap();
    card["spec"]["classes"].clone()
}

#[test]
fn a_udhr_style_corpus_trains_on_every_label_and_says_what_it_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, greek) = udhr_style_corpus(tmp.path());
    let data_s = data.to_str().unwrap();
    let dropped = format!("{data_s}: dropped 2 records: 1 empty_text, 1 invalid_lang\n");

    // By default every label is a class: Greek is trained on, and the run says what it
    // dropped (for the training file and the test file) and what it only warned about.
    let cfg = udhr_style_config(tmp.path(), &data, false);
    let o = ferry(&["train", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches(&dropped).count(), 2, "{err}");
    assert!(
        err.contains(&format!(
            "kept {greek} records with warnings: {greek} unknown_lang\n"
        )),
        "{err}"
    );
    let lenient = tmp.path().join("lenient/last");
    assert_eq!(
        classes(&lenient),
        serde_json::json!(["ell_monotonic", "eng", "fra"])
    );

    // `ferry eval` reads its data the same way and says so; its JSON has the counts.
    let o = ferry(&[
        "eval",
        "--model",
        lenient.to_str().unwrap(),
        "--data",
        data_s,
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.starts_with(&dropped), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = &v[0]["evaluation"];
    assert_eq!(e["issues"]["dropped"], 2);
    assert_eq!(e["issues"]["warnings"], greek);
    assert_eq!(e["report"]["per_language"]["ell_monotonic"]["n"], greek);
    let o = ferry(&[
        "eval",
        "--model",
        lenient.to_str().unwrap(),
        "--data",
        data_s,
        "--strict-languages",
        "--quiet",
        "--json",
    ]);
    assert!(o.status.success() && o.stderr.is_empty());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["evaluation"]["issues"]["dropped"], 2 + greek);
    assert!(v[0]["evaluation"]["report"]["per_language"]
        .get("ell_monotonic")
        .is_none());

    // Strict: Greek is dropped, counted by reason in the run's JSON and its report.
    let cfg = udhr_style_config(tmp.path(), &data, true);
    let out = ok(&["train", "--config", cfg.to_str().unwrap(), "--json"]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let read = events.iter().find(|e| e["event"] == "read").unwrap();
    assert_eq!(read["file"], data_s);
    assert_eq!(read["issues"]["dropped"], 2 + greek);
    assert_eq!(read["issues"]["by_kind"]["unknown_lang"]["count"], greek);
    let finished = events.last().unwrap();
    assert_eq!(
        finished["evaluations"][0]["issues"]["by_kind"]["unknown_lang"]["count"],
        greek
    );
    let strict = tmp.path().join("strict");
    assert_eq!(
        classes(&strict.join("last")),
        serde_json::json!(["eng", "fra"])
    );
    let md = std::fs::read_to_string(strict.join("report.md")).unwrap();
    assert!(
        md.contains(&format!(
            "test: reading the data dropped {} records: 1 empty_text, {greek} unknown_lang, 1 invalid_lang",
            2 + greek
        )),
        "{md}"
    );
}

/// `[train] device`: a name that is not a device is a config error naming the file; a CUDA
/// device on a build without CUDA names the feature and the build command; the CPU trains.
#[test]
fn the_training_device_is_checked_and_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let with_device = |d: &str| {
        let text = std::fs::read_to_string(config(tmp.path()))
            .unwrap()
            .replacen("[train]\n", &format!("[train]\ndevice = \"{d}\"\n"), 1);
        let p = tmp.path().join(format!("{}.toml", d.replace(':', "-")));
        std::fs::write(&p, text).unwrap();
        p
    };
    let p = with_device("tpu:0");
    let o = ferry(&["train", "--config", p.to_str().unwrap(), "--dry-run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tpu-0.toml") && err.contains("[train] device `tpu:0`"),
        "{err}"
    );
    let p = with_device("cpu");
    ok(&["train", "--config", p.to_str().unwrap(), "--dry-run"]);
    if !cfg!(feature = "cuda") {
        let p = with_device("cuda:0");
        let out = tmp.path().join("never");
        let o = ferry(&[
            "train",
            "--config",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("--features cuda"), "{err}");
        assert!(!out.exists(), "nothing is written before the device opens");
    }
}
