//! A whole training run from a [`TrainConfig`]: [`prepare`] (corpus, tokenizer, examples,
//! dev sets), [`start`] (fresh or resumed model and optimizer), [`steps`] (the loop with
//! evaluation, keep-best, early stopping and checkpoints), [`micro`] (data-parallel
//! micro-batches), [`log`] (`metrics.jsonl`) and [`final_report`] (the test report). Exact
//! resume throughout.

mod final_report;
mod log;
mod micro;
mod prepare;
mod start;
mod steps;

use std::path::{Path, PathBuf};

use candle_core::Device;
use ferry_data::issues::IssueLog;
use ferry_data::tokenize::{self, Tokenizer};
use serde::Serialize;

use crate::config::{LabelKind, TrainConfig};
use crate::data::ExampleOptions;
use crate::eval::{EvalContext, Evaluation};
use crate::feed;
use crate::model_dir::{self, ModelCard};
use crate::models::{BagInit, ModelSpec};
use crate::{Error, Result};

pub use final_report::{evaluate_file, final_report};
pub use micro::{micro_batch, LossSpec};

/// How to run (default: a fresh run on the CPU, to the end).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in the output folder.
    pub resume: bool,
    /// The device.
    pub device: Device,
    /// Stop (as if killed) after this optimizer step, having written its checkpoint if one
    /// was due. For tests and for splitting long runs.
    pub stop_after: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            resume: false,
            device: Device::Cpu,
            stop_after: None,
        }
    }
}

/// What happened, for progress bars and logs.
#[derive(Debug)]
pub enum Event<'a> {
    /// Data is being prepared.
    Preparing(&'a str),
    /// A data file (training or dev) was read.
    Read {
        /// The file.
        file: &'a Path,
        /// Records it gave.
        records: usize,
        /// What reading it dropped or kept with a warning.
        issues: &'a IssueLog,
    },
    /// The loop starts at `start` of `total` steps.
    Started {
        /// First step of this invocation.
        start: u64,
        /// All steps.
        total: u64,
        /// Trainable values.
        params: usize,
        /// Training examples.
        examples: usize,
    },
    /// An optimizer step ended.
    Step(&'a StepRecord),
    /// A dev evaluation ended.
    Evaluated(&'a EvalRecord),
    /// A checkpoint was written.
    Checkpoint(&'a Path),
}

/// One optimizer step, as written to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Steps done (1 after the first).
    pub step: u64,
    /// Mean loss of the step's micro-batches.
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Real tokens in the step.
    pub tokens: usize,
    /// Epoch of the sampler.
    pub epoch: u64,
}

/// One dev evaluation, as written to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRecord {
    /// After this step.
    pub step: u64,
    /// Mean loss.
    pub dev_loss: f64,
    /// Overall accuracy.
    pub dev_accuracy: f64,
    /// Overall macro-F1.
    pub dev_macro_f1: f64,
    /// Whether this is the best so far.
    pub best: bool,
}

impl EvalRecord {
    /// The record of evaluation `ev` after `step`.
    fn new(step: u64, ev: &Evaluation, best: bool) -> Self {
        EvalRecord {
            step,
            dev_loss: ev.loss,
            dev_accuracy: ev.report.overall.accuracy,
            dev_macro_f1: ev.report.overall.macro_f1,
            best,
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Summary {
    /// The run folder.
    pub dir: PathBuf,
    /// Steps done.
    pub steps: u64,
    /// Whether early stopping ended it.
    pub stopped_early: bool,
    /// The model folder to use (best on dev, else last).
    pub model_dir: PathBuf,
    /// The loss of every step of this invocation.
    pub losses: Vec<f32>,
}

/// Folders and files of a run.
pub struct RunDirs {
    /// The run folder.
    pub root: PathBuf,
}

impl RunDirs {
    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// The best model on dev.
    pub fn best(&self) -> PathBuf {
        self.root.join("best")
    }
    /// The model at the end of training.
    pub fn last(&self) -> PathBuf {
        self.root.join("last")
    }
    /// The run's tokenizer.
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
    /// The metrics log.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
}

/// What every stage of a run reads: the config, the options and the folders.
#[derive(Clone, Copy)]
struct Run<'a> {
    cfg: &'a TrainConfig,
    opts: &'a RunOptions,
    dirs: &'a RunDirs,
}

/// The newest checkpoint to resume from; an error when `--resume` has none, or when a fresh
/// run would overwrite one.
fn resume_point(run: &Run<'_>) -> Result<Option<PathBuf>> {
    let latest = model_dir::list_checkpoints(&run.dirs.checkpoints()).pop();
    match (run.opts.resume, latest) {
        (true, None) => Err(Error::malformed(
            &run.dirs.root,
            "has no checkpoint to resume from (checkpoints/step-*)",
        )),
        (false, Some(_)) => Err(Error::malformed(
            &run.dirs.root,
            "already holds a run; pass --resume to continue it, or choose another output dir",
        )),
        (true, Some((_, dir))) => Ok(Some(dir)),
        (false, None) => Ok(None),
    }
}

/// Trains as `cfg` says. See the module documentation.
pub fn train(
    cfg: &TrainConfig,
    opts: &RunOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Summary> {
    let dirs = RunDirs {
        root: cfg.output.dir.clone(),
    };
    let run = Run {
        cfg,
        opts,
        dirs: &dirs,
    };
    let threads = cfg.train.thread_count();
    let pool = tokenize::thread_pool(threads)?;
    let resume_from = resume_point(&run)?;

    on_event(Event::Preparing("data"));
    let base = ExampleOptions {
        label: cfg.data.label,
        max_len: cfg.data.max_len,
        add_special_tokens: cfg.data.add_special_tokens,
        classes: None,
        strict_languages: cfg.data.strict_language_codes,
    };
    let source = prepare::read_training(cfg, opts, &dirs, &base, on_event)?;
    on_event(Event::Preparing("tokenizer"));
    let tok = prepare::tokenizer(cfg, opts, &dirs, &source)?;
    let data = prepare::encode_training(cfg, source, &tok, &pool, &base)?;
    let class_opts = ExampleOptions {
        classes: Some(&data.classes),
        ..base.clone()
    };
    let naive_bayes = matches!(cfg.model.bag_init(), BagInit::NaiveBayes { .. }) && !opts.resume;
    let dev = prepare::dev_sets(cfg, &tok, &pool, &class_opts, naive_bayes, on_event)?;

    let spec = cfg.model.resolve(tok.vocab_size(), data.classes.clone())?;
    let card = model_card(cfg, &spec, &data.languages);
    let encoder = feed::StreamEncoder {
        tok: &tok,
        pool: &pool,
        opts: class_opts.clone(),
        snippets: cfg.data.augment_snippets,
        source: &cfg.data.train,
    };
    let started = start::start(
        &run,
        &spec,
        resume_from,
        &data.set,
        &encoder,
        &dev,
        on_event,
    )?;
    let mut t = start::training(cfg, started, data.set, encoder, card)?;
    on_event(started_event(cfg, &t));
    let lp = steps::Loop {
        run,
        dev: dev.dev.as_ref(),
        dev_ctx: dev_context(cfg, &data.languages, &tok),
    };
    let losses = steps::run(&lp, &mut t, on_event)?;
    finish(&lp, &mut t, losses, on_event)
}

/// The card saved with every model folder of the run, trained on `languages`.
fn model_card(cfg: &TrainConfig, spec: &ModelSpec, languages: &[String]) -> ModelCard {
    let mut card = ModelCard::new(
        spec.clone(),
        cfg.data.label,
        languages.to_vec(),
        cfg.data.add_special_tokens,
        cfg.data.max_len,
    );
    card.eval_data = cfg
        .data
        .test
        .clone()
        .or_else(|| cfg.data.dev.clone())
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    card.strict_language_codes = cfg.data.strict_language_codes;
    card
}

/// [`Event::Started`] for the loop about to run `t`.
fn started_event(cfg: &TrainConfig, t: &steps::Training<'_>) -> Event<'static> {
    Event::Started {
        start: t.state.step,
        total: cfg.train.steps,
        params: t
            .model
            .params()
            .iter()
            .filter(|p| p.2)
            .map(|p| p.1.elem_count())
            .sum(),
        examples: usize::try_from(t.feed.len()).unwrap_or(usize::MAX),
    }
}

/// How the dev set is evaluated, for a run trained on `languages`.
fn dev_context<'a>(cfg: &TrainConfig, languages: &'a [String], tok: &Tokenizer) -> EvalContext<'a> {
    EvalContext {
        train_languages: languages,
        classes_are_languages: cfg.data.label == LabelKind::Lang,
        pad_id: tok.pad_id(),
        batch_size: cfg.eval.batch_size.unwrap_or(cfg.train.batch_size.max(32)),
    }
}

/// Saves `last/` when the run is over (and `best/` for a run of no steps), and sums it up.
fn finish(
    lp: &steps::Loop<'_>,
    t: &mut steps::Training<'_>,
    losses: Vec<f32>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Summary> {
    let Run { cfg, opts, dirs } = lp.run;
    let total = cfg.train.steps;
    if total == 0 {
        // A model that needs no steps (a naive Bayes start): it is the run's best and only one.
        if let Some(dev) = lp.dev {
            let ev = crate::eval::evaluate(&t.model, dev, &lp.dev_ctx, &opts.device)?;
            let er = EvalRecord::new(0, &ev, true);
            log::append_jsonl(&dirs.metrics(), &er)?;
            on_event(Event::Evaluated(&er));
        }
        t.card.step = 0;
        model_dir::save_model(&dirs.best(), &t.model, &t.card, &dirs.tokenizer())?;
    }
    if t.state.step >= total || t.state.stopped_early {
        t.card.step = t.state.step;
        model_dir::save_model(&dirs.last(), &t.model, &t.card, &dirs.tokenizer())?;
    }
    let model_dir = if dirs.best().join(model_dir::CARD).is_file() {
        dirs.best()
    } else {
        dirs.last()
    };
    Ok(Summary {
        dir: dirs.root.clone(),
        steps: t.state.step,
        stopped_early: t.state.stopped_early,
        model_dir,
        losses,
    })
}
