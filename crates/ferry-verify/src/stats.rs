//! The statistics a verification reports, computed in f64.
//!
//! Decoders: llama.cpp's `llama-perplexity --kl-divergence` set (`tools/perplexity/
//! perplexity.cpp`): KL divergence of the migrated model's next-token distribution from the
//! original's over the full vocabulary, with its uncertainty and percentiles, same top-1,
//! RMS of Δp (the change in the probability of the true next token), perplexity of each and
//! the mean ln(PPL ratio). Encoders: cosine of pooled embeddings, max abs error of the last
//! hidden state, nearest-neighbour agreement. Classifiers: agreement of the predicted class,
//! KL divergence of the class distributions, accuracy before and after where the true class is
//! known. Layers: SQNR.

use serde::{Deserialize, Serialize};

/// What one position contributes (decoders).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenStat {
    /// KL(P_original || P_migrated), nats.
    pub kld: f64,
    /// Whether both models rank the same token first.
    pub same_top1: bool,
    /// For positions with a true next token: its log-probability under (original, migrated).
    pub next: Option<(f64, f64)>,
}

/// Log-softmax of one row of logits, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The statistics of one position from both models' logits and the true next token, if any.
pub fn token_stat(original: &[f32], migrated: &[f32], next: Option<u32>) -> TokenStat {
    let (lp, lq) = (log_softmax(original), log_softmax(migrated));
    let kld = lp
        .iter()
        .zip(&lq)
        // A token the original gives probability 0 adds nothing; NaN propagates.
        .map(|(&p, &q)| {
            if p == f64::NEG_INFINITY {
                0.0
            } else {
                p.exp() * (p - q)
            }
        })
        .sum::<f64>();
    // Rounding can take an all-but-zero divergence below zero; a NaN (a model that outputs
    // NaN) must stay NaN so the language fails.
    let kld = if kld.is_nan() { kld } else { kld.max(0.0) };
    TokenStat {
        kld,
        same_top1: argmax(original) == argmax(migrated),
        next: next.map(|t| (lp[t as usize], lq[t as usize])),
    }
}

/// Percentiles of the per-token KL divergence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99th.
    pub p99: f64,
    /// 95th.
    pub p95: f64,
    /// 90th.
    pub p90: f64,
    /// Median.
    pub median: f64,
}

/// A decoder's statistics over a set of positions (one language, or all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecoderStats {
    /// Positions compared.
    pub tokens: usize,
    /// Mean KL divergence, nats.
    pub kld_mean: f64,
    /// Its standard error (standard deviation / sqrt(n)), as llama-perplexity prints `±`.
    pub kld_stderr: f64,
    /// KL divergence percentiles.
    pub kld: Percentiles,
    /// Largest per-token KL divergence.
    pub kld_max: f64,
    /// Share of positions where both models rank the same token first, 0..1.
    pub same_top1: f64,
    /// Root mean square of Δp = p_migrated(true next) - p_original(true next).
    pub rms_dp: f64,
    /// Perplexity of the original on the true next tokens.
    pub ppl_original: f64,
    /// Perplexity of the migrated model.
    pub ppl_migrated: f64,
    /// Mean ln(PPL_migrated / PPL_original) (the mean log-probability change of the truth).
    pub ln_ppl_ratio: f64,
}

/// What one text contributes (classifiers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassStat {
    /// KL(P_original || P_migrated) over the classes, nats.
    pub kld: f64,
    /// Whether both models predict the same class.
    pub same: bool,
    /// For a text whose true class is known: whether (original, migrated) predict it.
    pub correct: Option<(bool, bool)>,
}

/// The statistics of one text from both models' class logits and its true class, if known.
pub fn class_stat(original: &[f32], migrated: &[f32], label: Option<usize>) -> ClassStat {
    let t = token_stat(original, migrated, None);
    let (a, b) = (argmax(original), argmax(migrated));
    ClassStat {
        kld: t.kld,
        same: t.same_top1,
        correct: label.map(|l| (a == l, b == l)),
    }
}

/// A classifier's statistics over a set of texts (one language, or all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassifierStats {
    /// Texts compared.
    pub texts: usize,
    /// Share of texts both models put in the same class, 0..1.
    pub agreement: f64,
    /// Mean KL divergence of the class distributions, nats.
    pub kld_mean: f64,
    /// Largest per-text KL divergence.
    pub kld_max: f64,
    /// Texts whose true class is known (for a language identifier, every probe in a language
    /// it was trained on).
    pub labelled: usize,
    /// Accuracy of the original on the labelled texts.
    pub accuracy_original: Option<f64>,
    /// Accuracy of the migrated model on them.
    pub accuracy_migrated: Option<f64>,
}

impl ClassifierStats {
    /// Summarizes per-text statistics (NaN propagates into the mean and the maximum).
    pub fn from_texts(stats: &[ClassStat]) -> ClassifierStats {
        let n = stats.len().max(1) as f64;
        let labelled: Vec<(bool, bool)> = stats.iter().filter_map(|s| s.correct).collect();
        let acc = |f: fn(&(bool, bool)) -> bool| {
            (!labelled.is_empty())
                .then(|| labelled.iter().filter(|c| f(c)).count() as f64 / labelled.len() as f64)
        };
        ClassifierStats {
            texts: stats.len(),
            agreement: stats.iter().filter(|s| s.same).count() as f64 / n,
            kld_mean: stats.iter().map(|s| s.kld).sum::<f64>() / n,
            kld_max: -min_or_nan(stats.iter().map(|s| -s.kld), 0.0),
            labelled: labelled.len(),
            accuracy_original: acc(|c| c.0),
            accuracy_migrated: acc(|c| c.1),
        }
    }
}

/// Linear-interpolated percentile of sorted values (numpy's default), `q` in 0..1.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl DecoderStats {
    /// Summarizes per-position statistics.
    pub fn from_tokens(stats: &[TokenStat]) -> DecoderStats {
        let n = stats.len();
        if n == 0 {
            return DecoderStats::default();
        }
        let mut kl: Vec<f64> = stats.iter().map(|s| s.kld).collect();
        let mean = kl.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            kl.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        kl.sort_by(f64::total_cmp);
        let next: Vec<(f64, f64)> = stats.iter().filter_map(|s| s.next).collect();
        let m = next.len().max(1) as f64;
        let nll_p = -next.iter().map(|(p, _)| p).sum::<f64>() / m;
        let nll_q = -next.iter().map(|(_, q)| q).sum::<f64>() / m;
        let dp2 = next
            .iter()
            .map(|(p, q)| (q.exp() - p.exp()).powi(2))
            .sum::<f64>()
            / m;
        DecoderStats {
            tokens: n,
            kld_mean: mean,
            kld_stderr: (var / n as f64).sqrt(),
            kld: Percentiles {
                p99_9: percentile(&kl, 0.999),
                p99: percentile(&kl, 0.99),
                p95: percentile(&kl, 0.95),
                p90: percentile(&kl, 0.90),
                median: percentile(&kl, 0.5),
            },
            kld_max: kl[n - 1],
            same_top1: stats.iter().filter(|s| s.same_top1).count() as f64 / n as f64,
            rms_dp: dp2.sqrt(),
            ppl_original: nll_p.exp(),
            ppl_migrated: nll_q.exp(),
            ln_ppl_ratio: nll_q - nll_p,
        }
    }
}

/// An encoder's statistics over a set of texts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EncoderStats {
    /// Texts compared.
    pub texts: usize,
    /// Mean cosine of the pooled embeddings.
    pub cosine_mean: f64,
    /// Smallest cosine.
    pub cosine_min: f64,
    /// Largest absolute difference of any last-hidden-state element.
    pub max_abs: f64,
    /// Share of texts whose nearest neighbour (by cosine, among all probe texts) is the same
    /// under both models, 0..1 (filled over the whole probe set).
    pub neighbour_agreement: Option<f64>,
}

/// Cosine of two vectors, in f64 (1 when both are zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
}

/// The index of each embedding's nearest other embedding by cosine.
pub fn nearest_neighbours(embeddings: &[Vec<f32>]) -> Vec<Option<usize>> {
    (0..embeddings.len())
        .map(|i| {
            (0..embeddings.len())
                .filter(|&j| j != i)
                .map(|j| (j, cosine(&embeddings[i], &embeddings[j])))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(j, _)| j)
        })
        .collect()
}

/// Signal-to-quantization-noise ratio in dB from the summed squares of the reference
/// (`signal`) and of the difference (`noise`): 20 log10(‖x‖ / ‖x − y‖), onnxruntime's
/// `qdq_loss_debug`. `None` when the two are identical (no noise).
pub fn sqnr_db(signal: f64, noise: f64) -> Option<f64> {
    (noise != 0.0).then(|| 10.0 * (signal / noise).log10())
}

/// The smallest value, NaN if any is NaN (`f64::min` would skip it); `empty` for none.
pub fn min_or_nan(values: impl IntoIterator<Item = f64>, empty: f64) -> f64 {
    values.into_iter().fold(empty, |m, v| {
        if v.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.min(v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kld_of_equal_logits_is_zero_and_positive_otherwise() {
        let a = [1.0f32, 2.0, 3.0, -1.0];
        let s = token_stat(&a, &a, Some(2));
        assert_eq!(s.kld, 0.0);
        assert!(s.same_top1);
        let b = [1.0f32, 3.5, 3.0, -1.0];
        let t = token_stat(&a, &b, Some(2));
        // By hand: p = softmax(a), q = softmax(b), sum p ln(p/q).
        let (p, q) = (log_softmax(&a), log_softmax(&b));
        let want: f64 = p.iter().zip(&q).map(|(x, y)| x.exp() * (x - y)).sum();
        assert!((t.kld - want).abs() < 1e-12 && t.kld > 0.0);
        assert!(!t.same_top1);
        assert_eq!(t.next, Some((p[2], q[2])));
    }

    #[test]
    fn summary_matches_numpy_style_percentiles_and_perplexity() {
        let toks: Vec<TokenStat> = (0..5)
            .map(|i| TokenStat {
                kld: i as f64,
                same_top1: i % 2 == 0,
                next: Some(((-1.0f64), (-1.0 - i as f64 * 0.1))),
            })
            .collect();
        let s = DecoderStats::from_tokens(&toks);
        assert_eq!(s.tokens, 5);
        assert!((s.kld_mean - 2.0).abs() < 1e-12);
        assert!((s.kld.median - 2.0).abs() < 1e-12);
        assert!((s.kld.p90 - 3.6).abs() < 1e-12);
        assert!((s.same_top1 - 0.6).abs() < 1e-12);
        assert!((s.ppl_original - 1f64.exp()).abs() < 1e-12);
        assert!((s.ln_ppl_ratio - 0.2).abs() < 1e-12);
        // sample std of 0..4 is sqrt(2.5)
        assert!((s.kld_stderr - (2.5f64 / 5.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn sqnr_and_cosine() {
        let x = [3.0f32, 4.0];
        assert_eq!(sqnr_db(25.0, 0.0), None);
        // y = [3, 4.5]: ‖x‖ = 5, ‖x − y‖ = 0.5.
        let db = sqnr_db(25.0, 0.25).unwrap();
        assert!((db - 20.0 * (5.0f64 / 0.5).log10()).abs() < 1e-9);
        assert!(min_or_nan([0.9, f64::NAN, 0.5], 1.0).is_nan());
        assert_eq!(min_or_nan([0.9, 0.5], 1.0), 0.5);
        assert!(token_stat(&[f32::NAN, 1.0], &[0.0, 1.0], None).kld.is_nan());
        assert!((cosine(&x, &x) - 1.0).abs() < 1e-12);
        let nn = nearest_neighbours(&[vec![1.0, 0.0], vec![0.9, 0.1], vec![0.0, 1.0]]);
        assert_eq!(nn, vec![Some(1), Some(0), Some(1)]);
    }

    #[test]
    fn classifier_summary_counts_agreement_and_accuracy_by_hand() {
        // Three texts over 3 classes: the first agrees and both are right; the second flips
        // from right to wrong; the third has no known class.
        let rows = [
            ([3.0f32, 0.0, 0.0], [2.5f32, 0.0, 0.0], Some(0)),
            ([0.0f32, 2.0, 1.9], [0.0f32, 1.9, 2.0], Some(1)),
            ([1.0f32, 0.0, 0.0], [1.0f32, 0.0, 0.0], None),
        ];
        let stats: Vec<ClassStat> = rows.iter().map(|(a, b, l)| class_stat(a, b, *l)).collect();
        assert_eq!(stats[1].correct, Some((true, false)));
        let s = ClassifierStats::from_texts(&stats);
        assert_eq!((s.texts, s.labelled), (3, 2));
        assert!((s.agreement - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.accuracy_original, Some(1.0));
        assert_eq!(s.accuracy_migrated, Some(0.5));
        let want = (stats[0].kld + stats[1].kld) / 3.0;
        assert!((s.kld_mean - want).abs() < 1e-12 && s.kld_max == stats[1].kld.max(stats[0].kld));
        let none = ClassifierStats::from_texts(&[class_stat(&[1.0, 0.0], &[1.0, 0.0], None)]);
        assert_eq!(none.accuracy_original, None);
        let nan = ClassifierStats::from_texts(&[class_stat(&[f32::NAN, 0.0], &[1.0, 0.0], None)]);
        assert!(nan.kld_mean.is_nan() && nan.kld_max.is_nan());
    }
}
