//! Accuracy, macro-F1 and confusion counts, overall and per language.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// The input's language.
    pub lang: String,
    /// The gold class (index into the class list).
    pub gold: usize,
    /// The predicted class.
    pub pred: usize,
}

/// Scores over a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Examples.
    pub n: usize,
    /// Correct predictions / examples.
    pub accuracy: f64,
    /// Mean F1 over the classes that occur as gold or prediction (scikit-learn's macro
    /// average with `labels` = that union).
    pub macro_f1: f64,
    /// (gold, predicted, count) for every non-zero cell of the confusion matrix.
    pub confusion: Vec<(String, String, usize)>,
}

/// Scores overall and per language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// All predictions together.
    pub overall: Scores,
    /// Per language, sorted by language.
    pub per_language: BTreeMap<String, Scores>,
}

/// Scores `preds` whose class ids index `classes`.
pub fn score(preds: &[&Prediction], classes: &[String]) -> Scores {
    let mut cells: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for p in preds {
        *cells.entry((p.gold, p.pred)).or_default() += 1;
    }
    let n = preds.len();
    let correct: usize = cells
        .iter()
        .filter(|((g, p), _)| g == p)
        .map(|(_, c)| c)
        .sum();
    let mut seen: Vec<usize> = cells.keys().flat_map(|&(g, p)| [g, p]).collect();
    seen.sort_unstable();
    seen.dedup();
    let f1s: Vec<f64> = seen
        .iter()
        .map(|&c| {
            let tp = *cells.get(&(c, c)).unwrap_or(&0) as f64;
            let gold: usize = cells
                .iter()
                .filter(|((g, _), _)| *g == c)
                .map(|(_, n)| n)
                .sum();
            let pred: usize = cells
                .iter()
                .filter(|((_, p), _)| *p == c)
                .map(|(_, n)| n)
                .sum();
            if gold + pred == 0 {
                0.0
            } else {
                2.0 * tp / (gold + pred) as f64
            }
        })
        .collect();
    let name = |i: usize| {
        classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| "<unknown class>".to_string())
    };
    Scores {
        n,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        macro_f1: if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        },
        confusion: cells
            .into_iter()
            .map(|((g, p), c)| (name(g), name(p), c))
            .collect(),
    }
}

/// Scores overall and for each language. When the classes are the languages themselves
/// (language identification), a language's macro-F1 is its class's F1 over all predictions
/// (a false positive can only come from another language's examples); otherwise it is the
/// macro-F1 of that language's examples alone.
pub fn report(
    preds: &[Prediction],
    classes: &[String],
    classes_are_languages: bool,
) -> ClassificationReport {
    let all: Vec<&Prediction> = preds.iter().collect();
    let mut by_lang: BTreeMap<String, Vec<&Prediction>> = BTreeMap::new();
    for p in preds {
        by_lang.entry(p.lang.clone()).or_default().push(p);
    }
    let overall = score(&all, classes);
    let per_language = by_lang
        .into_iter()
        .map(|(l, ps)| {
            let mut s = score(&ps, classes);
            if classes_are_languages {
                s.macro_f1 = class_f1(&overall.confusion, &l);
            }
            (l, s)
        })
        .collect();
    ClassificationReport {
        overall,
        per_language,
    }
}

/// F1 of class `name` from confusion cells.
fn class_f1(cells: &[(String, String, usize)], name: &str) -> f64 {
    let (mut tp, mut gold, mut pred) = (0usize, 0usize, 0usize);
    for (g, p, c) in cells {
        if g == name && p == name {
            tp += c;
        }
        if g == name {
            gold += c;
        }
        if p == name {
            pred += c;
        }
    }
    if gold + pred == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (gold + pred) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lang: &str, gold: usize, pred: usize) -> Prediction {
        Prediction {
            lang: lang.into(),
            gold,
            pred,
        }
    }

    #[test]
    fn macro_f1_matches_scikit_learn_on_a_hand_example() {
        // y_true = [0,0,1,1,2], y_pred = [0,1,1,1,0]:
        // f1(0) = 2*1/(2+2) = 0.5, f1(1) = 2*2/(2+3) = 0.8, f1(2) = 0 -> macro 0.4333...
        let preds = [
            p("en", 0, 0),
            p("en", 0, 1),
            p("de", 1, 1),
            p("de", 1, 1),
            p("de", 2, 0),
        ];
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = report(&preds, &classes, false);
        assert!((r.overall.accuracy - 0.6).abs() < 1e-12);
        assert!(
            (r.overall.macro_f1 - 1.3 / 3.0).abs() < 1e-12,
            "{}",
            r.overall.macro_f1
        );
        assert_eq!(r.per_language["en"].n, 2);
        assert!((r.per_language["de"].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!(r.overall.confusion.contains(&("c".into(), "a".into(), 1)));
        // Classes as languages: "a" (gold 2, predicted 3, 1 right) has F1 2*1/5 = 0.4, "b" (2, 2, 1) 0.5.
        let langid = [
            p("a", 0, 0),
            p("a", 0, 1),
            p("b", 1, 1),
            p("b", 1, 0),
            p("c", 2, 0),
        ];
        let r = report(&langid, &classes, true);
        assert!((r.per_language["a"].macro_f1 - 0.4).abs() < 1e-12);
        assert!((r.per_language["b"].macro_f1 - 0.5).abs() < 1e-12);
        assert_eq!(r.per_language["c"].macro_f1, 0.0);
    }
}
