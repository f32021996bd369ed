//! llama.cpp's tensor names and layouts for the architectures whose GGUF files ferry writes and
//! reads as a model (not only as tensors): the table of llama.cpp's `convert_hf_to_gguf.py` and
//! gguf-py's `tensor_mapping.py`, the rotary Q/K row permutation (`LlamaModel.permute`), the
//! rows llama.cpp cuts off (RoBERTa's first `pad_token_id + 1` positions), and the tensors
//! llama.cpp leaves out (rotary `inv_freq`, `position_ids`, a tied output head, pooler and
//! pretraining heads).
//!
//! The same table read backwards turns such a GGUF into Hugging Face names and layouts, which
//! is what transformers loads and what ferry's runtime runs.

use serde::Serialize;
use serde_json::Value;

use crate::meta::{MetaValue, Metadata};

/// An architecture family with its own llama.cpp tensor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama, Mistral, SmolLM2 (GGUF `llama`): rotary Q/K rows permuted.
    Llama,
    /// Qwen2 (GGUF `qwen2`): Llama's names plus Q/K/V biases, no permutation.
    Qwen2,
    /// BERT-family encoders (GGUF `bert`): BERT, and DistilBERT, RoBERTa and XLM-RoBERTa,
    /// which llama.cpp writes as `bert` too (their Hugging Face names are a [`Variant`]).
    Bert,
}

impl Family {
    /// The family of a Hugging Face `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "llama" | "mistral" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "bert" | "distilbert" | "xlm-roberta" | "roberta" => Some(Family::Bert),
            _ => None,
        }
    }

    /// The family of a GGUF `general.architecture`.
    pub fn from_gguf_arch(arch: &str) -> Option<Family> {
        match arch {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "bert" => Some(Family::Bert),
            _ => None,
        }
    }

    /// `general.architecture` as llama.cpp writes it.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Bert => "bert",
        }
    }
}

/// Which Hugging Face model's names a layout reads when a llama.cpp family takes several
/// (`convert_hf_to_gguf.py`'s `DistilBertModel`, `RobertaModel` and `XLMRobertaModel` write
/// `bert`). A GGUF read back gets the family's own names ([`Variant::Plain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The family's own names.
    #[default]
    Plain,
    /// DistilBERT: `[distilbert.]transformer.layer.N.{attention.q_lin, sa_layer_norm,
    /// ffn.lin1, ...}` (gguf-py's `tensor_mapping.py` "distillbert" entries), no token types,
    /// its masked-LM head (`vocab_*`) left out.
    #[serde(rename = "distilbert")]
    DistilBert,
    /// RoBERTa and XLM-RoBERTa: BERT's names under `[roberta.]`; the first `position_offset`
    /// rows of `position_embeddings` (`pad_token_id + 1`: transformers counts positions from
    /// there) are cut off, so llama.cpp's positions start at 0 (`_position_offset`).
    Roberta {
        /// Leading position rows llama.cpp leaves out.
        position_offset: usize,
    },
}

impl Variant {
    /// Whether this is the family's own naming (left out of reports).
    pub fn is_plain(&self) -> bool {
        *self == Variant::Plain
    }

    /// The prefix a task model's checkpoint stores the encoder under (BERT's `bert.` is
    /// stripped for every variant, as `BertModel` does after its subclasses).
    fn prefix(self) -> Option<&'static str> {
        match self {
            Variant::Plain => None,
            Variant::DistilBert => Some("distilbert."),
            Variant::Roberta { .. } => Some("roberta."),
        }
    }
}

/// A model's naming and layout facts: enough to rename and permute every tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArchLayout {
    /// The family.
    pub family: Family,
    /// Attention heads (rows of Q are permuted per head).
    pub n_head: usize,
    /// Key/value heads (rows of K are permuted per KV head).
    pub n_head_kv: usize,
    /// Whether the output head shares the token embedding (`tie_word_embeddings`).
    pub tied: bool,
    /// Whose Hugging Face names (DistilBERT's, RoBERTa's) when not the family's own.
    #[serde(skip_serializing_if = "Variant::is_plain")]
    pub variant: Variant,
}

impl ArchLayout {
    /// From a Hugging Face `config.json`; `None` for a family ferry does not map.
    pub fn from_config(cfg: &Value) -> Option<ArchLayout> {
        let model_type = cfg.get("model_type")?.as_str()?;
        let family = Family::from_model_type(model_type)?;
        let variant = match model_type {
            "distilbert" => Variant::DistilBert,
            // transformers' RoBERTa configs default `pad_token_id` to 1.
            "xlm-roberta" | "roberta" => Variant::Roberta {
                position_offset: cfg
                    .get("pad_token_id")
                    .and_then(Value::as_u64)
                    .map_or(1, |p| p as usize)
                    .checked_add(1)?,
            },
            _ => Variant::Plain,
        };
        // DistilBERT spells it `n_heads`.
        let n_head = cfg
            .get("num_attention_heads")
            .or_else(|| cfg.get("n_heads"))?
            .as_u64()? as usize;
        let n_head_kv = cfg
            .get("num_key_value_heads")
            .and_then(Value::as_u64)
            .map_or(n_head, |v| v as usize);
        // transformers' default is tied for BERT (its decoder shares the embedding) and untied
        // for Llama and Qwen2 unless the config says otherwise.
        let tied = cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(family == Family::Bert);
        (n_head > 0 && n_head_kv > 0).then_some(ArchLayout {
            family,
            n_head,
            n_head_kv,
            tied,
            variant,
        })
    }

    /// From a GGUF's metadata (`general.architecture`, `{arch}.attention.head_count[_kv]`);
    /// `tied` is true when the file has no `output.weight`.
    pub fn from_gguf(meta: &Metadata, has_output: bool) -> Option<ArchLayout> {
        let arch = meta.get("general.architecture")?.as_str()?;
        let family = Family::from_gguf_arch(arch)?;
        let n_head = meta
            .get(&format!("{arch}.attention.head_count"))?
            .as_u64()? as usize;
        let n_head_kv = meta
            .get(&format!("{arch}.attention.head_count_kv"))
            .and_then(MetaValue::as_u64)
            .map_or(n_head, |v| v as usize);
        (n_head > 0 && n_head_kv > 0).then_some(ArchLayout {
            family,
            n_head,
            n_head_kv,
            tied: !has_output || family == Family::Bert,
            variant: Variant::Plain,
        })
    }
}

/// The rotary Q/K row order change: rows of each head are reordered so that llama.cpp's
/// interleaved rotary embedding computes what Hugging Face's half-split one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowPermutation {
    /// Heads the rows split into (attention heads for Q, KV heads for K).
    pub heads: usize,
    /// `false`: Hugging Face to llama.cpp (`LlamaModel.permute`); `true`: back.
    pub inverse: bool,
}

impl RowPermutation {
    /// The source row that lands at `row`, for `rows` rows in all.
    fn source_row(&self, row: usize, rows: usize) -> usize {
        let head_dim = rows / self.heads;
        let half = head_dim / 2;
        let (h, r) = (row / head_dim, row % head_dim);
        let within = if self.inverse {
            // HF row (i, j) = i * half + j was llama.cpp row 2 j + i.
            let (i, j) = (r / half, r % half);
            2 * j + i
        } else {
            // llama.cpp row 2 j + i comes from HF row i * half + j.
            let (j, i) = (r / 2, r % 2);
            i * half + j
        };
        h * head_dim + within
    }

    /// Checks that `rows` rows split into whole heads of an even size.
    pub fn check(&self, rows: usize) -> std::result::Result<(), String> {
        if rows == 0
            || self.heads == 0
            || !rows.is_multiple_of(self.heads)
            || !(rows / self.heads).is_multiple_of(2)
        {
            return Err(format!(
                "{rows} rows do not split into {} heads of an even size (rotary Q/K permutation)",
                self.heads
            ));
        }
        Ok(())
    }

    /// Reorders the rows of `data` (`rows` rows of equal byte length, any element type,
    /// GGML blocks included since they never cross a row).
    pub fn apply(&self, data: &[u8], rows: usize) -> std::result::Result<Vec<u8>, String> {
        self.check(rows)?;
        if !data.len().is_multiple_of(rows) {
            return Err(format!(
                "{} bytes do not split into {rows} rows",
                data.len()
            ));
        }
        let row_bytes = data.len() / rows;
        let mut out = Vec::with_capacity(data.len());
        for row in 0..rows {
            let s = self.source_row(row, rows) * row_bytes;
            out.extend_from_slice(&data[s..s + row_bytes]);
        }
        Ok(out)
    }
}

/// Which way names go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Hugging Face names and layouts to llama.cpp's.
    ToGguf,
    /// llama.cpp's names and layouts to Hugging Face's.
    ToHf,
}

/// What becomes of one tensor name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// Renamed (possibly to the same name), with the row permutation to apply, if any.
    To(String, Option<RowPermutation>),
    /// Renamed, with this many leading rows (of the first dimension) left out.
    Trimmed(String, usize),
    /// Left out of the output, with the reason.
    Drop(String),
    /// Not in llama.cpp's table for this architecture: kept as it is.
    Unknown,
}

/// Which attention projection a block tensor is, for the permutation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rope {
    None,
    Q,
    K,
}

/// Whole-model tensors: (Hugging Face stem, llama.cpp stem).
fn globals(family: Family) -> &'static [(&'static str, &'static str)] {
    match family {
        Family::Llama | Family::Qwen2 => &[
            ("model.embed_tokens", "token_embd"),
            ("model.norm", "output_norm"),
            ("lm_head", "output"),
        ],
        Family::Bert => &[
            ("embeddings.word_embeddings", "token_embd"),
            ("embeddings.token_type_embeddings", "token_types"),
            ("embeddings.position_embeddings", "position_embd"),
            ("embeddings.LayerNorm", "token_embd_norm"),
        ],
    }
}

/// Per-block tensors: (Hugging Face stem after the block prefix, llama.cpp stem, rope role).
fn block_table(family: Family) -> &'static [(&'static str, &'static str, Rope)] {
    match family {
        Family::Llama | Family::Qwen2 => &[
            ("input_layernorm", "attn_norm", Rope::None),
            ("self_attn.q_proj", "attn_q", Rope::Q),
            ("self_attn.k_proj", "attn_k", Rope::K),
            ("self_attn.v_proj", "attn_v", Rope::None),
            ("self_attn.o_proj", "attn_output", Rope::None),
            ("post_attention_layernorm", "ffn_norm", Rope::None),
            ("mlp.gate_proj", "ffn_gate", Rope::None),
            ("mlp.up_proj", "ffn_up", Rope::None),
            ("mlp.down_proj", "ffn_down", Rope::None),
        ],
        Family::Bert => &[
            ("attention.self.query", "attn_q", Rope::None),
            ("attention.self.key", "attn_k", Rope::None),
            ("attention.self.value", "attn_v", Rope::None),
            ("attention.output.dense", "attn_output", Rope::None),
            ("attention.output.LayerNorm", "attn_output_norm", Rope::None),
            ("intermediate.dense", "ffn_up", Rope::None),
            ("output.dense", "ffn_down", Rope::None),
            ("output.LayerNorm", "layer_output_norm", Rope::None),
        ],
    }
}

/// DistilBERT's per-block tensors (after `transformer.layer.N.`), with BERT's llama.cpp stems
/// (gguf-py's `tensor_mapping.py`, "distillbert").
const DISTILBERT_BLOCK: [(&str, &str); 8] = [
    ("attention.q_lin", "attn_q"),
    ("attention.k_lin", "attn_k"),
    ("attention.v_lin", "attn_v"),
    ("attention.out_lin", "attn_output"),
    ("sa_layer_norm", "attn_output_norm"),
    ("ffn.lin1", "ffn_up"),
    ("ffn.lin2", "ffn_down"),
    ("output_layer_norm", "layer_output_norm"),
];

fn hf_block_prefix(family: Family) -> &'static str {
    match family {
        Family::Llama | Family::Qwen2 => "model.layers.",
        Family::Bert => "encoder.layer.",
    }
}

/// Splits `name` into (stem, suffix) at its last `.weight`/`.bias` (or old `.gamma`/`.beta`).
fn split_suffix(name: &str) -> Option<(&str, &'static str)> {
    for (s, out) in [
        (".weight", ".weight"),
        (".bias", ".bias"),
        (".gamma", ".weight"),
        (".beta", ".bias"),
    ] {
        if let Some(stem) = name.strip_suffix(s) {
            return Some((stem, out));
        }
    }
    None
}

/// `N.rest` -> (N, rest).
fn split_block(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

impl ArchLayout {
    fn permutation(&self, rope: Rope, direction: Direction) -> Option<RowPermutation> {
        if self.family != Family::Llama {
            return None;
        }
        let heads = match rope {
            Rope::None => return None,
            Rope::Q => self.n_head,
            Rope::K => self.n_head_kv,
        };
        Some(RowPermutation {
            heads,
            inverse: direction == Direction::ToHf,
        })
    }

    /// What becomes of the tensor `name` going `direction`.
    pub fn map(&self, name: &str, direction: Direction) -> Mapped {
        match direction {
            Direction::ToGguf => self.gguf_name(name),
            Direction::ToHf => self.hf_name(name),
        }
    }

    fn gguf_name(&self, name: &str) -> Mapped {
        if name.ends_with("rotary_emb.inv_freq") || name.ends_with("position_ids") {
            return Mapped::Drop(
                "a buffer computed at load time; llama.cpp does not store it".into(),
            );
        }
        // Checkpoints saved from a task model carry the encoder under `bert.` (`distilbert.`,
        // `roberta.`): convert_hf_to_gguf.py strips the variant's prefix, then BERT's.
        let bare = match self.family {
            Family::Bert => {
                let n = self
                    .variant
                    .prefix()
                    .and_then(|p| name.strip_prefix(p))
                    .unwrap_or(name);
                n.strip_prefix("bert.").unwrap_or(n)
            }
            _ => name,
        };
        if self.family == Family::Bert {
            if bare.starts_with("pooler.") || bare.starts_with("cls.") {
                // convert_hf_to_gguf.py: "we are only using BERT for embeddings"; llama.cpp
                // refuses a file with tensors it does not expect.
                return Mapped::Drop(
                    "a pretraining or pooler head; llama.cpp's BERT is an embedding model".into(),
                );
            }
            if self.variant == Variant::DistilBert && bare.starts_with("vocab_") {
                // DistilBertModel: "These layers act as MLM head, so we don't need them".
                return Mapped::Drop(
                    "DistilBERT's masked-LM head; llama.cpp's BERT is an embedding model".into(),
                );
            }
        }
        let Some((stem, suffix)) = split_suffix(bare) else {
            return Mapped::Unknown;
        };
        if self.tied && self.family != Family::Bert && stem == "lm_head" {
            return Mapped::Drop(
                "tied to the token embedding (tie_word_embeddings): llama.cpp reads token_embd"
                    .into(),
            );
        }
        if let Some((_, g)) = globals(self.family).iter().find(|(h, _)| *h == stem) {
            let out = format!("{g}{suffix}");
            return match self.variant {
                Variant::Roberta { position_offset }
                    if stem == "embeddings.position_embeddings" && position_offset > 0 =>
                {
                    Mapped::Trimmed(out, position_offset)
                }
                _ => Mapped::To(out, None),
            };
        }
        if self.variant == Variant::DistilBert {
            let Some((n, rest)) = stem
                .strip_prefix("transformer.layer.")
                .and_then(split_block)
            else {
                return Mapped::Unknown;
            };
            return match DISTILBERT_BLOCK.iter().find(|(h, _)| *h == rest) {
                Some((_, g)) => Mapped::To(format!("blk.{n}.{g}{suffix}"), None),
                None => Mapped::Unknown,
            };
        }
        let Some((n, rest)) = stem
            .strip_prefix(hf_block_prefix(self.family))
            .and_then(split_block)
        else {
            return Mapped::Unknown;
        };
        match block_table(self.family).iter().find(|(h, _, _)| *h == rest) {
            Some((_, g, rope)) => Mapped::To(
                format!("blk.{n}.{g}{suffix}"),
                self.permutation(*rope, Direction::ToGguf),
            ),
            None => Mapped::Unknown,
        }
    }

    fn hf_name(&self, name: &str) -> Mapped {
        let Some((stem, suffix)) = split_suffix(name) else {
            return Mapped::Unknown;
        };
        if let Some((h, _)) = globals(self.family).iter().find(|(_, g)| *g == stem) {
            return Mapped::To(format!("{h}{suffix}"), None);
        }
        let Some((n, rest)) = stem.strip_prefix("blk.").and_then(split_block) else {
            return Mapped::Unknown;
        };
        match block_table(self.family).iter().find(|(_, g, _)| *g == rest) {
            Some((h, _, rope)) => Mapped::To(
                format!("{}{n}.{h}{suffix}", hf_block_prefix(self.family)),
                self.permutation(*rope, Direction::ToHf),
            ),
            None => Mapped::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> ArchLayout {
        ArchLayout {
            family: Family::Llama,
            n_head: 9,
            n_head_kv: 3,
            tied: true,
            variant: Variant::Plain,
        }
    }

    #[test]
    fn llama_names_follow_llama_cpp_and_come_back() {
        let l = llama();
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            (
                "model.layers.3.input_layernorm.weight",
                "blk.3.attn_norm.weight",
            ),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.29.mlp.down_proj.weight",
                "blk.29.ffn_down.weight",
            ),
            (
                "model.layers.0.post_attention_layernorm.weight",
                "blk.0.ffn_norm.weight",
            ),
        ];
        for (hf, gg) in cases {
            assert_eq!(l.map(hf, Direction::ToGguf), Mapped::To(gg.into(), None));
            assert_eq!(l.map(gg, Direction::ToHf), Mapped::To(hf.into(), None));
        }
        let q = l.map("model.layers.1.self_attn.q_proj.weight", Direction::ToGguf);
        let perm = RowPermutation {
            heads: 9,
            inverse: false,
        };
        assert_eq!(q, Mapped::To("blk.1.attn_q.weight".into(), Some(perm)));
        let k = l.map("blk.1.attn_k.weight", Direction::ToHf);
        let perm = RowPermutation {
            heads: 3,
            inverse: true,
        };
        assert_eq!(
            k,
            Mapped::To("model.layers.1.self_attn.k_proj.weight".into(), Some(perm))
        );
        assert!(matches!(
            l.map("lm_head.weight", Direction::ToGguf),
            Mapped::Drop(_)
        ));
        assert!(matches!(
            l.map(
                "model.layers.0.self_attn.rotary_emb.inv_freq",
                Direction::ToGguf
            ),
            Mapped::Drop(_)
        ));
        assert_eq!(
            l.map("model.extra.weight", Direction::ToGguf),
            Mapped::Unknown
        );
        let untied = ArchLayout { tied: false, ..l };
        assert_eq!(
            untied.map("lm_head.weight", Direction::ToGguf),
            Mapped::To("output.weight".into(), None)
        );
    }

    #[test]
    fn bert_names_follow_llama_cpp() {
        let b = ArchLayout {
            family: Family::Bert,
            n_head: 12,
            n_head_kv: 12,
            tied: true,
            variant: Variant::Plain,
        };
        let cases = [
            ("embeddings.word_embeddings.weight", "token_embd.weight"),
            ("embeddings.LayerNorm.bias", "token_embd_norm.bias"),
            (
                "encoder.layer.5.attention.self.query.bias",
                "blk.5.attn_q.bias",
            ),
            (
                "encoder.layer.5.attention.output.LayerNorm.weight",
                "blk.5.attn_output_norm.weight",
            ),
            (
                "encoder.layer.0.output.dense.weight",
                "blk.0.ffn_down.weight",
            ),
            (
                "encoder.layer.0.output.LayerNorm.weight",
                "blk.0.layer_output_norm.weight",
            ),
        ];
        for (hf, gg) in cases {
            assert_eq!(b.map(hf, Direction::ToGguf), Mapped::To(gg.into(), None));
            assert_eq!(b.map(gg, Direction::ToHf), Mapped::To(hf.into(), None));
        }
        assert_eq!(
            b.map(
                "bert.encoder.layer.1.intermediate.dense.weight",
                Direction::ToGguf
            ),
            Mapped::To("blk.1.ffn_up.weight".into(), None)
        );
        assert!(matches!(
            b.map("embeddings.position_ids", Direction::ToGguf),
            Mapped::Drop(_)
        ));
        assert!(matches!(
            b.map("pooler.dense.weight", Direction::ToGguf),
            Mapped::Drop(_)
        ));
        assert!(matches!(
            b.map("cls.predictions.bias", Direction::ToGguf),
            Mapped::Drop(_)
        ));
    }

    /// DistilBERT and (XLM-)RoBERTa are written as llama.cpp's `bert`: DistilBERT's block
    /// names through tensor_mapping.py's entries, its MLM head dropped; RoBERTa's position
    /// rows before `pad_token_id + 1` cut off. Read back, they are BERT's names.
    #[test]
    fn distilbert_and_roberta_follow_llama_cpp() {
        let distil = ArchLayout::from_config(&serde_json::json!({
            "model_type": "distilbert", "n_heads": 4, "dim": 32
        }))
        .unwrap();
        assert_eq!(
            (distil.family, distil.variant, distil.n_head),
            (Family::Bert, Variant::DistilBert, 4)
        );
        for (hf, gg) in [
            ("embeddings.word_embeddings.weight", "token_embd.weight"),
            (
                "embeddings.position_embeddings.weight",
                "position_embd.weight",
            ),
            ("embeddings.LayerNorm.bias", "token_embd_norm.bias"),
            (
                "transformer.layer.0.attention.q_lin.weight",
                "blk.0.attn_q.weight",
            ),
            (
                "transformer.layer.1.attention.k_lin.bias",
                "blk.1.attn_k.bias",
            ),
            (
                "transformer.layer.1.attention.v_lin.weight",
                "blk.1.attn_v.weight",
            ),
            (
                "transformer.layer.1.attention.out_lin.weight",
                "blk.1.attn_output.weight",
            ),
            (
                "transformer.layer.0.sa_layer_norm.weight",
                "blk.0.attn_output_norm.weight",
            ),
            ("transformer.layer.5.ffn.lin1.weight", "blk.5.ffn_up.weight"),
            ("transformer.layer.5.ffn.lin2.bias", "blk.5.ffn_down.bias"),
            (
                "distilbert.transformer.layer.2.output_layer_norm.bias",
                "blk.2.layer_output_norm.bias",
            ),
        ] {
            assert_eq!(
                distil.map(hf, Direction::ToGguf),
                Mapped::To(gg.into(), None),
                "{hf}"
            );
        }
        for dropped in [
            "vocab_transform.weight",
            "vocab_layer_norm.bias",
            "distilbert.vocab_projector.bias",
            "embeddings.position_ids",
        ] {
            assert!(
                matches!(distil.map(dropped, Direction::ToGguf), Mapped::Drop(_)),
                "{dropped}"
            );
        }
        assert_eq!(
            distil.map(
                "transformer.layer.0.attention.extra.weight",
                Direction::ToGguf
            ),
            Mapped::Unknown
        );

        let xlmr = ArchLayout::from_config(&serde_json::json!({
            "model_type": "xlm-roberta", "num_attention_heads": 12, "pad_token_id": 1
        }))
        .unwrap();
        assert_eq!(xlmr.variant, Variant::Roberta { position_offset: 2 });
        assert_eq!(
            xlmr.map("embeddings.position_embeddings.weight", Direction::ToGguf),
            Mapped::Trimmed("position_embd.weight".into(), 2)
        );
        assert_eq!(
            xlmr.map(
                "roberta.encoder.layer.3.attention.self.query.weight",
                Direction::ToGguf
            ),
            Mapped::To("blk.3.attn_q.weight".into(), None)
        );
        assert_eq!(
            xlmr.map("embeddings.token_type_embeddings.weight", Direction::ToGguf),
            Mapped::To("token_types.weight".into(), None)
        );
        assert!(matches!(
            xlmr.map("roberta.pooler.dense.weight", Direction::ToGguf),
            Mapped::Drop(_)
        ));
        let roberta = ArchLayout::from_config(&serde_json::json!({
            "model_type": "roberta", "num_attention_heads": 12
        }))
        .unwrap();
        assert_eq!(roberta.variant, Variant::Roberta { position_offset: 2 });
        assert_eq!(Family::Bert.gguf_arch(), "bert");
        // A GGUF read back gets BERT's names, whatever it was written from.
        let back = ArchLayout {
            variant: Variant::Plain,
            ..xlmr
        };
        assert_eq!(
            back.map("blk.0.attn_output_norm.weight", Direction::ToHf),
            Mapped::To(
                "encoder.layer.0.attention.output.LayerNorm.weight".into(),
                None
            )
        );
    }

    /// The permutation is convert_hf_to_gguf.py's `reshape(h, 2, d/2).swapaxes(1, 2)`, and
    /// its inverse undoes it.
    #[test]
    fn permutation_matches_llama_cpp_and_inverts() {
        // 2 heads of 4 rows, one byte per row: HF rows [a0 a1 b0 b1] per head (halves a, b)
        // become [a0 b0 a1 b1].
        let hf: Vec<u8> = (0..8).collect();
        let p = RowPermutation {
            heads: 2,
            inverse: false,
        };
        let gg = p.apply(&hf, 8).unwrap();
        assert_eq!(gg, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let back = RowPermutation {
            heads: 2,
            inverse: true,
        }
        .apply(&gg, 8)
        .unwrap();
        assert_eq!(back, hf);
        // Rows of several bytes move whole.
        let wide: Vec<u8> = (0..24).collect();
        let moved = RowPermutation {
            heads: 1,
            inverse: false,
        }
        .apply(&wide, 4)
        .unwrap();
        assert_eq!(&moved[..12], &[0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]);
        assert!(RowPermutation {
            heads: 3,
            inverse: false
        }
        .apply(&hf, 8)
        .is_err());
    }
}
