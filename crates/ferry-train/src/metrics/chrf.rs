//! chrF and chrF++ (Popović 2015, 2017), bit-for-bit with sacreBLEU 2.6.0's `CHRF` defaults.
//!
//! What is reproduced from sacreBLEU (`sacrebleu/metrics/chrf.py`, `metrics/helpers.py`):
//!
//! - character n-grams of orders 1..=6 over the segment with *all* whitespace removed
//!   (Python's `''.join(line.split())`; "whitespace" is Python's `str.isspace`, which is
//!   Unicode `White_Space` plus U+001C..U+001F), counted over Unicode code points;
//! - for chrF++ (`word_order` 2), word n-grams of orders 1..=word_order over sacreBLEU's
//!   `_remove_punctuation` words: a whitespace-split word longer than one code point that
//!   ends in ASCII punctuation is split into (rest, last char); otherwise one that starts with
//!   ASCII punctuation is split into (first char, rest) — only one side, so `(hi)` gives
//!   `(hi` and `)`;
//! - per order the statistics `[hyp n-grams, ref n-grams, matching n-grams]`, where the
//!   hypothesis count is reported as 0 when the reference has no n-gram of that order;
//! - the default (non-eps) smoothing: precision and recall are averaged over the orders where
//!   both the hypothesis and the reference have n-grams ("effective order"), and the score is
//!   the F-beta (beta 2) of those averages, times 100;
//! - the corpus score is the F-score of the statistics summed over all sentences (not the mean
//!   of sentence scores); a sentence score is the corpus score of a one-sentence corpus.
//!
//! Only one reference per hypothesis is supported; case is kept (sacreBLEU's default).

use std::collections::HashMap;
use std::hash::Hash;

use serde::Serialize;

/// sacreBLEU's default character n-gram order (`CHRF.CHAR_ORDER`).
pub const CHAR_ORDER: usize = 6;

/// sacreBLEU's default word n-gram order for chrF (`CHRF.WORD_ORDER`).
pub const WORD_ORDER: usize = 0;

/// The word n-gram order that makes chrF into chrF++.
pub const CHRF_PP_WORD_ORDER: usize = 2;

/// sacreBLEU's default beta (`CHRF.BETA`): recall weighs twice as much as precision.
pub const BETA: u32 = 2;

/// The `string.punctuation` set sacreBLEU strips from word edges for chrF++.
const PUNCTS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Python's `str.isspace()`: Unicode `White_Space` plus the four ASCII separators
/// U+001C..U+001F (which Python counts as whitespace and Rust does not).
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no argument: runs of whitespace separate, no empty pieces.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

/// Counts for one n-gram order, as sacreBLEU's `CHRF._get_match_statistics` returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NgramCounts {
    /// Hypothesis n-grams (0 when the reference has no n-gram of this order).
    pub hyp: u64,
    /// Reference n-grams.
    pub reference: u64,
    /// Clipped matches: per n-gram, min(hypothesis count, reference count), summed.
    pub matches: u64,
}

/// Sufficient statistics for chrF: one [`NgramCounts`] per character order 1..=`char_order`,
/// then per word order 1..=`word_order`. They add up over sentences for a corpus score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChrfStats {
    /// Character n-gram order (6 for sacreBLEU's chrF and chrF++).
    pub char_order: usize,
    /// Word n-gram order (0 for chrF, 2 for chrF++).
    pub word_order: usize,
    /// `char_order + word_order` entries: character orders first, then word orders.
    pub orders: Vec<NgramCounts>,
}

fn count<K: Hash + Eq>(items: impl Iterator<Item = K>) -> HashMap<K, u64> {
    let mut m = HashMap::new();
    for k in items {
        *m.entry(k).or_insert(0u64) += 1;
    }
    m
}

fn match_counts<K: Hash + Eq>(hyp: &HashMap<K, u64>, reference: &HashMap<K, u64>) -> NgramCounts {
    let mut matches = 0u64;
    let mut hyp_count = 0u64;
    for (ng, &c) in hyp {
        hyp_count += c;
        if let Some(&r) = reference.get(ng) {
            matches += c.min(r);
        }
    }
    NgramCounts {
        // sacreBLEU: "Don't count hits if no reference exists for that n-gram"
        hyp: if reference.is_empty() { 0 } else { hyp_count },
        reference: reference.values().sum(),
        matches,
    }
}

/// Character n-gram counters for orders 1..=`max_order`, whitespace removed.
fn char_ngrams(stripped: &str, max_order: usize) -> Vec<HashMap<&str, u64>> {
    // byte offset of every code point, plus the end
    let bounds: Vec<usize> = stripped
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(stripped.len()))
        .collect();
    let n_chars = bounds.len() - 1;
    (1..=max_order)
        .map(|n| {
            let grams =
                (0..(n_chars + 1).saturating_sub(n)).map(|i| &stripped[bounds[i]..bounds[i + n]]);
            count(grams)
        })
        .collect()
}

/// sacreBLEU's `CHRF._remove_punctuation`: whitespace split, then one ASCII punctuation
/// character is separated from the end of a word or else from its start.
fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut chars = w.chars();
        // a single code point (no last char after the first) stays whole
        let (Some(f), Some(l)) = (chars.next(), chars.next_back()) else {
            out.push(w);
            continue;
        };
        if PUNCTS.contains(l) {
            // ASCII punctuation is one byte
            let cut = w.len() - 1;
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else if PUNCTS.contains(f) {
            out.push(&w[..1]);
            out.push(&w[1..]);
        } else {
            out.push(w);
        }
    }
    out
}

/// Word n-gram counters for orders 1..=`max_order`; an n-gram is the slice of its words
/// (equivalent to sacreBLEU's space-joined string, since words hold no whitespace).
fn word_ngrams<'a, 'b>(words: &'b [&'a str], max_order: usize) -> Vec<HashMap<&'b [&'a str], u64>> {
    (1..=max_order)
        .map(|n| count((0..(words.len() + 1).saturating_sub(n)).map(|i| &words[i..i + n])))
        .collect()
}

impl ChrfStats {
    /// All-zero statistics for the given orders (the identity for [`ChrfStats::add`]).
    pub fn zeros(char_order: usize, word_order: usize) -> Self {
        Self {
            char_order,
            word_order,
            orders: vec![NgramCounts::default(); char_order + word_order],
        }
    }

    /// Statistics of one hypothesis against one reference, with sacreBLEU's character order 6
    /// and the given word order (0: chrF, 2: chrF++).
    pub fn sentence(hyp: &str, reference: &str, word_order: usize) -> Self {
        Self::sentence_with_orders(hyp, reference, CHAR_ORDER, word_order)
    }

    /// Statistics of one hypothesis against one reference with explicit orders.
    pub fn sentence_with_orders(
        hyp: &str,
        reference: &str,
        char_order: usize,
        word_order: usize,
    ) -> Self {
        let hyp_stripped: String = py_split(hyp).collect();
        let ref_stripped: String = py_split(reference).collect();
        let mut orders: Vec<NgramCounts> = char_ngrams(&hyp_stripped, char_order)
            .iter()
            .zip(char_ngrams(&ref_stripped, char_order).iter())
            .map(|(h, r)| match_counts(h, r))
            .collect();
        if word_order > 0 {
            let hyp_words = remove_punctuation(hyp);
            let ref_words = remove_punctuation(reference);
            let h = word_ngrams(&hyp_words, word_order);
            let r = word_ngrams(&ref_words, word_order);
            orders.extend(h.iter().zip(r.iter()).map(|(h, r)| match_counts(h, r)));
        }
        Self {
            char_order,
            word_order,
            orders,
        }
    }

    /// Adds another sentence's statistics (orders beyond the shorter of the two are ignored
    /// in `other`; use statistics with the same orders).
    pub fn add(&mut self, other: &ChrfStats) {
        for (a, b) in self.orders.iter_mut().zip(other.orders.iter()) {
            a.hyp += b.hyp;
            a.reference += b.reference;
            a.matches += b.matches;
        }
    }

    /// The flattened `[hyp, ref, match]` per order, as sacreBLEU's
    /// `CHRF._extract_corpus_statistics` lists them.
    pub fn flat(&self) -> Vec<u64> {
        self.orders
            .iter()
            .flat_map(|o| [o.hyp, o.reference, o.matches])
            .collect()
    }

    /// The chrF score (0..=100) with sacreBLEU's defaults: beta 2, effective-order averaging.
    pub fn score(&self) -> f64 {
        self.score_with(BETA, false)
    }

    /// The score as sacreBLEU's `CHRF._compute_f_score` computes it for `beta` and
    /// `eps_smoothing` (false is sacreBLEU's default; true is chrF++.py/Moses/NLTK's
    /// epsilon smoothing: the mean of per-order F-scores). Never NaN: no orders give 0.
    pub fn score_with(&self, beta: u32, eps_smoothing: bool) -> f64 {
        let eps = 1e-16;
        let factor = f64::from(beta) * f64::from(beta);
        let mut score = 0.0f64;
        let mut effective_order = 0usize;
        let mut avg_prec = 0.0f64;
        let mut avg_rec = 0.0f64;
        for o in &self.orders {
            let prec = if o.hyp > 0 {
                o.matches as f64 / o.hyp as f64
            } else {
                eps
            };
            let rec = if o.reference > 0 {
                o.matches as f64 / o.reference as f64
            } else {
                eps
            };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                eps
            };
            if o.hyp > 0 && o.reference > 0 {
                avg_prec += prec;
                avg_rec += rec;
                effective_order += 1;
            }
        }
        if eps_smoothing {
            if self.orders.is_empty() {
                return 0.0;
            }
            return 100.0 * score / self.orders.len() as f64;
        }
        if effective_order == 0 {
            avg_prec = 0.0;
            avg_rec = 0.0;
        } else {
            avg_prec /= effective_order as f64;
            avg_rec /= effective_order as f64;
        }
        if avg_prec + avg_rec != 0.0 {
            let mut s = (1.0 + factor) * avg_prec * avg_rec;
            let d = (factor * avg_prec) + avg_rec;
            if d == 0.0 {
                return 0.0;
            }
            s /= d;
            100.0 * s
        } else {
            0.0
        }
    }
}

/// Summed statistics of a corpus (pairs beyond the shorter slice are ignored).
pub fn chrf_corpus_stats(hyps: &[&str], refs: &[&str], word_order: usize) -> ChrfStats {
    let mut total = ChrfStats::zeros(CHAR_ORDER, word_order);
    for (h, r) in hyps.iter().zip(refs.iter()) {
        total.add(&ChrfStats::sentence(h, r, word_order));
    }
    total
}

/// Corpus chrF (`word_order` 0) or chrF++ (`word_order` 2), 0..=100, as sacreBLEU's
/// `CHRF(word_order=..).corpus_score(hyps, [refs])`: the F-score of the summed statistics.
/// An empty corpus scores 0.
pub fn chrf_corpus(hyps: &[&str], refs: &[&str], word_order: usize) -> f64 {
    chrf_corpus_stats(hyps, refs, word_order).score()
}

/// Sentence chrF / chrF++, 0..=100, as `sacrebleu.sentence_chrf(hyp, [reference], word_order=..)`.
pub fn chrf_sentence(hyp: &str, reference: &str, word_order: usize) -> f64 {
    ChrfStats::sentence(hyp, reference, word_order).score()
}

/// sacreBLEU's metric name: `chrF2` plus one `+` per word order (`chrF2++` for chrF++).
pub fn chrf_name(word_order: usize) -> String {
    format!("chrF{BETA}{}", "+".repeat(word_order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_chrf_empty_corpus_is_zero() {
        for wo in [0, 2] {
            let s = chrf_corpus(&[], &[], wo);
            assert_eq!(s, 0.0);
            assert_eq!(chrf_sentence("", "", wo), 0.0);
            assert_eq!(chrf_sentence("x y", "", wo), 0.0);
            assert_eq!(chrf_sentence("", "x y", wo), 0.0);
            assert_eq!(chrf_sentence("   \u{a0}\u{1c}", "\t\n", wo), 0.0);
        }
        let z = ChrfStats::zeros(0, 0);
        assert_eq!(z.score(), 0.0);
        assert_eq!(z.score_with(2, true), 0.0);
    }

    #[test]
    fn metrics_chrf_mismatched_lengths_do_not_panic() {
        let s = chrf_corpus(&["a b"], &[], 2);
        assert_eq!(s, 0.0);
        let s = chrf_corpus(&["abc", "zzz"], &["abc"], 0);
        assert_eq!(s, 100.0);
    }

    #[test]
    fn metrics_chrf_matches_sacrebleu_edge_cases() {
        // (hyp, ref, chrF++ stats, chrF++ score, chrF score) from sacrebleu 2.6.0
        let cases: [(&str, &str, [u64; 24], f64, f64); 6] = [
            (
                "(hi) there!",
                "(hi) there !",
                [
                    10, 10, 10, 9, 9, 9, 8, 8, 8, 7, 7, 7, 6, 6, 6, 5, 5, 5, 4, 4, 4, 3, 3, 3,
                ],
                100.0,
                100.0,
            ),
            (
                "a",
                "a",
                [
                    1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0,
                ],
                100.0,
                100.0,
            ),
            ("", "", [0; 24], 0.0, 0.0),
            ("x y", "", [0; 24], 0.0, 0.0),
            (
                "\"quoted\" word.",
                "quoted word",
                [
                    13, 10, 10, 12, 9, 8, 11, 8, 6, 10, 7, 4, 9, 6, 2, 8, 5, 1, 4, 2, 1, 3, 1, 0,
                ],
                48.892459494392256,
                58.073324542420494,
            ),
            (
                "ab",
                "abc",
                [
                    2, 3, 2, 1, 2, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0,
                ],
                42.42424242424242,
                63.636363636363626,
            ),
        ];
        for (h, r, stats, pp, c) in cases {
            assert_eq!(
                ChrfStats::sentence(h, r, 2).flat(),
                stats.to_vec(),
                "{h:?} / {r:?}"
            );
            assert!((chrf_sentence(h, r, 2) - pp).abs() < 1e-9, "{h:?}");
            assert!((chrf_sentence(h, r, 0) - c).abs() < 1e-9, "{h:?}");
        }
    }

    #[test]
    fn metrics_chrf_punctuation_and_whitespace() {
        assert_eq!(
            remove_punctuation("(hi) \"x\" !a a! ,"),
            vec!["(hi", ")", "\"x", "\"", "!", "a", "a", "!", ","]
        );
        // Python's isspace includes U+001C..U+001F and NBSP
        assert_eq!(
            py_split("a\u{1c}b\u{a0}c\u{2003} d").collect::<Vec<_>>(),
            vec!["a", "b", "c", "d"]
        );
        assert_eq!(chrf_name(0), "chrF2");
        assert_eq!(chrf_name(2), "chrF2++");
    }
}
