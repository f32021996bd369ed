//! Running a classifier over examples: predictions, mean loss, and the per-language report
//! with the zero-shot split (languages not seen in training).

use std::collections::BTreeMap;

use candle_core::Device;
use ferry_data::batch::{collate, BatchConfig, BatchSize, Example, PadSide};
use ferry_data::issues::IssueLog;
use serde::{Deserialize, Serialize};

use crate::data::Examples;
use crate::metrics::classification::{report, ClassificationReport, Prediction};
use crate::models::Classifier;
use crate::Result;

/// An evaluation's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross entropy over examples with a known class.
    pub loss: f64,
    /// Scores overall and per language.
    pub report: ClassificationReport,
    /// Examples whose class the model does not know (counted as errors).
    pub unknown_class: usize,
    /// Languages seen in training.
    pub train_languages: Vec<String>,
    /// What reading the evaluation corpus dropped or kept with a warning (serialized as
    /// `ferry data`'s `issues` object; not read back).
    #[serde(skip_deserializing)]
    pub issues: IssueLog,
    /// Selective prediction: how accuracy trades against coverage when predictions below a
    /// confidence are answered "unknown", and top-k accuracy.
    #[serde(default)]
    pub selective: Selective,
    /// Every example's confidence and where its gold class ranked (for thresholds and k
    /// asked for after the fact; not serialized).
    #[serde(skip)]
    pub scored: Vec<Scored>,
}

/// One example's confidence (the top softmax probability) and the rank of its gold class
/// among the model's outputs (0: the top one; `None`: a class the model does not know).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The largest class probability.
    pub confidence: f32,
    /// How many classes scored above the gold one.
    pub gold_rank: Option<u32>,
}

/// One point of the coverage/accuracy curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoveragePoint {
    /// Predictions with a confidence below this are answered "unknown".
    pub threshold: f64,
    /// The share of examples answered.
    pub coverage: f64,
    /// Accuracy over the examples answered (1 when none is).
    pub accuracy: f64,
}

/// Selective-prediction scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selective {
    /// `(k, accuracy)`: the gold class among the k most probable, for k = 1, 3, 5 and any k
    /// asked for ([`Evaluation::with_top_k`]).
    pub top_k: Vec<(usize, f64)>,
    /// The curve over [`CURVE_THRESHOLDS`].
    pub curve: Vec<CoveragePoint>,
    /// The point at the threshold asked for ([`Evaluation::with_reject_below`]).
    pub reject_below: Option<CoveragePoint>,
}

/// The confidence thresholds of the coverage/accuracy curve.
pub const CURVE_THRESHOLDS: [f64; 14] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999,
];

impl Evaluation {
    /// The share of examples whose gold class is among the `k` most probable.
    pub fn top_k_accuracy(&self, k: usize) -> f64 {
        if self.scored.is_empty() {
            return 0.0;
        }
        let hit = self
            .scored
            .iter()
            .filter(|s| s.gold_rank.is_some_and(|r| (r as usize) < k))
            .count();
        hit as f64 / self.scored.len() as f64
    }

    /// Coverage and accuracy when predictions below `threshold` are answered "unknown".
    pub fn at_threshold(&self, threshold: f64) -> CoveragePoint {
        let kept: Vec<&Scored> = self
            .scored
            .iter()
            .filter(|s| s.confidence as f64 >= threshold)
            .collect();
        let right = kept.iter().filter(|s| s.gold_rank == Some(0)).count();
        CoveragePoint {
            threshold,
            coverage: kept.len() as f64 / self.scored.len().max(1) as f64,
            accuracy: if kept.is_empty() {
                1.0
            } else {
                right as f64 / kept.len() as f64
            },
        }
    }

    /// Adds top-`k` accuracy to [`Evaluation::selective`].
    pub fn with_top_k(mut self, k: usize) -> Self {
        if !self.selective.top_k.iter().any(|(kk, _)| *kk == k) {
            let acc = self.top_k_accuracy(k);
            self.selective.top_k.push((k, acc));
            self.selective.top_k.sort_by_key(|(kk, _)| *kk);
        }
        self
    }

    /// Sets [`Selective::reject_below`].
    pub fn with_reject_below(mut self, threshold: f64) -> Self {
        self.selective.reject_below = Some(self.at_threshold(threshold));
        self
    }

    fn with_selective(mut self) -> Self {
        self.selective.curve = CURVE_THRESHOLDS
            .iter()
            .map(|&t| self.at_threshold(t))
            .collect();
        for k in [1, 3, 5] {
            self = self.with_top_k(k);
        }
        self
    }
}

/// Mean scores over a group of languages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupScores {
    /// Languages in the group.
    pub languages: usize,
    /// Mean per-language accuracy.
    pub accuracy: f64,
    /// Mean per-language macro-F1.
    pub macro_f1: f64,
}

impl GroupScores {
    /// The means of per-language `(accuracy, macro-F1)` pairs; `None` for no language.
    fn mean(langs: &[(f64, f64)]) -> Option<GroupScores> {
        let n = langs.len() as f64;
        (!langs.is_empty()).then(|| GroupScores {
            languages: langs.len(),
            accuracy: langs.iter().map(|x| x.0).sum::<f64>() / n,
            macro_f1: langs.iter().map(|x| x.1).sum::<f64>() / n,
        })
    }
}

impl Evaluation {
    /// Mean per-language scores of the languages seen in training and of the others
    /// (zero-shot), when there are any of each.
    pub fn zero_shot_split(&self) -> BTreeMap<&'static str, GroupScores> {
        let mut groups: BTreeMap<&'static str, Vec<(f64, f64)>> = BTreeMap::new();
        for (lang, s) in &self.report.per_language {
            let g = if self.train_languages.contains(lang) {
                "seen"
            } else {
                "zero_shot"
            };
            groups.entry(g).or_default().push((s.accuracy, s.macro_f1));
        }
        groups
            .into_iter()
            .filter_map(|(g, v)| Some((g, GroupScores::mean(&v)?)))
            .collect()
    }
}

/// Zero-shot transfer within one group of languages (a family or a script): the mean scores
/// of its languages seen in training and of the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferGroup {
    /// `"family"` or `"script"`.
    pub by: String,
    /// The family or script (`"other"` for codes [`ferry_data::families`] does not know).
    pub group: String,
    /// The group's languages seen in training.
    pub seen: Option<GroupScores>,
    /// The group's languages not seen in training.
    pub zero_shot: Option<GroupScores>,
}

impl Evaluation {
    /// The zero-shot split within each language family and each script: whether a language
    /// unseen in training does better when a relative, or a language written alike, was seen.
    /// Families first, then scripts, each in name order.
    pub fn transfer_groups(&self) -> Vec<TransferGroup> {
        type Groups = BTreeMap<(&'static str, String), [Vec<(f64, f64)>; 2]>;
        let mut groups: Groups = BTreeMap::new();
        for (lang, s) in &self.report.per_language {
            let info = ferry_data::families::info(lang);
            let slot = usize::from(!self.train_languages.contains(lang));
            for (by, group) in [
                ("family", info.map_or("other", |i| i.family)),
                ("script", info.map_or("other", |i| i.script)),
            ] {
                groups.entry((by, group.to_string())).or_default()[slot]
                    .push((s.accuracy, s.macro_f1));
            }
        }
        groups
            .into_iter()
            .map(|((by, group), [seen, unseen])| TransferGroup {
                by: by.to_string(),
                group,
                seen: GroupScores::mean(&seen),
                zero_shot: GroupScores::mean(&unseen),
            })
            .collect()
    }
}

/// How an evaluation is run and scored.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    /// Languages seen in training (the others are zero-shot).
    pub train_languages: &'a [String],
    /// The classes are the languages (language identification).
    pub classes_are_languages: bool,
    /// The padding id.
    pub pad_id: u32,
    /// Examples per batch.
    pub batch_size: usize,
}

/// Predicts every example of `set` (in length-sorted batches) and scores them.
pub fn evaluate(
    model: &Classifier,
    set: &Examples,
    ctx: &EvalContext<'_>,
    device: &Device,
) -> Result<Evaluation> {
    let (examples, batch_size) = (&set.examples, ctx.batch_size);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    let cfg = BatchConfig {
        size: BatchSize::Examples(batch_size),
        bucket: false,
        shuffle: None,
        pad_id: ctx.pad_id,
        side: PadSide::Right,
        pad_to_multiple_of: None,
    };
    let classes = &model.spec().classes;
    let mut preds = Vec::with_capacity(examples.len());
    let mut scored = Vec::with_capacity(examples.len());
    let (mut loss_sum, mut loss_n) = (0f64, 0usize);
    for chunk in order.chunks(batch_size.max(1)) {
        // Unknown classes are predicted but scored as a class no output can match.
        let rows: Vec<Example> = chunk
            .iter()
            .map(|&i| {
                let mut e = examples[i].clone();
                e.label = Some(e.label.unwrap_or(u32::MAX));
                e
            })
            .collect();
        let refs: Vec<&Example> = rows.iter().collect();
        let batch = collate(&refs, &cfg, device)?;
        let logits = model.forward(&batch.input_ids, Some(&batch.attention_mask))?;
        let lp = ferry_kernels::log_softmax(&logits)?;
        let argmax: Vec<u32> = lp.argmax(1)?.to_vec1()?;
        let lp: Vec<Vec<f32>> = lp.to_vec2()?;
        for (k, e) in rows.iter().enumerate() {
            let gold = e.label.expect("set above");
            let top = lp[k][argmax[k] as usize];
            let gold_rank = (gold != u32::MAX).then(|| {
                let g = lp[k][gold as usize];
                lp[k].iter().filter(|&&x| x > g).count() as u32
            });
            scored.push(Scored {
                confidence: top.exp(),
                gold_rank,
            });
            if gold != u32::MAX {
                loss_sum -= lp[k][gold as usize] as f64;
                loss_n += 1;
            }
            preds.push(Prediction {
                lang: e.lang.clone(),
                gold: gold as usize,
                pred: argmax[k] as usize,
            });
        }
    }
    Ok(Evaluation {
        loss: if loss_n == 0 {
            0.0
        } else {
            loss_sum / loss_n as f64
        },
        report: report(&preds, classes, ctx.classes_are_languages),
        unknown_class: set.unknown_class,
        train_languages: ctx.train_languages.to_vec(),
        issues: set.issues.clone(),
        selective: Selective::default(),
        scored,
    }
    .with_selective())
}
