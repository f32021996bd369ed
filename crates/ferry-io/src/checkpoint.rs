//! One view over every format: an ordered list of named tensors plus metadata. Opening one
//! (detecting the format, resolving folders and hub ids) is [`crate::open`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::meta::Metadata;
use crate::tensor::TensorEntry;

/// The container format of a checkpoint, detected from the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `torch.save` zip archive (torch >= 1.6), `.pth` / `.bin` / `.pt`.
    PytorchZip,
    /// `torch.save` legacy non-zip stream (torch < 1.6 or `_use_new_zipfile_serialization=False`).
    PytorchLegacy,
    /// `torch.jit.save` archive.
    Torchscript,
    /// One `.safetensors` file.
    Safetensors,
    /// Several safetensors shards with a `*.safetensors.index.json`.
    SafetensorsSharded,
    /// Several PyTorch shards with a `pytorch_model.bin.index.json`.
    PytorchSharded,
    /// GGUF v1 to v3.
    Gguf,
    /// One NumPy `.npy` array.
    Npy,
    /// A NumPy `.npz` archive.
    Npz,
}

impl Format {
    /// Short lower-case name (`pytorch-zip`, `safetensors`...).
    pub fn name(self) -> &'static str {
        match self {
            Format::PytorchZip => "pytorch-zip",
            Format::PytorchLegacy => "pytorch-legacy",
            Format::Torchscript => "torchscript",
            Format::Safetensors => "safetensors",
            Format::SafetensorsSharded => "safetensors-sharded",
            Format::PytorchSharded => "pytorch-sharded",
            Format::Gguf => "gguf",
            Format::Npy => "npy",
            Format::Npz => "npz",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A checkpoint opened for reading. Tensor bytes stay on disk (mapped) until asked for.
pub struct Checkpoint {
    /// The detected format.
    pub format: Format,
    /// The file (or index file) that was opened.
    pub path: PathBuf,
    /// Tensors in file order.
    pub tensors: Vec<TensorEntry>,
    /// Non-tensor values: format metadata, hyper-parameters, counters.
    pub metadata: Metadata,
    /// Files that travel with the weights (the model folder's `config.json`, `tokenizer.json`...).
    pub companions: Vec<PathBuf>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("format", &self.format)
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("metadata", &self.metadata.len())
            .finish()
    }
}

impl Checkpoint {
    /// The companion file called `name` (`config.json`, `tokenizer.json`...), if it travels
    /// with the checkpoint.
    pub fn companion(&self, name: &str) -> Option<&PathBuf> {
        self.companions
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == name))
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Total number of elements over all tensors.
    pub fn param_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel()).sum()
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes()).sum()
    }

    /// Groups of tensors that share one storage (tied weights), each in file order.
    /// Only groups of two or more are returned.
    pub fn tied_groups(&self) -> Vec<Vec<String>> {
        let mut by_key: BTreeMap<(&Path, &str), Vec<String>> = BTreeMap::new();
        for t in &self.tensors {
            if let Some(k) = &t.storage_key {
                by_key
                    .entry((t.file.as_ref(), k.as_str()))
                    .or_default()
                    .push(t.name.clone());
            }
        }
        let mut groups: Vec<Vec<String>> = by_key.into_values().filter(|g| g.len() > 1).collect();
        groups.sort();
        groups
    }

    /// Checks every tensor's bounds against its storage without reading data.
    pub fn validate(&self) -> Result<()> {
        self.tensors.iter().try_for_each(|t| t.validate())
    }
}
