//! A checkpoint seen with another tool's tensor names and layouts: Hugging Face's for a
//! llama.cpp GGUF (what transformers and ferry's runtime load), llama.cpp's for a Hugging Face
//! folder (what llama.cpp loads). Renamed tensors keep their storage, as do trimmed ones (a
//! view starting further in); permuted ones produce their reordered bytes on demand, so
//! nothing is read before it is needed.

use std::sync::Arc;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, Format};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::gguf::names::{ArchLayout, Direction, Family, Mapped, RowPermutation, Variant};
use crate::meta::{MetaValue, Metadata};
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
    /// Renamed tensors whose leading rows were left out, by new name (RoBERTa's position rows
    /// before `pad_token_id + 1`, which llama.cpp does not store).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trimmed: Vec<(String, usize)>,
    /// Tensors the other side needs that the source lacks, made up, with the reason (a BERT
    /// GGUF without token types read back gets a zero token-type table).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<(String, String)>,
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
        trimmed: Vec::new(),
        added: Vec::new(),
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
            Mapped::Trimmed(name, rows) => {
                tensors.push(trimmed(t, name.clone(), rows)?);
                report.renamed.push((t.name.clone(), name.clone(), None));
                report.trimmed.push((name, rows));
            }
        }
    }
    if layout.family == Family::Bert && direction == Direction::ToHf {
        if let Some(t) = zero_token_types(ck, &tensors) {
            report.added.push((
                t.name.clone(),
                "llama.cpp adds no token-type embedding when the GGUF has none (DistilBERT); \
                 Hugging Face's BERT needs the table: zeros add nothing"
                    .into(),
            ));
            tensors.push(t);
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

/// `t` under `name` without its first `rows` rows: the same storage, viewed from further in.
fn trimmed(t: &TensorEntry, name: String, rows: usize) -> Result<TensorEntry> {
    let err = |m: String| Error::tensor(t.file.as_ref(), &t.name, m);
    let Some((&first, rest)) = t.shape.split_first().filter(|(&d, _)| d > rows) else {
        return Err(err(format!(
            "llama.cpp leaves out its first {rows} rows, but its shape is {:?}",
            t.shape
        )));
    };
    let layout = match &t.layout {
        Layout::Contiguous { offset } => {
            let row_elems = crate::tensor::numel(rest).unwrap_or(u64::MAX);
            let row_bytes = t
                .dtype
                .storage_bytes(row_elems)
                .ok_or_else(|| err(format!("rows of {row_elems} {} elements", t.dtype)))?;
            Layout::Contiguous {
                offset: offset + rows as u64 * row_bytes,
            }
        }
        Layout::Strided { offset, strides } => Layout::Strided {
            offset: offset + rows as u64 * strides.first().copied().unwrap_or(0),
            strides: strides.clone(),
        },
    };
    let mut shape = t.shape.clone();
    shape[0] = first - rows;
    let out = TensorEntry {
        name,
        dtype: t.dtype,
        shape,
        storage: t.storage.clone(),
        layout,
        // A slice is no longer the tensor its storage is shared with.
        storage_key: None,
        file: t.file.clone(),
    };
    out.validate()?;
    Ok(out)
}

/// How many token types a BERT-family GGUF has: `tokenizer.ggml.token_type_count`, which
/// llama.cpp sizes `token_types.weight` by (it refuses 0), else 2 (BERT's).
pub fn token_type_count(meta: &Metadata) -> usize {
    meta.get("tokenizer.ggml.token_type_count")
        .and_then(MetaValue::as_u64)
        .filter(|&n| n > 0)
        .map_or(2, |n| n as usize)
}

/// For a BERT GGUF read back without token types (DistilBERT's): a zero table of
/// [`token_type_count`] rows, which is what llama.cpp computes (it adds no type embedding).
fn zero_token_types(ck: &Checkpoint, tensors: &[TensorEntry]) -> Option<TensorEntry> {
    const NAME: &str = "embeddings.token_type_embeddings.weight";
    if tensors.iter().any(|t| t.name == NAME) {
        return None;
    }
    let word = tensors
        .iter()
        .find(|t| t.name == "embeddings.word_embeddings.weight")?;
    let hidden = *word.shape.last()?;
    let rows = token_type_count(&ck.metadata);
    let bytes = rows.checked_mul(hidden)?.checked_mul(4)?;
    Some(TensorEntry {
        name: NAME.into(),
        dtype: DType::F32,
        shape: vec![rows, hidden],
        storage: Storage::owned(vec![0; bytes]),
        layout: Layout::Contiguous { offset: 0 },
        storage_key: None,
        file: word.file.clone(),
    })
}

/// The llama.cpp `bert` keys `convert_hf_to_gguf.py` writes for a BERT-family folder that
/// ferry's generic `config.json` reading misses or gets wrong, set in `m` (already moved to
/// `bert.*`): DistilBERT's own hyper-parameter names (`dim`, `n_layers`, `n_heads`,
/// `hidden_dim`) and its fixed LayerNorm epsilon 1e-12 (`DistilBertModel`), RoBERTa's context
/// shortened by the position rows cut off (`max_position_embeddings -= _position_offset`),
/// non-causal attention (`BertModel`), and `tokenizer.ggml.token_type_count` as the rows of
/// `token_types.weight` (what llama.cpp checks; 1 without one, `type_vocab_size`'s default).
pub fn bert_gguf_metadata(
    m: &mut Metadata,
    layout: &ArchLayout,
    cfg: &serde_json::Value,
    ck: &Checkpoint,
) {
    if layout.family != Family::Bert {
        return;
    }
    let arch = layout.family.gguf_arch();
    let u = |k: &str| {
        cfg.get(k)
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    let set = |m: &mut Metadata, key: &str, v: MetaValue| {
        m.insert(format!("{arch}.{key}"), v);
    };
    match layout.variant {
        Variant::DistilBert => {
            for (key, name) in [
                ("embedding_length", "dim"),
                ("block_count", "n_layers"),
                ("attention.head_count", "n_heads"),
                ("feed_forward_length", "hidden_dim"),
            ] {
                if let Some(v) = u(name) {
                    set(m, key, MetaValue::U32(v));
                }
            }
            set(m, "attention.layer_norm_epsilon", MetaValue::F32(1e-12));
        }
        Variant::Roberta { position_offset } => {
            let offset = u32::try_from(position_offset).ok();
            let ctx = u("max_position_embeddings").zip(offset);
            if let Some(n) = ctx.and_then(|(n, off)| n.checked_sub(off)) {
                set(m, "context_length", MetaValue::U32(n));
            }
        }
        Variant::Plain => {}
    }
    set(m, "attention.causal", MetaValue::Bool(false));
    let types = ck
        .get("token_types.weight")
        .and_then(|t| t.shape.first().copied())
        .map_or(1, |n| n as u32);
    m.insert(
        "tokenizer.ggml.token_type_count".into(),
        MetaValue::U32(types),
    );
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
