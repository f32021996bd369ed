//! The calibration sample: the token budget met exactly, every language's share by alpha,
//! sequences within the limit, the same sample from the same seed (tokenized here by the demo
//! model's tokenizer; no model runs).

use ferry_runtime::Tokenizer;
use ferry_verify::calibrate::{sample, texts, CalibrateOptions};

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&ferry_testkit::fixture("langid-demo/tokenizer.json")).unwrap()
}

#[test]
fn the_sample_meets_the_budget_in_every_language_by_alpha() {
    let tok = tokenizer();
    let (_, all) = texts(None, &[]).unwrap();
    let opts = CalibrateOptions {
        tokens: 3000,
        max_seq: 40,
        ..CalibrateOptions::default()
    };
    let a = sample(&all, &tok, &opts).unwrap();
    assert_eq!(a.tokens(), 3000);
    assert_eq!(a.languages.len(), 47);
    assert!(a
        .sequences
        .iter()
        .all(|(_, s)| !s.is_empty() && s.len() <= 40));
    for l in &a.languages {
        let want = l.probability * 3000.0;
        assert!(
            (l.tokens as f64 - want).abs() <= 1.0,
            "{}: {} for {want}",
            l.lang,
            l.tokens
        );
        let ran: u64 = a
            .sequences
            .iter()
            .filter(|(i, _)| a.languages[*i].lang == l.lang)
            .map(|(_, s)| s.len() as u64)
            .sum();
        assert_eq!(ran, l.tokens, "{}", l.lang);
    }
    // Deterministic; another seed draws other texts.
    let again = sample(&all, &tok, &opts).unwrap();
    assert_eq!(again.sequences, a.sequences);
    let other = sample(
        &all,
        &tok,
        &CalibrateOptions {
            seed: 7,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(other.sequences, a.sequences);
    assert_eq!(other.tokens(), 3000);

    // alpha 0: every language alike; alpha 1 with a skewed corpus: its own mix.
    let uniform = sample(
        &all,
        &tok,
        &CalibrateOptions {
            alpha: 0.0,
            ..opts.clone()
        },
    )
    .unwrap();
    let (lo, hi) = uniform.languages.iter().fold((u64::MAX, 0), |(lo, hi), l| {
        (lo.min(l.tokens), hi.max(l.tokens))
    });
    assert!(hi - lo <= 1, "{lo}..{hi}");
    let (_, two) = texts(None, &["de".into(), "zh".into()]).unwrap();
    let mut skewed: Vec<_> = two.iter().filter(|p| p.lang == "de").cloned().collect();
    skewed.extend(two.iter().filter(|p| p.lang == "zh").take(4).cloned());
    let natural = sample(
        &skewed,
        &tok,
        &CalibrateOptions {
            alpha: 1.0,
            ..opts.clone()
        },
    )
    .unwrap();
    let share = |s: &ferry_verify::calibrate::Sample, lang: &str| {
        s.languages.iter().find(|l| l.lang == lang).unwrap().tokens
    };
    assert!(share(&natural, "de") > 5 * share(&natural, "zh"));
    let smoothed = sample(&skewed, &tok, &opts).unwrap();
    assert!(share(&smoothed, "zh") > 2 * share(&natural, "zh"));
    // A budget larger than the texts repeats them rather than stopping short.
    let big = sample(
        &skewed,
        &tok,
        &CalibrateOptions {
            tokens: 20_000,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(big.tokens(), 20_000);
}
