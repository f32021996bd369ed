//! Evaluation of a finished run's model on the test set (and its snippets), and the report.

use std::path::Path;

use candle_core::Device;
use ferry_data::tokenize;

use super::{RunDirs, Summary};
use crate::config::{LabelKind, TrainConfig};
use crate::data::{self, ExampleOptions};
use crate::eval::{evaluate, EvalContext, Evaluation};
use crate::model_dir;
use crate::Result;

/// Evaluates a model folder on a corpus file (optionally as snippets), reading it as the
/// training data was read (the card's `strict_language_codes`); the evaluation carries what
/// reading dropped or kept with a warning.
pub fn evaluate_file(
    loaded: &model_dir::LoadedModel,
    path: &Path,
    snippet_words: Option<usize>,
    batch_size: usize,
    threads: usize,
    device: &Device,
) -> Result<Evaluation> {
    let pool = tokenize::thread_pool(threads)?;
    let card = &loaded.card;
    let opts = ExampleOptions {
        label: card.label,
        max_len: card.max_len,
        add_special_tokens: card.add_special_tokens,
        classes: Some(&card.spec.classes),
        strict_languages: card.strict_language_codes,
    };
    let ex = match snippet_words {
        None => data::load(path, &loaded.tokenizer, &pool, &opts)?,
        Some(w) => {
            let (records, issues) = data::read_records(path, &opts)?;
            let snippets = data::snippets(&records, w);
            data::from_records(snippets, issues, path, &loaded.tokenizer, &pool, &opts)?
        }
    };
    let ctx = EvalContext {
        train_languages: &card.train_languages,
        classes_are_languages: card.label == LabelKind::Lang,
        pad_id: loaded.tokenizer.pad_id(),
        batch_size,
    };
    evaluate(&loaded.model, &ex, &ctx, device)
}

/// Evaluates the run's model (best on dev, else last) on `data.test` (and on its snippets
/// when `eval.snippet_words` is set), and writes `report.md`, `report.json`,
/// `accuracy.svg`, `coverage.svg` and `loss.svg` into the run folder. Returns the evaluations
/// by name.
pub fn final_report(
    cfg: &TrainConfig,
    summary: &Summary,
    device: &Device,
) -> Result<Vec<(String, Evaluation)>> {
    let dirs = RunDirs {
        root: summary.dir.clone(),
    };
    if dirs.metrics().is_file() {
        crate::report::write_loss_curve(&dirs.root, &dirs.metrics())?;
    }
    let Some(test) = &cfg.data.test else {
        return Ok(Vec::new());
    };
    let loaded = model_dir::load_model(&summary.model_dir, None, device)?;
    let threads = cfg.train.thread_count();
    let bs = cfg.eval.batch_size.unwrap_or(64);
    let mut evals = vec![(
        "test".to_string(),
        evaluate_file(&loaded, test, None, bs, threads, device)?,
    )];
    if let Some(w) = cfg.eval.snippet_words {
        evals.push((
            format!("test {w}-word snippets"),
            evaluate_file(&loaded, test, Some(w), bs, threads, device)?,
        ));
    }
    let named: Vec<crate::report::Named<'_>> = evals
        .iter()
        .map(|(n, e)| crate::report::Named { name: n, eval: e })
        .collect();
    let title = format!("{} on {}", summary.model_dir.display(), test.display());
    crate::report::write(&dirs.root, &title, &named)?;
    Ok(evals)
}
