//! BLEU (Papineni et al. 2002), bit-for-bit with sacreBLEU 2.6.0's `BLEU` defaults.
//!
//! What is reproduced from sacreBLEU (`sacrebleu/metrics/bleu.py`, `metrics/helpers.py`,
//! `tokenizers/tokenizer_13a.py`, `tokenizers/tokenizer_re.py`):
//!
//! - preprocessing: trailing whitespace stripped (`str.rstrip`), then the `13a` tokenizer
//!   (mteval-v13a): remove `<skipped>`, join `-\n` line breaks, `\n` to space, unescape
//!   `&quot;` `&amp;` `&lt;` `&gt;` (in that order, each once), then the four regexes of
//!   `TokenizerRegexp` and a whitespace normalisation — see [`tokenize_13a`];
//! - word n-grams of orders 1..=4, clipped counts against the reference, the closest
//!   reference length (with one reference, its length), statistics summed over sentences;
//! - the brevity penalty `exp(1 - ref_len / sys_len)` when the system is shorter (0 for an
//!   empty system output);
//! - `exp` smoothing (NIST / mteval-v13a "method 3"): the k-th order with no match gets
//!   precision `100 / (2^k * total)`; no match at all gives a score of 0;
//! - corpus BLEU uses all four orders (`effective_order` false); sentence BLEU uses
//!   `effective_order` true like `sacrebleu.sentence_bleu`: orders the hypothesis is too
//!   short to have are left out of the geometric mean.
//!
//! Scores and precisions are percentages (0..=100), as sacreBLEU reports them.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use super::chrf::{is_py_space, py_split};

/// sacreBLEU's default maximum n-gram order (`MAX_NGRAM_ORDER`).
pub const MAX_NGRAM_ORDER: usize = 4;

/// A BLEU score with everything sacreBLEU's `BLEUScore` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScore {
    /// The BLEU score, 0..=100.
    pub score: f64,
    /// Clipped matching n-grams per order 1..=4.
    pub counts: [u64; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams per order 1..=4.
    pub totals: [u64; MAX_NGRAM_ORDER],
    /// Smoothed precisions per order in percent (all 0 when nothing matched; orders past the
    /// first one with no hypothesis n-grams stay 0).
    pub precisions: [f64; MAX_NGRAM_ORDER],
    /// The brevity penalty.
    pub bp: f64,
    /// Total hypothesis length in 13a tokens.
    pub sys_len: u64,
    /// Total reference length in 13a tokens.
    pub ref_len: u64,
}

impl BleuScore {
    /// `sys_len / ref_len`, or 0 when the reference is empty (as sacreBLEU's `ratio`).
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }
}

impl fmt::Display for BleuScore {
    /// sacreBLEU's `str(BLEUScore)`, e.g.
    /// `BLEU = 54.17 81.7/63.3/55.2/48.7 (BP = 0.888 ratio = 0.893 hyp_len = 109 ref_len = 122)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.precisions;
        write!(
            f,
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p[0],
            p[1],
            p[2],
            p[3],
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

/// Sufficient statistics for BLEU; they add up over sentences for a corpus score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BleuStats {
    /// Hypothesis length in tokens.
    pub sys_len: u64,
    /// Reference length in tokens.
    pub ref_len: u64,
    /// Clipped matching n-grams per order.
    pub counts: [u64; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams per order.
    pub totals: [u64; MAX_NGRAM_ORDER],
}

/// Does the first `TokenizerRegexp` rule, `([\{-\~\[-\` -\&\(-\+\:-\@\/])`, match `c`?
/// That is ASCII punctuation and space except `'` `,` `-` `.`.
fn is_13a_punct(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// `re.sub` of a two-character pattern `(A)(B)`: matches are found left to right without
/// overlap, exactly as Python's `re` does for a fixed-width, alternative-free pattern.
fn sub_pairs(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    repl: impl Fn(&mut Vec<char>, char, char),
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        let a = chars[i];
        match chars.get(i + 1) {
            Some(&b) if first(a) && second(b) => {
                repl(&mut out, a, b);
                i += 2;
            }
            _ => {
                out.push(a);
                i += 1;
            }
        }
    }
    out
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_period_comma(c: char) -> bool {
    c == '.' || c == ','
}

/// sacreBLEU's `13a` tokenizer (`Tokenizer13a.__call__`), output tokens joined by one space.
///
/// It does not strip trailing whitespace first; [`preprocess_segment`] does, as sacreBLEU's
/// `BLEU._preprocess_segment` (this matters for a trailing `-\n`).
pub fn tokenize_13a(line: &str) -> String {
    // language-independent part
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    // TokenizerRegexp on f' {line} '
    // (the first rule, a one-character pattern, maps each matching char c to " c ")
    let padded = format!(" {line} ");
    let mut chars: Vec<char> = Vec::with_capacity(padded.len() * 2);
    for c in padded.chars() {
        if is_13a_punct(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    // tokenize period and comma unless preceded by a digit: ([^0-9])([\.,]) -> \1 \2 (space)
    let chars = sub_pairs(
        &chars,
        |a| !is_digit(a),
        is_period_comma,
        |o, a, b| o.extend([a, ' ', b, ' ']),
    );
    // tokenize period and comma unless followed by a digit: ([\.,])([^0-9]) -> (space)\1 \2
    let chars = sub_pairs(
        &chars,
        is_period_comma,
        |b| !is_digit(b),
        |o, a, b| o.extend([' ', a, ' ', b]),
    );
    // tokenize dash when preceded by a digit: ([0-9])(-) -> \1 \2 (space)
    let chars = sub_pairs(
        &chars,
        is_digit,
        |b| b == '-',
        |o, a, b| o.extend([a, ' ', b, ' ']),
    );
    let s: String = chars.into_iter().collect();
    // one space only between words, none at the ends
    py_split(&s).collect::<Vec<_>>().join(" ")
}

/// sacreBLEU's `BLEU._preprocess_segment` with default options: `tokenize_13a(sent.rstrip())`.
pub fn preprocess_segment(sent: &str) -> String {
    tokenize_13a(sent.trim_end_matches(is_py_space))
}

type NgramCounter<'a, 'b> = HashMap<&'b [&'a str], u64>;

/// `extract_all_word_ngrams(line, 1, 4)`: n-gram counts and the number of tokens.
fn word_ngrams<'a, 'b>(tokens: &'b [&'a str]) -> NgramCounter<'a, 'b> {
    let mut m: NgramCounter = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER {
        for i in 0..(tokens.len() + 1).saturating_sub(n) {
            *m.entry(&tokens[i..i + n]).or_insert(0) += 1;
        }
    }
    m
}

impl BleuStats {
    /// Statistics of one hypothesis against one reference (both raw, untokenized text).
    pub fn sentence(hyp: &str, reference: &str) -> Self {
        let hyp_tok = preprocess_segment(hyp);
        let ref_tok = preprocess_segment(reference);
        let hyp_words: Vec<&str> = py_split(&hyp_tok).collect();
        let ref_words: Vec<&str> = py_split(&ref_tok).collect();
        let hyp_ngrams = word_ngrams(&hyp_words);
        let ref_ngrams = word_ngrams(&ref_words);
        let mut counts = [0u64; MAX_NGRAM_ORDER];
        let mut totals = [0u64; MAX_NGRAM_ORDER];
        for (ng, &c) in &hyp_ngrams {
            let n = ng.len() - 1;
            totals[n] += c;
            if let Some(&r) = ref_ngrams.get(ng) {
                counts[n] += c.min(r);
            }
        }
        Self {
            sys_len: hyp_words.len() as u64,
            ref_len: ref_words.len() as u64,
            counts,
            totals,
        }
    }

    /// Adds another sentence's statistics.
    pub fn add(&mut self, other: &BleuStats) {
        self.sys_len += other.sys_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_NGRAM_ORDER {
            self.counts[n] += other.counts[n];
            self.totals[n] += other.totals[n];
        }
    }

    /// The score as sacreBLEU's `BLEU.compute_bleu` with `exp` smoothing and max order 4.
    /// `effective_order`: false for corpus BLEU, true as `sacrebleu.sentence_bleu` uses.
    pub fn score(&self, effective_order: bool) -> BleuScore {
        let (sys_len, ref_len) = (self.sys_len, self.ref_len);
        let mut bp = 1.0f64;
        if sys_len < ref_len {
            bp = if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            };
        }
        let mut precisions = [0.0f64; MAX_NGRAM_ORDER];
        let done = |score: f64, precisions: [f64; MAX_NGRAM_ORDER]| BleuScore {
            score,
            counts: self.counts,
            totals: self.totals,
            precisions,
            bp,
            sys_len,
            ref_len,
        };
        // early stop if there are no matches (sacrebleu #141)
        if self.counts.iter().all(|&c| c == 0) {
            return done(0.0, precisions);
        }
        let mut smooth_mteval = 1.0f64;
        let mut eff_order = MAX_NGRAM_ORDER;
        for n in 1..=MAX_NGRAM_ORDER {
            let (correct, total) = (self.counts[n - 1], self.totals[n - 1]);
            if total == 0 {
                break;
            }
            if effective_order {
                eff_order = n;
            }
            if correct == 0 {
                smooth_mteval *= 2.0;
                precisions[n - 1] = 100.0 / (smooth_mteval * total as f64);
            } else {
                precisions[n - 1] = 100.0 * correct as f64 / total as f64;
            }
        }
        let log_sum = precisions[..eff_order]
            .iter()
            .fold(0.0f64, |acc, &p| acc + my_log(p));
        let score = bp * (log_sum / eff_order as f64).exp();
        done(score, precisions)
    }
}

/// sacreBLEU's `my_log`: the natural log, with log(0) floored to -9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// Summed statistics of a corpus (pairs beyond the shorter slice are ignored).
pub fn bleu_corpus_stats(hyps: &[&str], refs: &[&str]) -> BleuStats {
    let mut total = BleuStats::default();
    for (h, r) in hyps.iter().zip(refs.iter()) {
        total.add(&BleuStats::sentence(h, r));
    }
    total
}

/// Corpus BLEU as `BLEU().corpus_score(hyps, [refs])` (13a, exp smoothing, order 4,
/// `effective_order` false). An empty corpus scores 0 with a brevity penalty of 1.
pub fn bleu_corpus(hyps: &[&str], refs: &[&str]) -> BleuScore {
    bleu_corpus_stats(hyps, refs).score(false)
}

/// Sentence BLEU as `sacrebleu.sentence_bleu(hyp, [reference])` (`effective_order` true).
pub fn bleu_sentence(hyp: &str, reference: &str) -> BleuScore {
    BleuStats::sentence(hyp, reference).score(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_bleu_empty_corpus_is_zero() {
        let s = bleu_corpus(&[], &[]);
        assert_eq!(s.score, 0.0);
        assert_eq!(s.bp, 1.0);
        assert_eq!((s.sys_len, s.ref_len), (0, 0));
        assert_eq!(s.ratio(), 0.0);
        let s = bleu_sentence("", "");
        assert_eq!(s.score, 0.0);
        let s = bleu_sentence("", "a b c");
        assert_eq!((s.score, s.bp), (0.0, 0.0));
        let s = bleu_sentence("a b c", "");
        assert_eq!((s.score, s.bp), (0.0, 1.0));
        assert!(bleu_corpus(&["a"], &[]).score == 0.0);
        assert!(!bleu_sentence("&amp;&&&;;--\n\u{1c}<skipped>", "\u{a0}")
            .score
            .is_nan());
        assert_eq!(
            format!("{}", bleu_corpus(&[], &[])),
            "BLEU = 0.00 0.0/0.0/0.0/0.0 (BP = 1.000 ratio = 0.000 hyp_len = 0 ref_len = 0)"
        );
    }

    #[test]
    fn metrics_bleu_13a_matches_sacrebleu() {
        // (input, Tokenizer13a output, BLEU._preprocess_segment output) from sacrebleu 2.6.0
        let cases = [
            ("a...b", "a . . . b", "a . . . b"),
            ("1.5,2", "1.5,2", "1.5,2"),
            ("x,1 y.z", "x , 1 y . z", "x , 1 y . z"),
            ("3-4 a-b 5--6", "3 - 4 a-b 5 - -6", "3 - 4 a-b 5 - -6"),
            (
                "&amp;quot; &lt;tag&gt; &quot;hi&quot;",
                "& quot ; < tag > \" hi \"",
                "& quot ; < tag > \" hi \"",
            ),
            ("foo<skipped>bar", "foobar", "foobar"),
            ("line-\nbreak\nnext", "linebreak next", "linebreak next"),
            (
                "(hi) [x] {y} ~z~ `q` ^ _ |",
                "( hi ) [ x ] { y } ~ z ~ ` q ` ^ _ |",
                "( hi ) [ x ] { y } ~ z ~ ` q ` ^ _ |",
            ),
            ("end.", "end .", "end ."),
            (".start", ". start", ". start"),
            ("\u{a0}nbsp\u{2003}em\u{1c}fs", "nbsp em fs", "nbsp em fs"),
            (
                "\u{dc}n\u{ef}c\u{f6}d\u{e9}\u{2026} \u{201c}quoted\u{201d}",
                "\u{dc}n\u{ef}c\u{f6}d\u{e9}\u{2026} \u{201c}quoted\u{201d}",
                "\u{dc}n\u{ef}c\u{f6}d\u{e9}\u{2026} \u{201c}quoted\u{201d}",
            ),
            ("a.,b", "a . , b", "a . , b"),
            ("9.,9", "9 . , 9", "9 . , 9"),
            (",,,", ", , ,", ", , ,"),
            ("-1-2-3", "-1 - 2 - 3", "-1 - 2 - 3"),
            ("abc-\n", "abc", "abc-"),
        ];
        for (input, tok, pre) in cases {
            assert_eq!(tokenize_13a(input), tok, "{input:?}");
            assert_eq!(preprocess_segment(input), pre, "{input:?}");
        }
    }

    #[test]
    fn metrics_bleu_identical_and_short() {
        let s = bleu_sentence("a b c d e", "a b c d e");
        assert!((s.score - 100.0).abs() < 1e-9);
        // two tokens: effective order 2 for sentence BLEU, 0 for corpus BLEU (no 3/4-grams)
        let s = bleu_sentence("a b", "a b");
        assert!((s.score - 100.0).abs() < 1e-9);
        assert_eq!(s.totals, [2, 1, 0, 0]);
        let c = bleu_corpus(&["a b"], &["a b"]);
        assert!(c.score < 1e-9);
    }
}
