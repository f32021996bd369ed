//! `ferry eval --translations`: chrF, chrF++ and BLEU per language of system outputs against
//! references (Moses-style folders), judged by sacreBLEU itself on the same files.

mod support;

use ferry_testkit::{python_with, repo_root, run_python};
use support::{ferry, json};

const SACREBLEU: &str = r#"
import json, sys, sacrebleu
out = {}
for lang in sys.argv[3].split(","):
    hyp = open(f"{sys.argv[1]}/test.{lang}", encoding="utf-8").read().split("\n")[:-1]
    ref = open(f"{sys.argv[2]}/test.{lang}", encoding="utf-8").read().split("\n")[:-1]
    out[lang] = {
        "chrf": sacrebleu.corpus_chrf(hyp, [ref]).score,
        "chrf_pp": sacrebleu.corpus_chrf(hyp, [ref], word_order=2).score,
        "bleu": sacrebleu.corpus_bleu(hyp, [ref]).score,
    }
print(json.dumps(out))
"#;

#[test]
fn translation_scores_per_language_match_sacrebleu() {
    let tmp = tempfile::tempdir().unwrap();
    let refs = repo_root().join("corpora/udhr/parallel");
    let hyp = tmp.path().join("hyp");
    std::fs::create_dir_all(&hyp).unwrap();
    // fr: the references themselves; de: every fourth word dropped; ru: one line left empty
    // (an empty output scores, it is not dropped).
    std::fs::copy(refs.join("test.fr"), hyp.join("test.fr")).unwrap();
    let de: String = std::fs::read_to_string(refs.join("test.de"))
        .unwrap()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l
                .split(' ')
                .enumerate()
                .filter(|(i, _)| i % 4 != 3)
                .map(|x| x.1)
                .collect();
            w.join(" ") + "\n"
        })
        .collect();
    std::fs::write(hyp.join("test.de"), de).unwrap();
    let ru = std::fs::read_to_string(refs.join("test.ru")).unwrap();
    let mut ru: Vec<&str> = ru.lines().collect();
    ru[1] = "";
    std::fs::write(hyp.join("test.ru"), ru.join("\n") + "\n").unwrap();

    let (h, r) = (hyp.to_str().unwrap(), refs.to_str().unwrap());
    let args = ["eval", "--translations", h, "--references", r, "--json"];
    let got = json(&ferry(&args, tmp.path()));
    let fr = &got["languages"]["fr"];
    for m in ["chrf", "chrf_pp", "bleu"] {
        assert!(
            (fr[m].as_f64().unwrap() - 100.0).abs() < 1e-9,
            "fr {m}: {fr}"
        );
    }
    assert_eq!(got["worst"], "de");
    assert_eq!(got["languages"]["ru"]["segments"], ru.len());

    if let Some(py) = python_with("sacrebleu") {
        let langs = std::path::Path::new("de,fr,ru");
        let want: serde_json::Value =
            serde_json::from_str(&run_python(&py, SACREBLEU, &[&hyp, &refs, langs])).unwrap();
        for lang in ["de", "fr", "ru"] {
            for m in ["chrf", "chrf_pp", "bleu"] {
                let (g, w) = (
                    got["languages"][lang][m].as_f64().unwrap(),
                    want[lang][m].as_f64().unwrap(),
                );
                assert!((g - w).abs() < 1e-9, "{lang} {m}: ferry {g}, sacreBLEU {w}");
            }
        }
    }

    // Misaligned files are an error naming both.
    std::fs::write(hyp.join("test.nl"), "Alle mensen\n").unwrap();
    let out = ferry(
        &["eval", "--translations", h, "--references", r],
        tmp.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("test.nl") && err.contains("line-aligned"),
        "{err}"
    );
}
