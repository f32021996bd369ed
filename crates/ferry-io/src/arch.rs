//! A checkpoint seen with another tool's tensor names and layouts: Hugging Face's for a
//! llama.cpp GGUF (what transformers and ferry's runtime load), llama.cpp's for a Hugging Face
//! folder (what llama.cpp loads). Renamed tensors keep their storage; permuted ones produce
//! their reordered bytes on demand, so nothing is read before it is needed.

use std::sync::Arc;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, Format};
use crate::error::{Error, Result};
use crate::formats::gguf::names::{ArchLayout, Direction, Mapped, RowPermutation};
use crate::tensor::{Layout, LazyBytes, Storage, TensorEntry};

/// What [`relayout`] did.
#[derive(Debug, Clone, Serialize)]
pub struct LayoutReport {
    /// The architecture's naming facts.
    pub layout: ArchLayout,
    /// Which way.
    pub direction: Direction,
    /// Tensors renamed, with the permutation applied, by (old, new) name.
    pub renamed: Vec<(String, String, Option<RowPermutation>)>,
    /// Tensors left out, with the reason.
    pub dropped: Vec<(String, String)>,
    /// Tensors not in llama.cpp's table, kept under their own names.
    pub unknown: Vec<String>,
}

/// The architecture layout a checkpoint has: from a GGUF's metadata, or from the
/// `config.json` that travels with a Hugging Face folder. `None` for other architectures.
pub fn detect(ck: &Checkpoint) -> Result<Option<ArchLayout>> {
    if ck.format == Format::Gguf {
        return Ok(ArchLayout::from_gguf(
            &ck.metadata,
            ck.get("output.weight").is_some(),
        ));
    }
    let Some(cfg) = ck.companion("config.json") else {
        return Ok(None);
    };
    let text = std::fs::read(cfg).map_err(|e| Error::io(cfg, e))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::malformed(cfg, format!("not valid JSON: {e}")))?;
    Ok(ArchLayout::from_config(&v))
}

/// Renames (and permutes) `ck`'s tensors going `direction`. Tensors already named for the
/// target side are unknown to the source side's table and stay as they are.
pub fn relayout(
    ck: &Checkpoint,
    layout: ArchLayout,
    direction: Direction,
) -> Result<(Checkpoint, LayoutReport)> {
    let mut report = LayoutReport {
        layout,
        direction,
        renamed: Vec::new(),
        dropped: Vec::new(),
        unknown: Vec::new(),
    };
    let mut tensors = Vec::with_capacity(ck.tensors.len());
    for t in &ck.tensors {
        match layout.map(&t.name, direction) {
            Mapped::Drop(why) => report.dropped.push((t.name.clone(), why)),
            Mapped::Unknown => {
                report.unknown.push(t.name.clone());
                tensors.push(t.clone());
            }
            Mapped::To(name, perm) => {
                let mut out = t.clone();
                out.name = name.clone();
                if let Some(p) = perm {
                    out = permuted(t, name.clone(), p)?;
                }
                report.renamed.push((t.name.clone(), name, perm));
                tensors.push(out);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = tensors.iter().find(|t| !seen.insert(t.name.as_str())) {
        return Err(Error::tensor(
            ck.path.as_path(),
            &dup.name,
            "two tensors map to this name; pass --keep-names to convert tensor by tensor",
        ));
    }
    let out = Checkpoint {
        format: ck.format,
        path: ck.path.clone(),
        tensors,
        metadata: ck.metadata.clone(),
        companions: ck.companions.clone(),
    };
    Ok((out, report))
}

/// `t` under `name` with its rows reordered by `perm` (read when its bytes are asked for).
fn permuted(t: &TensorEntry, name: String, perm: RowPermutation) -> Result<TensorEntry> {
    let rows = t.shape.first().copied().unwrap_or(0);
    perm.check(rows)
        .map_err(|m| Error::tensor(t.file.as_ref(), &t.name, m))?;
    let bytes = t.nbytes();
    Ok(TensorEntry {
        name,
        dtype: t.dtype,
        shape: t.shape.clone(),
        storage: Storage::Lazy(Arc::new(PermutedRows {
            src: t.clone(),
            perm,
            rows,
            bytes,
        })),
        layout: Layout::Contiguous { offset: 0 },
        storage_key: None,
        file: t.file.clone(),
    })
}

/// The bytes of a source tensor with rows reordered.
struct PermutedRows {
    src: TensorEntry,
    perm: RowPermutation,
    rows: usize,
    bytes: u64,
}

impl LazyBytes for PermutedRows {
    fn len(&self) -> u64 {
        self.bytes
    }

    fn load(&self) -> Result<Vec<u8>> {
        let data = self.src.data()?;
        self.perm
            .apply(&data, self.rows)
            .map_err(|m| Error::tensor(self.src.file.as_ref(), &self.src.name, m))
    }
}

/// A Hugging Face `config.json` for a llama.cpp GGUF of a known family, from its metadata (what
/// transformers' GGUF loader derives too), so a GGUF written back to safetensors loads in
/// transformers and in ferry's runtime. `None` when a key it needs is missing.
pub fn hf_config(ck: &Checkpoint, layout: &ArchLayout) -> Option<serde_json::Value> {
    use crate::formats::gguf::names::Family;
    use crate::meta::MetaValue;
    let arch = layout.family.gguf_arch();
    let m = &ck.metadata;
    let u = |k: &str| m.get(&format!("{arch}.{k}")).and_then(MetaValue::as_u64);
    let f = |k: &str| match m.get(&format!("{arch}.{k}")) {
        Some(MetaValue::F32(v)) => Some(*v as f64),
        Some(MetaValue::F64(v)) => Some(*v),
        _ => None,
    };
    // The first dimension of the first of `names` present (llama.cpp's or Hugging Face's name).
    let shape0 = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| ck.get(n))
            .and_then(|t| t.shape.first().map(|&d| d as u64))
    };
    let vocab = shape0(&[
        "token_embd.weight",
        "model.embed_tokens.weight",
        "embeddings.word_embeddings.weight",
    ])?;
    let (hidden, heads) = (u("embedding_length")?, u("attention.head_count")?);
    let common = serde_json::json!({
        "hidden_size": hidden,
        "intermediate_size": u("feed_forward_length")?,
        "num_hidden_layers": u("block_count")?,
        "num_attention_heads": heads,
        "max_position_embeddings": u("context_length")
            .or_else(|| shape0(&["position_embd.weight", "embeddings.position_embeddings.weight"]))
            .unwrap_or(2048),
        "vocab_size": vocab,
        "torch_dtype": "float32",
    });
    let mut cfg = common.as_object()?.clone();
    let extra = match layout.family {
        Family::Llama | Family::Qwen2 => {
            let arch_name = if layout.family == Family::Llama {
                "LlamaForCausalLM"
            } else {
                "Qwen2ForCausalLM"
            };
            serde_json::json!({
                "architectures": [arch_name],
                "model_type": arch,
                "head_dim": u("attention.key_length").unwrap_or(hidden / heads.max(1)),
                "num_key_value_heads": u("attention.head_count_kv").unwrap_or(heads),
                "rms_norm_eps": f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
                "rope_theta": f("rope.freq_base").unwrap_or(10_000.0),
                "hidden_act": "silu",
                "tie_word_embeddings": layout.tied,
                "bos_token_id": m.get("tokenizer.ggml.bos_token_id").and_then(MetaValue::as_u64),
                "eos_token_id": m.get("tokenizer.ggml.eos_token_id").and_then(MetaValue::as_u64),
            })
        }
        Family::Bert => serde_json::json!({
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "layer_norm_eps": f("attention.layer_norm_epsilon").unwrap_or(1e-12),
            "type_vocab_size": shape0(&["token_types.weight", "embeddings.token_type_embeddings.weight"]).unwrap_or(2),
            "pad_token_id": m.get("tokenizer.ggml.padding_token_id").and_then(MetaValue::as_u64).unwrap_or(0),
        }),
    };
    cfg.extend(extra.as_object()?.clone());
    Some(serde_json::Value::Object(cfg))
}
