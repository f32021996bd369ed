//! The task-level check for models trained by ferry: the migrated weights must still
//! classify the evaluation data as the original weights do, language by language.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use ferry_train::eval::Evaluation;
use ferry_train::model_dir::{load_model, LoadedModel};
use ferry_train::run::evaluate_file;
use serde::Serialize;

use crate::Result;

/// Accuracy of one language before and after migration.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageDelta {
    /// Examples.
    pub n: usize,
    /// Accuracy with the original weights.
    pub before: f64,
    /// Accuracy with the migrated weights.
    pub after: f64,
}

/// Per-language accuracy of the original and the migrated model on the evaluation data.
#[derive(Debug, Clone, Serialize)]
pub struct TaskEval {
    /// The evaluation corpus.
    pub data: PathBuf,
    /// Overall accuracy before.
    pub accuracy_before: f64,
    /// Overall accuracy after.
    pub accuracy_after: f64,
    /// Overall macro-F1 before.
    pub macro_f1_before: f64,
    /// Overall macro-F1 after.
    pub macro_f1_after: f64,
    /// Per language.
    pub per_language: BTreeMap<String, LanguageDelta>,
}

impl TaskEval {
    /// Languages whose accuracy changed.
    pub fn changed(&self) -> usize {
        self.per_language
            .values()
            .filter(|d| d.before != d.after)
            .count()
    }
}

fn delta(before: &Evaluation, after: &Evaluation, data: &Path) -> TaskEval {
    let per_language = before
        .report
        .per_language
        .iter()
        .map(|(lang, b)| {
            let a = after
                .report
                .per_language
                .get(lang)
                .map_or(0.0, |s| s.accuracy);
            (
                lang.clone(),
                LanguageDelta {
                    n: b.n,
                    before: b.accuracy,
                    after: a,
                },
            )
        })
        .collect();
    TaskEval {
        data: data.to_path_buf(),
        accuracy_before: before.report.overall.accuracy,
        accuracy_after: after.report.overall.accuracy,
        macro_f1_before: before.report.overall.macro_f1,
        macro_f1_after: after.report.overall.macro_f1,
        per_language,
    }
}

/// The ferry model folder `input` (with its weights) and the same model with `migrated`
/// weights, evaluated on `data` (default: the evaluation file recorded at training, when it is
/// on this machine; `None` when there is none).
pub fn run(input: &Path, migrated: &Path, data: Option<&Path>) -> Result<Option<TaskEval>> {
    let device = Device::Cpu;
    let original: LoadedModel = load_model(input, None, &device).map_err(train_err)?;
    // The file recorded at training may be on another machine (the embedded demo's card
    // records none): then there is nothing to evaluate on; a file given explicitly must exist.
    let Some(data) = data
        .map(Path::to_path_buf)
        .or_else(|| original.card.eval_data.clone().filter(|p| p.is_file()))
    else {
        return Ok(None);
    };
    let converted = load_model(input, Some(migrated), &device).map_err(train_err)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let before = evaluate_file(&original, &data, None, 64, threads, &device).map_err(train_err)?;
    let after = evaluate_file(&converted, &data, None, 64, threads, &device).map_err(train_err)?;
    Ok(Some(delta(&before, &after, &data)))
}

fn train_err(e: ferry_train::Error) -> crate::Error {
    crate::Error::Train(Box::new(e))
}
