//! `ferry verify` and `ferry run` on the real models, as a user runs them: per-language
//! verdicts, the exit status naming the worst language, replay by SHA-256, next-token
//! candidates.

mod support;

use std::path::Path;

use support::{ferry, json, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn verify_judges_each_language_names_the_worst_and_replays() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    ok(&ferry(
        &[
            "migrate",
            s(&model),
            "--to",
            "gguf",
            "--quant",
            "q8_0",
            "--out",
            "q",
            "--no-verify-outputs",
            "-q",
        ],
        dir.path(),
    ));
    let gguf = dir.path().join("q/model.gguf");
    let langs = "en,de,zh,ar";
    let r = json(&ferry(
        &[
            "verify",
            s(&model),
            s(&gguf),
            "--languages",
            langs,
            "--limit",
            "2",
            "--out",
            "rep",
            "--json",
        ],
        dir.path(),
    ));
    let res = &r["result"];
    assert_eq!(res["kind"], "encoder");
    assert_eq!(res["ok"], true, "{res}");
    let per_lang = res["languages"].as_array().unwrap();
    assert_eq!(per_lang.len(), 4);
    for l in per_lang {
        let c = l["encoder"]["cosine_min"].as_f64().unwrap();
        assert!(c > 0.995 && c < 1.0, "{l}");
        assert_eq!(l["texts"], 2);
    }
    for f in ["report.json", "report.md", "report.svg"] {
        assert!(dir.path().join("rep").join(f).is_file(), "{f}");
    }
    // A tolerance the file cannot meet: exit 1, naming the worst language and the statistic.
    let strict = ferry(
        &[
            "verify",
            s(&model),
            s(&gguf),
            "--languages",
            langs,
            "--tolerance",
            "exact",
            "-q",
        ],
        dir.path(),
    );
    assert_eq!(strict.status.code(), Some(1));
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(
        err.contains("worst:") && err.contains("min cosine"),
        "{err}"
    );
    // Replay: same inputs, same result.
    let replay = ok(&ferry(
        &["verify", "--replay", "rep/report.json"],
        dir.path(),
    ));
    assert!(replay.contains("matches"), "{replay}");
    // A changed model is named, not silently re-verified.
    std::fs::copy(model.join("config.json"), dir.path().join("q/model.gguf")).unwrap();
    let changed = ferry(&["verify", "--replay", "rep/report.json"], dir.path());
    assert_eq!(changed.status.code(), Some(2));
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(
        err.contains("model.gguf") && err.contains("content changed"),
        "{err}"
    );
}

#[test]
fn migrate_to_gguf_verifies_outputs_in_every_language() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let r = json(&ferry(
        &[
            "migrate",
            s(&model),
            "--to",
            "gguf",
            "--quant",
            "q8_0",
            "--out",
            "q",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(r["ok"], true);
    let check = &r["outputs_check"]["report"]["result"];
    assert_eq!(check["budget"]["name"], "q8", "the preset q8_0 implies");
    assert_eq!(check["languages"].as_array().unwrap().len(), 47);
    let md = std::fs::read_to_string(dir.path().join("q/report.md")).unwrap();
    assert!(
        md.contains("## Outputs, per language") && md.contains("| zh |"),
        "{md}"
    );
    // llama.cpp's names, not Hugging Face's, and no pooler or position_ids.
    let names: Vec<&str> = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"blk.0.attn_q.weight") && names.contains(&"token_embd.weight"));
    assert!(!names
        .iter()
        .any(|n| n.contains("pooler") || n.contains("position_ids")));
    assert_eq!(names.len(), 101, "llama.cpp's BERT tensor count");
}

#[test]
fn migrate_says_why_outputs_were_not_verified_for_other_models() {
    let dir = tempfile::tempdir().unwrap();
    let pth = ferry_testkit::fixture("default/model.pth");
    let r = json(&ferry(
        &["migrate", s(&pth), "--out", "o", "--json"],
        dir.path(),
    ));
    let why = r["outputs_check"]["skipped"].as_str().unwrap();
    assert!(
        why.contains("the original cannot be run") && why.contains("config.json"),
        "{why}"
    );
}

#[test]
fn verify_judges_a_classifier_trained_by_ferry_per_language_and_replays() {
    let demo = ferry_testkit::fixture("langid-demo");
    let dir = tempfile::tempdir().unwrap();
    ok(&ferry(
        &[
            "migrate",
            s(&demo),
            "--to",
            "gguf",
            "--quant",
            "q4_0",
            "--out",
            "q4",
            "--no-verify-outputs",
            "-q",
        ],
        dir.path(),
    ));
    let q4 = dir.path().join("q4");
    let r = json(&ferry(
        &[
            "verify",
            s(&demo),
            s(&q4),
            "--tolerance",
            "q4",
            "--out",
            "rep",
            "--json",
        ],
        dir.path(),
    ));
    let res = &r["result"];
    assert_eq!(res["kind"], "classifier");
    assert_eq!(res["ok"], true, "{res}");
    let langs = res["languages"].as_array().unwrap();
    assert_eq!(
        langs.len(),
        47,
        "every probe text of every language by default"
    );
    for l in langs {
        let c = &l["classifier"];
        assert_eq!(c["texts"], 7, "{l}");
        assert!(
            c["kld_mean"].as_f64().unwrap() > 0.0,
            "q4_0 changes something: {l}"
        );
        assert!(c["accuracy_original"].as_f64().is_some(), "{l}");
    }
    // The original's accuracy is the model's own on the test articles (cut to 64 tokens).
    let acc = res["overall"]["classifier"]["accuracy_original"]
        .as_f64()
        .unwrap();
    assert!(acc > 0.95, "{acc}");
    let md = std::fs::read_to_string(dir.path().join("rep/report.md")).unwrap();
    assert!(
        md.contains("| same class |") && md.contains("| nb |"),
        "{md}"
    );
    // A budget the migration cannot meet: exit 1, naming the worst language and the bound.
    let strict = ferry(
        &["verify", s(&demo), s(&q4), "--tolerance", "kld<=1e-7", "-q"],
        dir.path(),
    );
    assert_eq!(strict.status.code(), Some(1));
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(err.contains("worst:") && err.contains("mean KLD"), "{err}");
    // Replay recomputes the same numbers from the same files.
    let rep = ok(&ferry(
        &["verify", "--replay", s(&dir.path().join("rep/report.json"))],
        dir.path(),
    ));
    assert!(rep.contains("matches"), "{rep}");
    // A folder whose weights are not the migrated model's fails to load as one: say so.
    std::fs::remove_file(q4.join("model.gguf")).unwrap();
    let gone = ferry(&["verify", s(&demo), s(&q4), "-q"], dir.path());
    assert_eq!(gone.status.code(), Some(2));
}

#[test]
fn run_names_the_classes_a_ferry_classifier_predicts() {
    let demo = ferry_testkit::fixture("langid-demo");
    let dir = tempfile::tempdir().unwrap();
    let r = json(&ferry(
        &[
            "run",
            s(&demo),
            "--text",
            "Bonjour tout le monde, comment allez-vous",
            "--text",
            "Guten Morgen, wie geht es Ihnen heute",
            "--top-k",
            "2",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(r["architecture"], "classifier trained by ferry");
    let top = r["top_k"].as_array().unwrap();
    assert_eq!(top[0][0]["token"], "fr", "{r}");
    assert_eq!(top[1][0]["token"], "de", "{r}");
    assert_eq!(top[0].as_array().unwrap().len(), 2);
}

#[test]
fn run_prints_next_token_candidates_of_a_real_decoder() {
    let Some(model) = ferry_testkit::smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let r = json(&ferry(
        &[
            "run",
            s(&model),
            "--text",
            "The capital of France is",
            "--top-k",
            "3",
            "--output",
            "o.npz",
            "--taps",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(r["top_k"][0][0]["token"], " Paris", "{}", r["top_k"]);
    let outs: Vec<&str> = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    // input_ids, logits, and 32 hidden states (embedding, 30 blocks, final norm).
    assert_eq!(outs.len(), 2 + 32, "{outs:?}");
    assert!(dir.path().join("o.npz").is_file());
    let unknown = ferry(
        &["run", s(&model.join("config.json")), "--text", "x"],
        dir.path(),
    );
    assert_eq!(unknown.status.code(), Some(2));
}

/// A model against itself: every statistic exact, per-layer SQNR "identical" (no finite
/// number), and the report still replays.
#[test]
fn an_exact_decoder_verification_passes_and_replays() {
    let Some(model) = ferry_testkit::smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let r = json(&ferry(
        &[
            "verify",
            s(&model),
            s(&model),
            "--languages",
            "en,ja",
            "--max-tokens",
            "16",
            "--tolerance",
            "exact",
            "--out",
            "rep",
            "--json",
        ],
        dir.path(),
    ));
    let res = &r["result"];
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["overall"]["decoder"]["kld_mean"], 0.0);
    assert!(res["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["sqnr_db"].is_null()));
    let replay = ok(&ferry(
        &["verify", "--replay", "rep/report.json"],
        dir.path(),
    ));
    assert!(replay.contains("matches"), "{replay}");
    let none = ferry(
        &[
            "verify",
            s(&model),
            s(&model),
            "--languages",
            "en",
            "--max-tokens",
            "0",
        ],
        dir.path(),
    );
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no token was compared"));
}
