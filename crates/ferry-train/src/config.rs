//! The training config file (`ferry train --config run.toml`). Relative paths are relative
//! to the working directory, as the command line's are.

use std::path::{Path, PathBuf};

use ferry_data::tokenize::train::Kind;
use serde::{Deserialize, Serialize};

use crate::models::ModelConfig;
use crate::optim::{OptimizerConfig, Schedule};
use crate::{Error, Result};

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the examples come from.
    pub data: DataConfig,
    /// The tokenizer: a file, or one to train.
    pub tokenizer: TokenizerConfig,
    /// The model.
    pub model: ModelConfig,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// The loop.
    pub train: LoopConfig,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalConfig,
    /// Where results go.
    pub output: OutputConfig,
}

/// What the classes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// The record's language (language identification).
    #[default]
    Lang,
    /// The record's label column.
    Label,
}

/// Data files and how to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training corpus (any layout ferry-data reads).
    pub train: PathBuf,
    /// Evaluated every `eval_every` steps (early stopping, keep-best).
    #[serde(default)]
    pub dev: Option<PathBuf>,
    /// Evaluated once at the end, for the report.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// What the classes are.
    #[serde(default)]
    pub label: LabelKind,
    /// Train only on these languages (evaluation covers all: the rest is zero-shot).
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// Inputs are truncated to this many tokens.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Add the tokenizer's special tokens.
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// Also train on snippets of this many words cut from each training text (short-text
    /// robustness; see [`crate::data::snippets`]).
    #[serde(default)]
    pub augment_snippets: Option<usize>,
    /// Drop records whose language label is not a language code (ISO 639 / BCP-47), as
    /// malformed, from every data file; by default any label is a class and such labels are
    /// only a warning (the UDHR's `ell_monotonic`).
    #[serde(default)]
    pub strict_language_codes: bool,
    /// Stream the training corpus instead of holding it (corpora larger than memory):
    /// `stream = { window = 8192, block = 1024 }`. `train` is then a folder per language, or
    /// any corpus, split into one under the run folder (`shards/`) first. See
    /// [`ferry_data::stream`] for the memory bound.
    #[serde(default)]
    pub stream: Option<ferry_data::stream::StreamConfig>,
}

fn default_max_len() -> usize {
    128
}
fn yes() -> bool {
    true
}

/// A tokenizer file, or the settings to train one on the training corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// A `tokenizer.json` (a model folder's, for BERT).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Train one instead.
    #[serde(default)]
    pub train: Option<TokenizerTraining>,
    /// Hashed character n-grams instead of tokens (fastText's subword features; nothing to
    /// train): `char_ngrams = { min_n = 1, max_n = 5, buckets = 65536 }`.
    #[serde(default)]
    pub char_ngrams: Option<ferry_data::tokenize::CharNgrams>,
}

/// Tokenizer training settings (see `ferry data tokenizer train`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerTraining {
    /// bpe, unigram or wordpiece.
    pub kind: Kind,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Language smoothing of the training sample.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_alpha() -> f64 {
    0.3
}

/// The training loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Clip gradients to this global L2 norm.
    #[serde(default)]
    pub clip_norm: Option<f64>,
    /// The loss.
    #[serde(default)]
    pub loss: LossKind,
    /// Label smoothing (cross entropy only).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Seed of initialization and data order.
    #[serde(default)]
    pub seed: u64,
    /// Language sampling exponent (1: natural mix, 0: uniform).
    #[serde(default = "one_f")]
    pub alpha: f64,
    /// Evaluate on `data.dev` every this many steps (and at the end).
    #[serde(default)]
    pub eval_every: Option<u64>,
    /// Write a checkpoint every this many steps (default: at each evaluation).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Stop when the dev metric has not improved for this many evaluations.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// The metric keep-best and early stopping follow.
    #[serde(default)]
    pub metric: Metric,
    /// Checkpoints kept (the newest; the best is kept besides).
    #[serde(default = "two")]
    pub keep_last: usize,
    /// Threads (tokenization and tensor kernels); default: all cores.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Data-parallel workers: each micro-batch is split across this many CPU workers whose
    /// gradients are summed (see docs/training.md).
    #[serde(default = "one")]
    pub workers: usize,
    /// The device training runs on: `cpu` (default), `cuda:N` or `metal:N` (ferry built with
    /// that feature). Data-parallel `workers` split micro-batches on the CPU only.
    #[serde(default)]
    pub device: Option<String>,
}

impl LoopConfig {
    /// The device named by `device` (the CPU when unset).
    pub fn device_spec(&self) -> std::result::Result<ferry_device::DeviceSpec, String> {
        match &self.device {
            None => Ok(ferry_device::DeviceSpec::CPU),
            Some(d) => d
                .parse()
                .map_err(|e: ferry_device::Error| format!("[train] {e}")),
        }
    }

    /// The threads to use: `threads`, else every core.
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn one_f() -> f64 {
    1.0
}

/// The loss function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Cross entropy on logits.
    #[default]
    CrossEntropy,
    /// NLL on `log_softmax(logits)` (the seed's second form; equal to cross entropy).
    Nll,
}

/// A dev-set metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Overall macro-F1 (higher is better).
    #[default]
    MacroF1,
    /// Overall accuracy (higher is better).
    Accuracy,
    /// Mean loss (lower is better).
    Loss,
}

impl Metric {
    /// True when `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Metric::Loss => a < b,
            _ => a > b,
        }
    }
}

/// Early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Evaluations without improvement before stopping.
    pub patience: u32,
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Also evaluate on snippets of this many words cut from each test text (texts written
    /// without spaces are cut into pieces of twice as many characters).
    #[serde(default)]
    pub snippet_words: Option<usize>,
    /// Examples per evaluation batch.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

/// Output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The run folder: checkpoints, the final model, metrics and reports.
    pub dir: PathBuf,
}

impl TrainConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: TrainConfig =
            toml::from_str(&text).map_err(|e| Error::malformed(path, e.to_string()))?;
        cfg.check().map_err(|msg| Error::malformed(path, msg))?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn check(&self) -> std::result::Result<(), String> {
        let t = &self.train;
        if t.batch_size == 0 || t.grad_accum == 0 || t.workers == 0 {
            return Err("[train] batch_size, grad_accum and workers must be at least 1".into());
        }
        let starts_trained = matches!(
            self.model.bag_init(),
            crate::models::BagInit::NaiveBayes { .. }
        );
        if t.steps == 0 && !starts_trained {
            return Err(
                "[train] steps must be at least 1 (0 only for a model that starts trained: \
                 [model] init = { kind = \"naive_bayes\" })"
                    .into(),
            );
        }
        if t.workers > t.batch_size {
            return Err(format!(
                "[train] workers = {} is more than batch_size = {}",
                t.workers, t.batch_size
            ));
        }
        let device = t.device_spec()?;
        if device.is_accelerator() && t.workers > 1 {
            return Err(format!(
                "[train] workers = {} splits micro-batches across CPU threads; on {device} use \
                 workers = 1",
                t.workers
            ));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err("[train] label_smoothing must be in [0, 1)".into());
        }
        if t.label_smoothing > 0.0 && t.loss == LossKind::Nll {
            return Err("[train] label_smoothing needs loss = \"cross_entropy\"".into());
        }
        let tk = &self.tokenizer;
        let made = usize::from(tk.train.is_some()) + usize::from(tk.char_ngrams.is_some());
        if usize::from(tk.path.is_some()) + made > 1 {
            return Err("[tokenizer] takes one of `path`, `train` and `char_ngrams`".into());
        }
        if let Some(n) = &tk.char_ngrams {
            n.validate()
                .map_err(|e| format!("[tokenizer] char_ngrams: {e}"))?;
        }
        match (tk.path.is_some() || made > 0, &self.model) {
            (false, ModelConfig::Bert { path, .. }) if !path.join("tokenizer.json").is_file() => {
                return Err(format!(
                    "[tokenizer] path is not set and {} has no tokenizer.json",
                    path.display()
                ));
            }
            (false, ModelConfig::Bert { .. }) => {}
            (false, _) => return Err("[tokenizer] needs `path`, `train` or `char_ngrams`".into()),
            (true, ModelConfig::Bert { .. }) if made > 0 => {
                return Err(
                    "a pretrained BERT needs its own tokenizer: set [tokenizer] path, not train"
                        .into(),
                )
            }
            _ => {}
        }
        if t.early_stopping.is_some() && (t.eval_every.is_none() || self.data.dev.is_none()) {
            return Err("[train] early_stopping needs eval_every and [data] dev".into());
        }
        Ok(())
    }

    /// The tokenizer file named by the config (for BERT, the model folder's).
    pub fn tokenizer_file(&self) -> Option<PathBuf> {
        match (&self.tokenizer.path, &self.model) {
            (Some(p), _) => Some(p.clone()),
            (None, ModelConfig::Bert { path, .. })
                if self.tokenizer.train.is_none() && self.tokenizer.char_ngrams.is_none() =>
            {
                Some(path.join("tokenizer.json"))
            }
            _ => None,
        }
    }
}
