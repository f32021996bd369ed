//! A whole training run from a [`TrainConfig`]: tokenizer, data, model, the loop with
//! evaluation, keep-best, early stopping and checkpoints, exact resume, and the final report.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use ferry_data::batch::{collate, BatchConfig, BatchSize, Example, PadSide};
use ferry_data::issues::IssueLog;
use ferry_data::sampling::{ByLanguage, LanguageSampler, SamplerConfig, Stopping};
use ferry_data::stream::{Draws, ShardIndex};
use ferry_data::tokenize::{self, Tokenizer};
use ferry_data::Record;
use serde::Serialize;

use crate::checkpoint::{self, ModelCard};
use crate::config::{LabelKind, LossKind, TrainConfig};
use crate::data::{self, ExampleOptions, Examples};
use crate::eval::{evaluate, EvalContext, Evaluation};
use crate::feed::{self, Feed};
use crate::grads::{clip_factor, Grads};
use crate::models::{BagInit, Model, NaiveBayesCounts};
use crate::{Error, Result};

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

/// What a run's tokenizer is trained on.
enum TrainTexts<'a> {
    /// The training records, in memory.
    Records(&'a [Record]),
    /// A streamed corpus, read in blocks of this many records.
    Shards(&'a ShardIndex, usize),
}

/// The training corpus before it is encoded.
enum TrainSource {
    /// Read into memory, with what reading dropped or kept with a warning.
    Records(Vec<Record>, IssueLog),
    /// Streamed from a folder per language.
    Shards(ShardIndex),
}

/// The run's tokenizer: the configured file, or one trained on a language-balanced sample of
/// the training texts (as many draws as there are records).
fn prepare_tokenizer(
    cfg: &TrainConfig,
    dirs: &RunDirs,
    texts: TrainTexts<'_>,
) -> Result<Tokenizer> {
    if let Some(file) = cfg.tokenizer_file() {
        let tok = Tokenizer::from_file(&file)?;
        std::fs::create_dir_all(&dirs.root).map_err(|e| Error::fs(&dirs.root, e))?;
        std::fs::copy(&file, dirs.tokenizer()).map_err(|e| Error::fs(&file, e))?;
        return Ok(tok);
    }
    if let Some(n) = &cfg.tokenizer.char_ngrams {
        std::fs::create_dir_all(&dirs.root).map_err(|e| Error::fs(&dirs.root, e))?;
        n.save(&dirs.tokenizer())?;
        return Ok(Tokenizer::from_char_ngrams(n.clone(), dirs.tokenizer()));
    }
    let t = cfg
        .tokenizer
        .train
        .as_ref()
        .ok_or_else(|| Error::Invalid("no tokenizer configured".into()))?;
    let scfg = |total| SamplerConfig {
        alpha: t.alpha,
        epoch_size: Some(total),
        stopping: Stopping::AllExhausted,
        replacement: false,
        seed: cfg.train.seed,
    };
    let spec = tokenize::train::TrainSpec {
        kind: t.kind,
        vocab_size: t.vocab_size,
        min_frequency: 2,
        nfkc: true,
        byte_fallback: t.kind != tokenize::train::Kind::WordPiece,
        lang_tags: None,
    };
    let tok = match texts {
        TrainTexts::Records(records) => {
            let by_lang =
                ByLanguage::group(records.iter().map(|r| (r.lang.clone(), r.text.as_str())));
            let total: u64 = by_lang.sizes().iter().sum();
            let sampler = LanguageSampler::new(by_lang.sizes(), scfg(total))?;
            let sample: Vec<&str> = sampler.map(|d| *by_lang.get(d)).collect();
            tokenize::train::train(&spec, sample.into_iter())?
        }
        TrainTexts::Shards(index, block) => {
            // The trainer holds word counts, not the sample: draws are read as it goes.
            let mut failed = None;
            let draws = Draws::new(index, scfg(index.records()), block)?;
            let texts = draws.map_while(|r| match r {
                Ok(r) => Some(r.text),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
            let tok = tokenize::train::train(&spec, texts)?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            tok
        }
    };
    tokenize::train::save(&tok, &dirs.tokenizer())?;
    Ok(tok)
}

/// The loss of a micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct LossSpec {
    /// The loss function.
    pub kind: LossKind,
    /// Label smoothing (cross entropy).
    pub smoothing: f64,
    /// A factor on the loss (1 / micro-batches per step).
    pub scale: f64,
}

/// Loss and gradients of one micro-batch, split across `workers` (data parallel): each
/// worker takes a contiguous share of the rows; losses are weighted by share size so the sum
/// is the whole batch's mean; gradients are summed in worker order (deterministic).
pub fn micro_batch(
    model: &Model,
    rows: &[&Example],
    bcfg: &BatchConfig,
    loss: &LossSpec,
    workers: usize,
    device: &Device,
) -> Result<(f32, Grads)> {
    let shard = |rows: &[&Example], weight: f64| -> Result<(f32, Grads)> {
        let batch = collate(rows, bcfg, device)?;
        let labels = batch
            .labels
            .as_ref()
            .ok_or_else(|| Error::Invalid("a training example has no label".into()))?;
        let logits = model.forward(&batch.input_ids, Some(&batch.attention_mask))?;
        let l = match loss.kind {
            LossKind::CrossEntropy => crate::loss::cross_entropy(&logits, labels, loss.smoothing)?,
            LossKind::Nll => crate::loss::nll(&ferry_kernels::log_softmax(&logits)?, labels)?,
        };
        let l = (l * (weight * loss.scale))?;
        let value: f32 = l.to_scalar()?;
        Ok((value, Grads::from_loss(model.params(), &l)?))
    };
    if workers <= 1 {
        return shard(rows, 1.0);
    }
    let n = rows.len();
    let bounds: Vec<(usize, usize)> = (0..workers)
        .map(|w| (w * n / workers, (w + 1) * n / workers))
        .filter(|(a, b)| b > a)
        .collect();
    let results: Vec<Result<(f32, Grads)>> = std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .iter()
            .map(|&(a, b)| s.spawn(move || shard(&rows[a..b], (b - a) as f64 / n as f64)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a data-parallel worker panicked"))
            .collect()
    });
    let mut total = 0f32;
    let mut grads: Option<Grads> = None;
    for r in results {
        let (l, g) = r?;
        total += l;
        match grads.as_mut() {
            None => grads = Some(g),
            Some(acc) => acc.accumulate(g)?,
        }
    }
    Ok((total, grads.expect("at least one worker")))
}

fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::fs(path, e))?;
    let line = serde_json::to_string(value).map_err(|e| Error::Invalid(e.to_string()))?;
    writeln!(f, "{line}").map_err(|e| Error::fs(path, e))
}

/// Drops metrics lines after `step` (written by a run that was killed after its last
/// checkpoint), so a resumed log has each step once.
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    ferry_io::atomic::write_atomic(path, |w| {
        w.write_all(kept.as_bytes())
            .map_err(|e| ferry_io::Error::io(path, e))
    })?;
    Ok(())
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
    let device = &opts.device;
    let threads = cfg
        .train
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = tokenize::thread_pool(threads)?;
    let latest = checkpoint::list_checkpoints(&dirs.checkpoints()).pop();
    if opts.resume && latest.is_none() {
        return Err(Error::file(
            &dirs.root,
            "has no checkpoint to resume from (checkpoints/step-*)",
        ));
    }
    if !opts.resume && latest.is_some() {
        return Err(Error::file(
            &dirs.root,
            "already holds a run; pass --resume to continue it, or choose another output dir",
        ));
    }

    on_event(Event::Preparing("data"));
    let max_len = cfg.data.max_len;
    let base = ExampleOptions {
        label: cfg.data.label,
        max_len,
        add_special_tokens: cfg.data.add_special_tokens,
        classes: None,
        strict_languages: cfg.data.strict_language_codes,
    };
    let block = cfg.data.stream.as_ref().map_or(0, |s| s.block);
    // In memory, the training corpus is read once: for the tokenizer (when one is trained)
    // and the examples. Streamed, it is indexed (split by language first when it is not
    // already) and read a window at a time.
    let mut source = match cfg.data.stream {
        None => {
            let (mut records, issues) = data::read_records(&cfg.data.train, &base)?;
            on_event(Event::Read {
                file: &cfg.data.train,
                records: records.len(),
                issues: &issues,
            });
            if let Some(keep) = &cfg.data.languages {
                records.retain(|r| keep.contains(&r.lang));
            }
            TrainSource::Records(records, issues)
        }
        Some(_) => {
            let (mut index, issues) = feed::prepare_index(cfg, &dirs.root, opts.resume, |s| {
                on_event(Event::Preparing(s))
            })?;
            on_event(Event::Read {
                file: &cfg.data.train,
                records: usize::try_from(index.records()).unwrap_or(usize::MAX),
                issues: &issues,
            });
            if let Some(keep) = &cfg.data.languages {
                index.retain_languages(keep);
                if index.langs.is_empty() {
                    return Err(Error::file(
                        &cfg.data.train,
                        "has no records in the languages of [data] languages",
                    ));
                }
            }
            TrainSource::Shards(index)
        }
    };
    on_event(Event::Preparing("tokenizer"));
    let tok = if opts.resume {
        Tokenizer::from_file(dirs.tokenizer())?
    } else {
        let texts = match &source {
            TrainSource::Records(r, _) => TrainTexts::Records(r),
            TrainSource::Shards(index) => TrainTexts::Shards(index, block),
        };
        prepare_tokenizer(cfg, &dirs, texts)?
    };
    let (train_set, classes, train_languages) = match &mut source {
        TrainSource::Records(records, issues) => {
            let mut records = std::mem::take(records);
            if let Some(w) = cfg.data.augment_snippets {
                let extra = data::snippets(&records, w);
                records.extend(extra);
            }
            let issues = std::mem::take(issues);
            let set = data::from_records(records, issues, &cfg.data.train, &tok, &pool, &base)?;
            let langs: std::collections::BTreeSet<&String> =
                set.examples.iter().map(|e| &e.lang).collect();
            let langs = langs.into_iter().cloned().collect();
            let classes = set.classes.clone();
            (Some(set), classes, langs)
        }
        TrainSource::Shards(index) => {
            let classes = match cfg.data.label {
                LabelKind::Lang => index.languages(),
                LabelKind::Label if index.labels.is_empty() => {
                    return Err(Error::file(
                        &cfg.data.train,
                        "has no labels to train on: label = \"label\" needs a label column \
                         (a folder per language of text files has none)",
                    ))
                }
                LabelKind::Label => index.labels.clone(),
            };
            (None, classes, index.languages())
        }
    };
    let dev_opts = ExampleOptions {
        classes: Some(&classes),
        ..base.clone()
    };
    // A naive Bayes start calibrates its confidence on the dev texts and their snippets
    // (`[eval] snippet_words`, default 4), so that short, ambiguous inputs weigh in as they do
    // in use: the snippets are cut from the records read here, not from a second read.
    let naive_bayes = matches!(cfg.model.bag_init(), BagInit::NaiveBayes { .. }) && !opts.resume;
    let (dev, dev_snippets): (Option<Examples>, Option<Examples>) = match &cfg.data.dev {
        Some(p) => {
            let (records, issues) = data::read_records(p, &dev_opts)?;
            let snippets = naive_bayes
                .then(|| data::snippets(&records, cfg.eval.snippet_words.unwrap_or(4)))
                .filter(|s| !s.is_empty())
                .map(|s| data::from_records(s, IssueLog::default(), p, &tok, &pool, &dev_opts))
                .transpose()?;
            let dev = data::from_records(records, issues, p, &tok, &pool, &dev_opts)?;
            (Some(dev), snippets)
        }
        None => (None, None),
    };
    if let (Some(p), Some(d)) = (&cfg.data.dev, &dev) {
        on_event(Event::Read {
            file: p,
            records: d.examples.len(),
            issues: &d.issues,
        });
    }

    let spec = cfg.model.resolve(tok.vocab_size(), classes.clone())?;
    let mut card = ModelCard::new(
        spec.clone(),
        cfg.data.label,
        train_languages,
        cfg.data.add_special_tokens,
        max_len,
    );
    let encoder = feed::StreamEncoder {
        tok: &tok,
        pool: &pool,
        opts: ExampleOptions {
            classes: Some(&classes),
            ..base.clone()
        },
        snippets: cfg.data.augment_snippets,
        source: &cfg.data.train,
    };
    card.eval_data = cfg
        .data
        .test
        .clone()
        .or_else(|| cfg.data.dev.clone())
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    card.strict_language_codes = cfg.data.strict_language_codes;
    let (mut model, mut optimizer, mut state) =
        if let Some((_, dir)) = latest.filter(|_| opts.resume) {
            let loaded = checkpoint::load_model(&dir, None, device)?;
            if loaded.card.spec != spec {
                return Err(Error::file(
                    &dir,
                    "was made with another model or data config than the one given",
                ));
            }
            let mut model = loaded.model;
            freeze(cfg, &mut model);
            let mut optimizer = cfg.optimizer.build(model.params());
            let state = checkpoint::load_training_state(&dir, &model, &mut optimizer)?;
            truncate_metrics(&dirs.metrics(), state.step)?;
            (model, optimizer, Some(state))
        } else {
            let mut model = match cfg.model.pretrained() {
                Some(p) => Model::from_pretrained(&spec, p, cfg.train.seed, device)?,
                None => Model::new(&spec, cfg.train.seed, device)?,
            };
            if let BagInit::NaiveBayes { alpha } = cfg.model.bag_init() {
                on_event(Event::Preparing("naive Bayes start"));
                let calibration: Vec<&Example> = [&dev, &dev_snippets]
                    .into_iter()
                    .flatten()
                    .flat_map(|set| &set.examples)
                    .collect();
                let mut counts = NaiveBayesCounts::new(spec.vocab_size, spec.classes.len());
                match (&train_set, &source) {
                    (Some(set), _) => counts.add(&set.examples)?,
                    (None, TrainSource::Shards(index)) => {
                        feed::for_each_chunk(index, block, &encoder, |ex| counts.add(ex))?
                    }
                    (None, TrainSource::Records(..)) => unreachable!("records are encoded"),
                }
                model.init_naive_bayes(&counts, &calibration, alpha, device)?;
            }
            freeze(cfg, &mut model);
            let optimizer = cfg.optimizer.build(model.params());
            let _ = std::fs::remove_file(dirs.metrics());
            (model, optimizer, None)
        };
    let model_ref = &mut model;

    let (alpha, seed) = (cfg.train.alpha, cfg.train.seed);
    let mut feed = match (train_set, &source, &cfg.data.stream) {
        (Some(set), _, _) => Feed::in_memory(set.examples, alpha, seed)?,
        (None, TrainSource::Shards(index), Some(s)) => {
            Feed::streamed(index, s.clone(), cfg.train.batch_size, alpha, seed, encoder)?
        }
        (None, _, _) => unreachable!("a streamed run has an index"),
    };
    let mut state = match state.take() {
        Some(s) => {
            feed.restore(&s)?;
            s
        }
        None => feed.initial_state(),
    };
    let bcfg = BatchConfig {
        size: BatchSize::Examples(cfg.train.batch_size),
        bucket: false,
        shuffle: None,
        pad_id: tok.pad_id(),
        side: PadSide::Right,
        pad_to_multiple_of: None,
    };
    let total = cfg.train.steps;
    on_event(Event::Started {
        start: state.step,
        total,
        params: model_ref
            .params()
            .iter()
            .filter(|p| p.2)
            .map(|p| p.1.elem_count())
            .sum(),
        examples: usize::try_from(feed.len()).unwrap_or(usize::MAX),
    });
    let eval_bs = cfg.eval.batch_size.unwrap_or(cfg.train.batch_size.max(32));
    let train_languages = card.train_languages.clone();
    let dev_ctx = EvalContext {
        train_languages: &train_languages,
        classes_are_languages: card.label == LabelKind::Lang,
        pad_id: tok.pad_id(),
        batch_size: eval_bs,
    };
    let ckpt_every = cfg.train.checkpoint_every.or(cfg.train.eval_every);
    let mut losses = Vec::new();
    while state.step < total && !state.stopped_early {
        let lr = cfg.optimizer.lr() * cfg.schedule.factor(state.step, total);
        let mut grads: Option<Grads> = None;
        let mut step_loss = 0f32;
        let mut tokens = 0;
        for _ in 0..cfg.train.grad_accum {
            let rows = feed.rows(cfg.train.batch_size)?;
            tokens += rows.iter().map(|e| e.ids.len()).sum::<usize>();
            let loss = LossSpec {
                kind: cfg.train.loss,
                smoothing: cfg.train.label_smoothing,
                scale: 1.0 / cfg.train.grad_accum as f64,
            };
            let (l, g) = micro_batch(model_ref, &rows, &bcfg, &loss, cfg.train.workers, device)?;
            step_loss += l;
            match grads.as_mut() {
                None => grads = Some(g),
                Some(acc) => acc.accumulate(g)?,
            }
        }
        let grads = grads.expect("grad_accum >= 1");
        let norm = grads.global_norm()?;
        optimizer.step(
            model_ref.params(),
            &grads,
            lr,
            clip_factor(norm, cfg.train.clip_norm),
        )?;
        if !step_loss.is_finite() {
            return Err(Error::Invalid(format!(
                "the loss became {step_loss} at step {}; lower the learning rate or set clip_norm",
                state.step + 1
            )));
        }
        state.step += 1;
        feed.save(&mut state);
        losses.push(step_loss);
        let rec = StepRecord {
            step: state.step,
            loss: step_loss,
            grad_norm: norm,
            lr,
            tokens,
            epoch: feed.epoch(),
        };
        append_jsonl(&dirs.metrics(), &rec)?;
        on_event(Event::Step(&rec));

        let last = state.step == total;
        let eval_due = cfg.train.eval_every.is_some_and(|n| state.step % n == 0) || last;
        if let (true, Some(dev)) = (eval_due, dev.as_ref()) {
            let ev = evaluate(model_ref, dev, &dev_ctx, device)?;
            let value = match cfg.train.metric {
                crate::config::Metric::MacroF1 => ev.report.overall.macro_f1,
                crate::config::Metric::Accuracy => ev.report.overall.accuracy,
                crate::config::Metric::Loss => ev.loss,
            };
            let is_best = state
                .best
                .is_none_or(|(_, b)| cfg.train.metric.better(value, b));
            if is_best {
                state.best = Some((state.step, value));
                state.since_best = 0;
                card.step = state.step;
                checkpoint::save_model(&dirs.best(), model_ref, &card, &dirs.tokenizer())?;
            } else {
                state.since_best += 1;
                if cfg
                    .train
                    .early_stopping
                    .is_some_and(|e| state.since_best >= e.patience)
                {
                    state.stopped_early = true;
                }
            }
            let er = EvalRecord::new(state.step, &ev, is_best);
            append_jsonl(&dirs.metrics(), &er)?;
            on_event(Event::Evaluated(&er));
        }
        let ckpt_due =
            ckpt_every.is_some_and(|n| state.step % n == 0) || last || state.stopped_early;
        if ckpt_due {
            card.step = state.step;
            let dir = dirs
                .checkpoints()
                .join(checkpoint::checkpoint_name(state.step));
            checkpoint::save_checkpoint(
                &dir,
                model_ref,
                &card,
                &dirs.tokenizer(),
                &optimizer,
                &state,
            )?;
            prune(&dirs, cfg.train.keep_last, state.best.map(|b| b.0));
            on_event(Event::Checkpoint(&dir));
        }
        if opts.stop_after == Some(state.step) {
            break;
        }
    }
    if total == 0 {
        // A model that needs no steps (a naive Bayes start): it is the run's best and only one.
        if let Some(dev) = dev.as_ref() {
            let ev = evaluate(model_ref, dev, &dev_ctx, device)?;
            let er = EvalRecord::new(0, &ev, true);
            append_jsonl(&dirs.metrics(), &er)?;
            on_event(Event::Evaluated(&er));
        }
        card.step = 0;
        checkpoint::save_model(&dirs.best(), model_ref, &card, &dirs.tokenizer())?;
    }
    let done = state.step >= total || state.stopped_early;
    if done {
        card.step = state.step;
        checkpoint::save_model(&dirs.last(), model_ref, &card, &dirs.tokenizer())?;
    }
    let model_dir = if dirs.best().join(checkpoint::CARD).is_file() {
        dirs.best()
    } else {
        dirs.last()
    };
    Ok(Summary {
        dir: dirs.root.clone(),
        steps: state.step,
        stopped_early: state.stopped_early,
        model_dir,
        losses,
    })
}

fn freeze(cfg: &TrainConfig, model: &mut Model) {
    if let crate::models::ModelConfig::Bert {
        freeze_encoder: true,
        ..
    } = cfg.model
    {
        model.params_mut().freeze("embeddings.");
        model.params_mut().freeze("encoder.");
    }
}

/// Keeps the newest `keep` checkpoints and the best one.
fn prune(dirs: &RunDirs, keep: usize, best: Option<u64>) {
    let all = checkpoint::list_checkpoints(&dirs.checkpoints());
    let n = all.len();
    for (i, (step, dir)) in all.into_iter().enumerate() {
        if i + keep.max(1) < n && Some(step) != best {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Evaluates a model folder on a corpus file (optionally as snippets), reading it as the
/// training data was read (the card's `strict_language_codes`); the evaluation carries what
/// reading dropped or kept with a warning.
pub fn evaluate_file(
    loaded: &checkpoint::LoadedModel,
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
    let loaded = checkpoint::load_model(&summary.model_dir, None, device)?;
    let threads = cfg
        .train
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
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
