//! What a model's units cost before anything is loaded ([`cost`]), and the plan ferry-device
//! makes from the costs ([`plan`]): the runtime's side of `ferry place`.
//!
//! Units: a decoder's `embed`, `layers.N` and `head` (final norm and output head; a tied head
//! holds its own copy of the embedding table, as the runtime loads it); an encoder's
//! `embeddings` and `layer.N` (run on one device); a ferry classifier's `model`; an ONNX
//! graph's nodes grouped by the block their name carries (see [`crate::graph`]).

use std::path::Path;

use candle_core::DType;
use ferry_device::{ArchShape, DeviceSpec, Keep, ModelCost, Plan, TensorCost, Unit};
use ferry_io::{Checkpoint, TensorEntry};

use crate::config::{ArchConfig, DecoderConfig, EncoderConfig};
use crate::error::{Error, Result};
use crate::weights::Kernels;

/// How the runtime holds one checkpoint tensor: a matrix that stays quantized (GGML type with
/// [`Kernels::Ggml`]) takes ferry's int8 repack on CPUs it runs on (`qgemm::available`; else its GGML blocks), and
/// its GGML blocks on accelerators; every other tensor is held in the compute dtype.
fn tensor_cost(t: &TensorEntry, name: &str, matrix: bool, kernels: Kernels) -> TensorCost {
    let numel = t.shape.iter().product::<usize>() as u64;
    let keep = match t.dtype.to_ggml() {
        Some(g)
            if t.dtype.is_quantized()
                && matrix
                && kernels == Kernels::Ggml
                && t.shape.len() == 2 =>
        {
            let stored = t.nbytes();
            let cpu = ferry_kernels::qgemm::available()
                .then(|| ferry_kernels::qgemm::packed_bytes(g, t.shape[0], t.shape[1]))
                .flatten()
                .map_or(stored, |b| b as u64);
            Keep::Fixed {
                cpu_bytes: cpu,
                accelerator_bytes: stored,
            }
        }
        _ => Keep::Compute,
    };
    TensorCost {
        name: name.to_string(),
        numel,
        keep,
    }
}

/// The units of the model at `path` and what each costs, read without loading weights.
pub fn cost(path: &Path, kernels: Kernels) -> Result<ModelCost> {
    if crate::classifier::is_classifier(path) {
        return classifier_cost(path);
    }
    if crate::graph::is_onnx(path) {
        return crate::graph::cost(path);
    }
    let r = crate::model::resolve(path)?;
    let arch = r.config.name();
    match &r.config {
        ArchConfig::Decoder(c) => decoder_cost(&r.ck, c, arch, kernels),
        ArchConfig::Encoder(c) => Ok(encoder_cost(&r.ck, c, arch, kernels)),
        other => Err(Error::Config {
            path: path.to_path_buf(),
            msg: format!("a {} is not loaded from a checkpoint", other.name()),
        }),
    }
}

/// The checkpoint's tensor `name`, which the model's config says it holds.
fn required_tensor<'a>(ck: &'a Checkpoint, name: &str) -> Result<&'a TensorEntry> {
    ck.get(name).ok_or_else(|| Error::Tensor {
        path: ck.path.clone(),
        tensor: name.to_string(),
        msg: "missing (the checkpoint does not hold the model its config describes)".into(),
    })
}

/// A decoder's units: `embed`, each `layers.N` (every tensor under `model.layers.N.`, its
/// matrices possibly kept quantized) and `head` (final norm and output head, the embedding
/// table when tied).
fn decoder_cost(
    ck: &Checkpoint,
    c: &DecoderConfig,
    arch: &str,
    kernels: Kernels,
) -> Result<ModelCost> {
    let embed = "model.embed_tokens.weight";
    let mut units = vec![Unit {
        name: "embed".into(),
        role: ferry_device::memory::Role::Embed,
        tensors: vec![tensor_cost(
            required_tensor(ck, embed)?,
            embed,
            false,
            kernels,
        )],
    }];
    for i in 0..c.layers {
        let prefix = format!("model.layers.{i}.");
        let tensors = ck
            .tensors
            .iter()
            .filter(|t| t.name.starts_with(&prefix))
            .map(|t| {
                let matrix = t.shape.len() == 2;
                tensor_cost(t, &t.name, matrix, kernels)
            })
            .collect();
        units.push(Unit {
            name: format!("layers.{i}"),
            role: ferry_device::memory::Role::Block,
            tensors,
        });
    }
    let head = if c.tied { embed } else { "lm_head.weight" };
    let norm = "model.norm.weight";
    units.push(Unit {
        name: "head".into(),
        role: ferry_device::memory::Role::Head,
        tensors: vec![
            tensor_cost(required_tensor(ck, norm)?, norm, false, kernels),
            tensor_cost(required_tensor(ck, head)?, head, true, kernels),
        ],
    });
    Ok(ModelCost {
        arch: arch.to_string(),
        units,
        shape: Some(ArchShape {
            hidden: c.hidden,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            intermediate: c.intermediate,
            vocab: Some(c.vocab),
            kv_cache: true,
            attention_f32: true,
        }),
        splittable: true,
        dtype: None,
    })
}

/// The block index in an encoder tensor's name (`encoder.layer.N.` or DistilBERT's
/// `transformer.layer.N.`), if it has one.
fn encoder_layer_of(name: &str) -> Option<usize> {
    let rest = name
        .split_once("encoder.layer.")
        .or_else(|| name.split_once("transformer.layer."))?
        .1;
    rest.split('.').next()?.parse().ok()
}

/// An encoder's units: `embeddings` and each `layer.N`, run on one device.
fn encoder_cost(ck: &Checkpoint, c: &EncoderConfig, arch: &str, kernels: Kernels) -> ModelCost {
    let b = &c.bert;
    let mut embeddings = Vec::new();
    let mut layers: Vec<Vec<TensorCost>> = vec![Vec::new(); b.num_hidden_layers];
    for t in &ck.tensors {
        // What the encoder loads: float weights of the embeddings and the blocks (not
        // a pooler, a task head or integer buffers such as position_ids).
        if !(t.dtype.is_float() || t.dtype.is_quantized()) {
            continue;
        }
        match encoder_layer_of(&t.name) {
            Some(i) if i < layers.len() => layers[i].push(tensor_cost(t, &t.name, false, kernels)),
            _ if t.name.contains("embeddings.") => {
                embeddings.push(tensor_cost(t, &t.name, false, kernels))
            }
            _ => {}
        }
    }
    let mut units = vec![Unit {
        name: "embeddings".into(),
        role: ferry_device::memory::Role::Embed,
        tensors: embeddings,
    }];
    units.extend(layers.into_iter().enumerate().map(|(i, tensors)| Unit {
        name: format!("layer.{i}"),
        role: ferry_device::memory::Role::Block,
        tensors,
    }));
    ModelCost {
        arch: arch.to_string(),
        units,
        shape: Some(ArchShape {
            hidden: b.hidden_size,
            heads: b.num_attention_heads,
            kv_heads: b.num_attention_heads,
            head_dim: b.hidden_size / b.num_attention_heads.max(1),
            intermediate: b.intermediate_size,
            vocab: None,
            kv_cache: false,
            attention_f32: false,
        }),
        splittable: false,
        dtype: None,
    }
}

/// A ferry classifier: one unit, its weights file's tensors, held in f32 (the classifier runs
/// in f32 on any device).
fn classifier_cost(dir: &Path) -> Result<ModelCost> {
    let config = crate::classifier::Classifier::config(dir)?;
    let file = ferry_train::model_dir::weights_file(dir).ok_or_else(|| Error::Config {
        path: dir.to_path_buf(),
        msg: "has no model.safetensors (or model.gguf/.npz/.pth)".into(),
    })?;
    let ck = Checkpoint::open(&file)?;
    Ok(ModelCost {
        arch: format!("{} classifier", config.arch),
        units: vec![Unit {
            name: "model".into(),
            role: ferry_device::memory::Role::Whole,
            tensors: ck
                .tensors
                .iter()
                .map(|t| TensorCost {
                    name: t.name.clone(),
                    numel: t.shape.iter().product::<usize>() as u64,
                    keep: Keep::F32,
                })
                .collect(),
        }],
        shape: None,
        splittable: false,
        dtype: Some(DType::F32),
    })
}

/// The bytes the f32 CPU reference of the model at `path` holds: what a verification loads
/// on the CPU beside a placed model ([`ferry_device::PlanOptions::held_on_cpu`]).
pub fn reference_bytes(path: &Path, kernels: Kernels) -> Result<u64> {
    Ok(cost(path, kernels)?.weight_bytes(DeviceSpec::CPU, DType::F32))
}

/// Plans the model at `path` on `inventory`'s devices as `opts` asks: its units' costs, and
/// where each goes.
pub fn plan(
    path: &Path,
    kernels: Kernels,
    inventory: &ferry_device::Inventory,
    opts: &ferry_device::PlanOptions,
) -> Result<(ModelCost, Plan)> {
    let cost = cost(path, kernels)?;
    if let (Some(forced), Some(own)) = (opts.policy.force, cost.dtype) {
        if forced != own {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "a {} computes in {} on every device: a compute dtype ({}) applies to \
                     Hugging Face folders, checkpoints and GGUF files (convert it instead)",
                    cost.arch,
                    own.as_str(),
                    forced.as_str()
                ),
            });
        }
    }
    let plan = Plan::new(&cost, inventory, opts)?;
    Ok((cost, plan))
}
