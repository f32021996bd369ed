//! chrF, chrF++ and BLEU against sacreBLEU 2.6.0's numbers in `fixtures/train/metrics.json`
//! (made by `scripts/make_train_fixtures.py`): corpus scores, per-sentence scores and
//! statistics, and the 13a tokens. Scores to 1e-9, counts and tokens exactly.

use ferry_train::metrics::bleu::{
    bleu_corpus, bleu_corpus_stats, bleu_sentence, preprocess_segment, BleuScore, BleuStats,
};
use ferry_train::metrics::chrf::{
    chrf_corpus, chrf_corpus_stats, chrf_name, chrf_sentence, ChrfStats, CHRF_PP_WORD_ORDER,
};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn load() -> Value {
    let path = ferry_testkit::fixture("train/metrics.json");
    let text = std::fs::read_to_string(&path).expect("read metrics.json");
    serde_json::from_str(&text).expect("parse metrics.json")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("not a count: {x}")))
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= TOL,
        "{what}: got {got:?}, sacrebleu {want:?} (diff {:e})",
        got - want
    );
}

fn check_bleu(got: &BleuScore, want: &Value, what: &str) {
    close(got.score, f(&want["score"]), &format!("{what} score"));
    assert_eq!(got.counts.to_vec(), u64s(&want["counts"]), "{what} counts");
    assert_eq!(got.totals.to_vec(), u64s(&want["totals"]), "{what} totals");
    let precisions = want["precisions"].as_array().expect("precisions");
    assert_eq!(precisions.len(), 4, "{what} precisions");
    for (n, p) in precisions.iter().enumerate() {
        close(
            got.precisions[n],
            f(p),
            &format!("{what} precision {}", n + 1),
        );
    }
    close(got.bp, f(&want["bp"]), &format!("{what} bp"));
    assert_eq!(
        Some(got.sys_len),
        want["sys_len"].as_u64(),
        "{what} sys_len"
    );
    assert_eq!(
        Some(got.ref_len),
        want["ref_len"].as_u64(),
        "{what} ref_len"
    );
}

struct Pairs {
    hyps: Vec<String>,
    refs: Vec<String>,
}

impl Pairs {
    fn of(d: &Value) -> Self {
        let sents = d["sentences"].as_array().expect("sentences");
        let hyps = sents
            .iter()
            .map(|s| s["hyp"].as_str().expect("hyp").to_string())
            .collect();
        let refs = sents
            .iter()
            .map(|s| s["ref"].as_str().expect("ref").to_string())
            .collect();
        Self { hyps, refs }
    }
    fn hyps(&self) -> Vec<&str> {
        self.hyps.iter().map(String::as_str).collect()
    }
    fn refs(&self) -> Vec<&str> {
        self.refs.iter().map(String::as_str).collect()
    }
}

#[test]
fn metrics_corpus_chrf_and_chrf_pp_match_sacrebleu() {
    let d = load();
    let p = Pairs::of(&d);
    let (hyps, refs) = (p.hyps(), p.refs());
    close(
        chrf_corpus(&hyps, &refs, 0),
        f(&d["corpus"]["chrf"]),
        "corpus chrF",
    );
    close(
        chrf_corpus(&hyps, &refs, CHRF_PP_WORD_ORDER),
        f(&d["corpus"]["chrf_pp"]),
        "corpus chrF++",
    );
    assert_eq!(
        Some(chrf_name(0).as_str()),
        d["corpus"]["chrf_name"].as_str()
    );
    assert_eq!(
        Some(chrf_name(2).as_str()),
        d["corpus"]["chrf_pp_name"].as_str()
    );

    // the corpus statistics are the per-sentence ones summed (not a mean of scores)
    let sents = d["sentences"].as_array().expect("sentences");
    for (wo, key) in [(0usize, "chrf_stats"), (2, "chrf_pp_stats")] {
        let mut sum = vec![0u64; 3 * (6 + wo)];
        for s in sents {
            for (a, b) in sum.iter_mut().zip(u64s(&s[key])) {
                *a += b;
            }
        }
        assert_eq!(
            chrf_corpus_stats(&hyps, &refs, wo).flat(),
            sum,
            "summed {key}"
        );
    }
}

#[test]
fn metrics_sentence_chrf_matches_sacrebleu() {
    let d = load();
    let sents = d["sentences"].as_array().expect("sentences");
    assert!(sents.len() >= 2);
    for (i, s) in sents.iter().enumerate() {
        let h = s["hyp"].as_str().expect("hyp");
        let r = s["ref"].as_str().expect("ref");
        let what = format!("sentence {i} ({h:?})");
        assert_eq!(
            ChrfStats::sentence(h, r, 0).flat(),
            u64s(&s["chrf_stats"]),
            "{what} chrF stats"
        );
        assert_eq!(
            ChrfStats::sentence(h, r, 2).flat(),
            u64s(&s["chrf_pp_stats"]),
            "{what} chrF++ stats"
        );
        close(
            chrf_sentence(h, r, 0),
            f(&s["chrf"]),
            &format!("{what} chrF"),
        );
        close(
            chrf_sentence(h, r, 2),
            f(&s["chrf_pp"]),
            &format!("{what} chrF++"),
        );
    }
    // the fixture's last two pairs: the empty hypothesis and the identical pair
    let empty = &sents[sents.len() - 2];
    assert_eq!(empty["hyp"].as_str(), Some(""));
    assert_eq!(
        chrf_sentence("", empty["ref"].as_str().expect("ref"), 0),
        0.0
    );
    assert_eq!(
        chrf_sentence("", empty["ref"].as_str().expect("ref"), 2),
        0.0
    );
    let same = &sents[sents.len() - 1];
    assert_eq!(same["hyp"], same["ref"]);
    let t = same["hyp"].as_str().expect("hyp");
    assert_eq!(chrf_sentence(t, t, 0), 100.0);
    assert_eq!(chrf_sentence(t, t, 2), 100.0);
}

#[test]
fn metrics_corpus_bleu_matches_sacrebleu() {
    let d = load();
    let p = Pairs::of(&d);
    let (hyps, refs) = (p.hyps(), p.refs());
    let got = bleu_corpus(&hyps, &refs);
    check_bleu(&got, &d["corpus"]["bleu"], "corpus BLEU");
    assert_eq!(
        Some(got.to_string().as_str()),
        d["corpus"]["bleu_string"].as_str()
    );

    // corpus statistics are the sentence statistics summed
    let mut sum = BleuStats::default();
    for (h, r) in hyps.iter().zip(refs.iter()) {
        sum.add(&BleuStats::sentence(h, r));
    }
    assert_eq!(bleu_corpus_stats(&hyps, &refs), sum);
}

#[test]
fn metrics_sentence_bleu_and_13a_tokens_match_sacrebleu() {
    let d = load();
    let sents = d["sentences"].as_array().expect("sentences");
    for (i, s) in sents.iter().enumerate() {
        let h = s["hyp"].as_str().expect("hyp");
        let r = s["ref"].as_str().expect("ref");
        let what = format!("sentence {i} ({h:?})");
        let toks = &s["bleu_tokens"];
        let split = |t: String| -> Vec<String> {
            t.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            split(preprocess_segment(h)),
            strs(&toks["hyp"]),
            "{what} hyp tokens"
        );
        assert_eq!(
            split(preprocess_segment(r)),
            strs(&toks["ref"]),
            "{what} ref tokens"
        );
        check_bleu(&bleu_sentence(h, r), &s["bleu"], &format!("{what} BLEU"));
    }
    let empty = &sents[sents.len() - 2];
    let b = bleu_sentence("", empty["ref"].as_str().expect("ref"));
    assert_eq!((b.score, b.bp, b.sys_len), (0.0, 0.0, 0));
    let same = &sents[sents.len() - 1];
    let t = same["hyp"].as_str().expect("hyp");
    close(bleu_sentence(t, t).score, 100.0, "identical pair BLEU");
}
