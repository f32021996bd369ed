//! Classifiers trained by ferry (`ferry train` model folders: `ferry-model.json`, the weights
//! as `model.safetensors` or the `model.gguf`/`.npz`/`.pth` that `ferry migrate` wrote, and
//! `tokenizer.json`), run by ferry-train's own networks behind the runtime's [`crate::Model`].

use std::path::Path;

use candle_core::{Device, Tensor};
use ferry_train::config::LabelKind;
use ferry_train::model_dir::{self, LoadedModel};

use crate::config::ClassifierConfig;
use crate::error::{Error, Result};

/// Whether `path` is a ferry model folder.
pub fn is_classifier(path: &Path) -> bool {
    path.is_dir() && model_dir::is_model_dir(path)
}

fn train_err(e: ferry_train::Error) -> Error {
    Error::Train(Box::new(e))
}

/// A loaded classifier.
pub struct Classifier {
    loaded: LoadedModel,
    device: Device,
}

impl Classifier {
    /// Loads the model folder `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Classifier> {
        let loaded = model_dir::load_model(dir, None, device).map_err(train_err)?;
        Ok(Classifier {
            loaded,
            device: device.clone(),
        })
    }

    /// The configuration its card describes, read without loading the weights.
    pub fn config(dir: &Path) -> Result<ClassifierConfig> {
        let card: model_dir::ModelCard = model_dir::read_card(dir).map_err(train_err)?;
        Ok(ClassifierConfig {
            arch: card.spec.arch.name().to_string(),
            classes: card.spec.classes,
            classes_are_languages: card.label == LabelKind::Lang,
            add_special_tokens: card.add_special_tokens,
            max_len: card.max_len,
        })
    }

    /// Class logits `[batch, classes]` for `ids` (`[batch, seq]`, u32) with an optional `mask`
    /// (1 for real tokens).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let ids = ids.to_device(&self.device)?;
        let mask = mask.map(|m| m.to_device(&self.device)).transpose()?;
        Ok(self.loaded.model.forward(&ids, mask.as_ref())?)
    }
}
