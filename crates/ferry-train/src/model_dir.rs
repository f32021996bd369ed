//! Model folders and training checkpoints, written atomically.
//!
//! A **model folder** holds `model.safetensors` (f32 weights), `ferry-model.json` (the
//! [`ModelCard`]: architecture, classes, how inputs were made) and `tokenizer.json`: enough to
//! rebuild and run the model anywhere. A **checkpoint** is a model folder plus
//! `optimizer.safetensors` (moments) and `trainer-state.json` (step, sampler position with
//! its random stream, early-stopping state): enough to resume training exactly.
//!
//! A folder is written under a temporary name beside its target and renamed into place, so
//! an interrupted write never leaves a half-written checkpoint.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferry_data::sampling::SamplerState;
use ferry_data::tokenize::Tokenizer;
use ferry_io::{DType, Metadata, OutTensor};
use serde::{Deserialize, Serialize};

use crate::config::LabelKind;
use crate::models::{Classifier, ModelSpec};
use crate::optim::Optimizer;
use crate::params::load_tensors;
use crate::{Error, Result};

/// The weights file of a model folder.
pub const WEIGHTS: &str = "model.safetensors";
/// The description file of a model folder.
pub const CARD: &str = "ferry-model.json";
/// The tokenizer of a model folder.
pub const TOKENIZER: &str = "tokenizer.json";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "trainer-state.json";
const FORMAT: &str = "ferry-model/1";

/// What a model is and how its inputs are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Always `ferry-model/1`.
    pub format: String,
    /// Architecture, vocabulary size, classes.
    pub spec: ModelSpec,
    /// What the classes are: `lang` (language identification) or `label`.
    pub label: LabelKind,
    /// Languages seen in training (the rest of an evaluation is zero-shot).
    pub train_languages: Vec<String>,
    /// Whether the tokenizer's special tokens are added.
    pub add_special_tokens: bool,
    /// Inputs are truncated to this many tokens.
    pub max_len: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// The corpus to evaluate on by default (the run's test set, else its dev set).
    #[serde(default)]
    pub eval_data: Option<PathBuf>,
    /// Whether records whose language label is not a language code were dropped from the
    /// training data (`[data] strict_language_codes`); evaluation reads its data the same way.
    #[serde(default)]
    pub strict_language_codes: bool,
}

impl ModelCard {
    /// A card for `spec`.
    pub fn new(
        spec: ModelSpec,
        label: LabelKind,
        train_languages: Vec<String>,
        add_special_tokens: bool,
        max_len: usize,
    ) -> Self {
        ModelCard {
            format: FORMAT.into(),
            spec,
            label,
            train_languages,
            add_special_tokens,
            max_len,
            step: 0,
            eval_data: None,
            strict_language_codes: false,
        }
    }
}

/// Where training stands, beyond weights and optimizer moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// The data sampler's position and random stream.
    pub sampler: SamplerState,
    /// The best evaluation so far: (step, metric value).
    pub best: Option<(u64, f64)>,
    /// Evaluations since the best one (early stopping).
    pub since_best: u32,
    /// Set when early stopping ended the run.
    pub stopped_early: bool,
    /// A streamed run's position in its corpus (its `sampler` is the one at the start of the
    /// current window).
    #[serde(default)]
    pub stream: Option<ferry_data::stream::StreamState>,
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let v: Vec<f32> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes named tensors as an f32 safetensors file.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.dims().to_vec(), tensor_bytes(t)?)))
        .collect::<Result<_>>()?;
    let out: Vec<OutTensor<'_>> = data
        .iter()
        .map(|(n, shape, bytes)| {
            OutTensor::new(n.clone(), DType::F32, shape.clone(), move || {
                Ok(Cow::Borrowed(bytes.as_slice()))
            })
        })
        .collect();
    ferry_io::formats::safetensors::write(path, &out, &Metadata::new(), &mut |_, _| {})?;
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    ferry_io::atomic::write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes())
            .map_err(|e| ferry_io::Error::io(path, e))
    })?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::malformed(path, format!("cannot be parsed: {e}")))
}

/// Fills a fresh folder beside `dir` with `fill`, then renames it over `dir`.
fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".ferry-tmp")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    fill(tmp.path())?;
    let old = parent.join(format!(".{name}.old"));
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = tmp.keep();
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn fill_model(dir: &Path, model: &Classifier, card: &ModelCard, tokenizer: &Path) -> Result<()> {
    write_tensors(&dir.join(WEIGHTS), &model.params().snapshot())?;
    write_json(&dir.join(CARD), card)?;
    std::fs::copy(tokenizer, dir.join(TOKENIZER)).map_err(|e| Error::io(tokenizer, e))?;
    Ok(())
}

/// Writes a model folder at `dir` (replacing it atomically).
pub fn save_model(
    dir: &Path,
    model: &Classifier,
    card: &ModelCard,
    tokenizer: &Path,
) -> Result<()> {
    write_folder(dir, |tmp| fill_model(tmp, model, card, tokenizer))
}

/// Writes a checkpoint at `dir` (replacing it atomically).
pub fn save_checkpoint(
    dir: &Path,
    model: &Classifier,
    card: &ModelCard,
    tokenizer: &Path,
    optimizer: &Optimizer,
    state: &TrainerState,
) -> Result<()> {
    write_folder(dir, |tmp| {
        fill_model(tmp, model, card, tokenizer)?;
        write_tensors(&tmp.join(OPTIMIZER), &optimizer.state(model.params())?)?;
        write_json(&tmp.join(STATE), state)
    })
}

/// A model folder read back.
pub struct LoadedModel {
    /// The model.
    pub model: Classifier,
    /// Its card.
    pub card: ModelCard,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The folder.
    pub dir: PathBuf,
}

/// The weights of a model folder: `model.safetensors`, or the `model.*` that `ferry migrate`
/// wrote (GGUF, npz, pth).
pub fn weights_file(dir: &Path) -> Option<PathBuf> {
    ["safetensors", "gguf", "npz", "pth"]
        .iter()
        .map(|ext| dir.join(format!("model.{ext}")))
        .find(|p| p.is_file())
}

/// True when `dir` is a ferry model folder (or checkpoint).
pub fn is_model_dir(dir: &Path) -> bool {
    dir.join(CARD).is_file() && weights_file(dir).is_some()
}

/// Reads the card of model folder `dir` (without its weights), checking its format.
pub fn read_card(dir: &Path) -> Result<ModelCard> {
    let card_path = dir.join(CARD);
    if !card_path.is_file() {
        return Err(Error::malformed(
            dir,
            format!(
                "is not a ferry model folder: {CARD} is missing (train one with `ferry train`)"
            ),
        ));
    }
    let card: ModelCard = read_json(&card_path)?;
    if card.format != FORMAT {
        return Err(Error::malformed(
            &card_path,
            format!("format {:?} is not {FORMAT}", card.format),
        ));
    }
    Ok(card)
}

/// Reads a model folder onto `device`. `weights` overrides the weights file (for a converted
/// copy: f16 safetensors, q8_0 GGUF, ...); its tensors must carry the same names.
pub fn load_model(dir: &Path, weights: Option<&Path>, device: &Device) -> Result<LoadedModel> {
    let card = read_card(dir)?;
    let model = Classifier::new(&card.spec, 0, device)?;
    let wpath = match weights {
        Some(w) => w.to_path_buf(),
        None => weights_file(dir).ok_or_else(|| {
            Error::malformed(dir, "has no model.safetensors (or model.gguf/.npz/.pth)")
        })?,
    };
    model
        .params()
        .assign(&load_tensors(&wpath, device)?, &wpath)?;
    let tokenizer = Tokenizer::from_file(dir.join(TOKENIZER))?;
    Ok(LoadedModel {
        model,
        card,
        tokenizer,
        dir: dir.to_path_buf(),
    })
}

/// Restores optimizer moments and trainer state from checkpoint `dir` (whose weights were
/// loaded into `model` by [`load_model`]).
pub fn load_training_state(
    dir: &Path,
    model: &Classifier,
    optimizer: &mut Optimizer,
) -> Result<TrainerState> {
    let state: TrainerState = read_json(&dir.join(STATE))?;
    let tensors: HashMap<String, Tensor> = load_tensors(
        &dir.join(OPTIMIZER),
        model
            .params()
            .iter()
            .next()
            .map(|(_, v, _)| v.device().clone())
            .as_ref()
            .unwrap_or(&Device::Cpu),
    )?;
    optimizer.load_state(model.params(), &tensors, state.step)?;
    Ok(state)
}

/// The checkpoints under `dir` (named `step-NNNNNNNN`), oldest first.
pub fn list_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE).is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The folder name of the checkpoint at `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}")
}
