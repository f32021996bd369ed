//! Running a classifier over examples: predictions, mean loss, and the per-language report
//! with the zero-shot split (languages not seen in training).

use std::collections::BTreeMap;

use candle_core::Device;
use ferry_data::batch::{collate, BatchConfig, BatchSize, Example, PadSide};
use ferry_data::issues::IssueLog;
use serde::{Deserialize, Serialize};

use crate::data::Examples;
use crate::metrics::classification::{report, Prediction, Report};
use crate::models::Model;
use crate::Result;

/// An evaluation's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross entropy over examples with a known class.
    pub loss: f64,
    /// Scores overall and per language.
    pub report: Report,
    /// Examples whose class the model does not know (counted as errors).
    pub unknown_class: usize,
    /// Languages seen in training.
    pub train_languages: Vec<String>,
    /// What reading the evaluation corpus dropped or kept with a warning (serialized as
    /// `ferry data`'s `issues` object; not read back).
    #[serde(skip_deserializing)]
    pub issues: IssueLog,
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
            .map(|(g, v)| {
                let n = v.len() as f64;
                (
                    g,
                    GroupScores {
                        languages: v.len(),
                        accuracy: v.iter().map(|x| x.0).sum::<f64>() / n,
                        macro_f1: v.iter().map(|x| x.1).sum::<f64>() / n,
                    },
                )
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
    model: &Model,
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
    })
}
