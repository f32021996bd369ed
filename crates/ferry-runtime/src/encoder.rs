//! BERT-family encoders (BERT, RoBERTa / XLM-RoBERTa, DistilBERT) over ferry's weights, with
//! every layer's hidden state available.
//!
//! **Split-encoder design.** The blocks are candle-transformers' own: its `BertEncoder` is
//! loaded once, then split into one single-layer `BertEncoder` per block (a clone whose `layers`
//! holds that block alone), so the hidden state after each block can be tapped without
//! re-writing the block. The embeddings are composed here from candle-nn's `embedding` and
//! `layer_norm`, because the families differ in position ids (BERT and DistilBERT count from 0,
//! RoBERTa from `pad_token_id + 1` over real tokens) and in token types (DistilBERT has none).
//! DistilBERT's block computes what BERT's does (post-LN attention and feed-forward), so it is
//! loaded through the same `BertEncoder`, its tensors served under BERT's names by
//! [`Weights::var_builder_renamed`] (errors still name DistilBERT's tensor).

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, Module, VarBuilder};
use candle_transformers::models::bert::{self, BertEncoder, HiddenAct};

use crate::activations::{token_flags, ActivationStats};
use crate::config::{EncoderConfig, EncoderFamily};
use crate::error::Result;
use crate::placement::Placement;
use crate::weights::Weights;

/// A loaded encoder.
pub struct Encoder {
    family: EncoderFamily,
    word: Embedding,
    position: Embedding,
    /// Token type 0's embedding `[hidden]` (every input is one segment), when the model has
    /// token types.
    token_type: Option<Tensor>,
    norm: LayerNorm,
    /// One single-layer `BertEncoder` per block, in order.
    layers: Vec<BertEncoder>,
    max_positions: usize,
    pad_id: u32,
    /// Where it runs and in what dtype (the whole encoder on one device).
    device: Device,
    dtype: DType,
    /// The blocks' weights (`layer.N.*` under BERT's names) and hyper-parameters, from which
    /// [`Encoder::forward_collecting`] composes the blocks it observes.
    blocks_vb: VarBuilder<'static>,
    bert: bert::Config,
    /// The observable blocks, loaded on the first [`Encoder::forward_collecting`].
    observed: OnceLock<Vec<ObservedLayer>>,
}

/// One BERT block composed from candle-nn's pieces, computing what candle-transformers'
/// `BertLayer` computes (the same ops in the same order), with every linear layer's input in
/// reach: its fields are private there, and calibration needs them.
struct ObservedLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

impl ObservedLayer {
    fn load(vb: VarBuilder, c: &bert::Config) -> candle_core::Result<ObservedLayer> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let att = vb.pp("attention");
        Ok(ObservedLayer {
            query: linear(h, h, att.pp("self").pp("query"))?,
            key: linear(h, h, att.pp("self").pp("key"))?,
            value: linear(h, h, att.pp("self").pp("value"))?,
            attn_out: linear(h, h, att.pp("output").pp("dense"))?,
            attn_norm: layer_norm(h, c.layer_norm_eps, att.pp("output").pp("LayerNorm"))?,
            up: linear(h, i, vb.pp("intermediate").pp("dense"))?,
            down: linear(i, h, vb.pp("output").pp("dense"))?,
            out_norm: layer_norm(h, c.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
        })
    }
}

/// What [`Encoder::forward`] returns.
pub struct EncoderOutput {
    /// The last hidden state `[batch, seq, hidden]`.
    pub hidden: Tensor,
    /// When asked for: `[embedding output, after block 0, ..., after block N-1]` (transformers'
    /// `output_hidden_states`), each `[batch, seq, hidden]`; empty otherwise.
    pub taps: Vec<Tensor>,
}

/// The checkpoint's prefix (`bert.`, `roberta.`, `distilbert.`) when its embeddings are stored
/// under it (a task model's checkpoint), else none (the base model saved alone).
fn prefix(w: &Weights, family: EncoderFamily) -> String {
    let p = family.name();
    if w.has(&format!("{p}.embeddings.word_embeddings.weight")) {
        format!("{p}.")
    } else {
        String::new()
    }
}

/// The DistilBERT tensor holding what BERT's block calls `name` (`encoder.layer.N.*`).
fn distilbert_name(prefix: &str, name: &str) -> String {
    const MAP: [(&str, &str); 8] = [
        ("attention.self.query.", "attention.q_lin."),
        ("attention.self.key.", "attention.k_lin."),
        ("attention.self.value.", "attention.v_lin."),
        ("attention.output.dense.", "attention.out_lin."),
        ("attention.output.LayerNorm.", "sa_layer_norm."),
        ("intermediate.dense.", "ffn.lin1."),
        ("output.dense.", "ffn.lin2."),
        ("output.LayerNorm.", "output_layer_norm."),
    ];
    let mapped = name
        .strip_prefix("encoder.layer.")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(n, tail)| {
            MAP.iter().find_map(|(bert, distil)| {
                let leaf = tail.strip_prefix(bert)?;
                Some(format!("transformer.layer.{n}.{distil}{leaf}"))
            })
        });
    format!("{prefix}{}", mapped.as_deref().unwrap_or(name))
}

impl Encoder {
    /// Loads the encoder described by `cfg` from `w` (Hugging Face names of its family, with or
    /// without the task model's `bert.` / `roberta.` / `distilbert.` prefix) on the device
    /// and in the dtype `place` gives its `embeddings` (an encoder is not split).
    pub fn load(w: &Arc<Weights>, cfg: &EncoderConfig, place: &Placement) -> Result<Encoder> {
        let c = &cfg.bert;
        let pre = prefix(w, cfg.family);
        let (device, dtype) = place.of("embeddings");
        let vb = w.var_builder_on(device, dtype);
        let emb = vb.pp(format!("{pre}embeddings"));
        let word = embedding(c.vocab_size, c.hidden_size, emb.pp("word_embeddings"))?;
        let position = embedding(
            c.max_position_embeddings,
            c.hidden_size,
            emb.pp("position_embeddings"),
        )?;
        let token_type = if cfg.family != EncoderFamily::DistilBert && c.type_vocab_size > 0 {
            let t = embedding(
                c.type_vocab_size,
                c.hidden_size,
                emb.pp("token_type_embeddings"),
            )?;
            Some(t.embeddings().get(0)?)
        } else {
            None
        };
        let norm = layer_norm(c.hidden_size, c.layer_norm_eps, emb.pp("LayerNorm"))?;
        let blocks_vb = match cfg.family {
            EncoderFamily::Bert | EncoderFamily::Roberta => vb.pp(format!("{pre}encoder")),
            EncoderFamily::DistilBert => w
                .var_builder_renamed(Arc::new(move |n| distilbert_name(&pre, n)), device, dtype)
                .pp("encoder"),
        };
        let blocks = BertEncoder::load(blocks_vb.clone(), c)?;
        let mut one = blocks.clone();
        one.layers.clear();
        let layers = blocks
            .layers
            .into_iter()
            .map(|layer| {
                let mut e = one.clone();
                e.layers = vec![layer];
                e
            })
            .collect();
        Ok(Encoder {
            family: cfg.family,
            word,
            position,
            token_type,
            norm,
            layers,
            max_positions: c.max_position_embeddings,
            pad_id: c.pad_token_id as u32,
            device: device.clone(),
            dtype,
            blocks_vb,
            bert: c.clone(),
            observed: OnceLock::new(),
        })
    }

    /// Position ids `[batch, seq]` or `[seq]` (u32) as transformers makes them: `0..seq` for
    /// BERT and DistilBERT; for RoBERTa `create_position_ids_from_input_ids`, real tokens
    /// (not `pad_token_id`, and inside `mask` when given) counted from `pad_token_id + 1`,
    /// padding at `pad_token_id`.
    fn position_ids(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let too_long = |last: usize| {
            candle_core::Error::Msg(format!(
                "{s} tokens need position {last}, but the model has {} positions",
                self.max_positions
            ))
        };
        if self.family != EncoderFamily::Roberta {
            if s > self.max_positions {
                return Err(too_long(s - 1).into());
            }
            return Ok(Tensor::arange(0u32, s as u32, ids.device())?);
        }
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mask = match mask {
            Some(m) => Some(m.to_dtype(DType::U32)?.to_vec2::<u32>()?),
            None => None,
        };
        let mut pos = Vec::with_capacity(b * s);
        for (r, row) in rows.iter().enumerate() {
            let mut n = self.pad_id;
            for (j, &id) in row.iter().enumerate() {
                let real = id != self.pad_id && mask.as_ref().is_none_or(|m| m[r][j] != 0);
                if real {
                    n += 1;
                    pos.push(n);
                } else {
                    pos.push(self.pad_id);
                }
            }
        }
        if let Some(&last) = pos
            .iter()
            .max()
            .filter(|&&m| m as usize >= self.max_positions)
        {
            return Err(too_long(last as usize).into());
        }
        Ok(Tensor::from_vec(pos, (b, s), ids.device())?)
    }

    /// The embedding output `[batch, seq, hidden]`: word + token type 0 (when the model has
    /// token types) + position, then LayerNorm, as transformers sums them.
    fn embed(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut x = self.word.forward(ids)?;
        if let Some(t) = &self.token_type {
            x = x.broadcast_add(t)?;
        }
        let pos = self.position.forward(&self.position_ids(ids, mask)?)?;
        x = x.broadcast_add(&pos)?;
        Ok(self.norm.forward(&x)?)
    }

    /// Runs `ids` (`[batch, seq]`, u32) with an optional `mask` (`[batch, seq]`, 1 for real
    /// tokens): the last hidden state and, when `taps`, every layer's hidden state (f32).
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        taps: bool,
    ) -> Result<EncoderOutput> {
        let ids = ids.to_device(&self.device)?;
        let mask = mask.map(|m| m.to_device(&self.device)).transpose()?;
        let mut h = self.embed(&ids, mask.as_ref())?;
        let ext = extended_mask(&ids, mask.as_ref(), self.dtype)?;
        let mut out = Vec::with_capacity(if taps { self.layers.len() + 1 } else { 0 });
        for layer in &self.layers {
            if taps {
                out.push(h.to_dtype(DType::F32)?);
            }
            h = layer.forward(&h, &ext)?;
        }
        let hidden = h.to_dtype(DType::F32)?;
        if taps {
            out.push(hidden.clone());
        }
        Ok(EncoderOutput { hidden, taps: out })
    }
}

impl Encoder {
    /// As [`Encoder::forward`] (no taps), adding every linear layer's input to `stats` (real
    /// tokens only) under BERT's names (`encoder.layer.N.attention.self.query.weight`, ...,
    /// `encoder.layer.N.output.dense.weight`) whatever the family. The blocks are composed
    /// here from the same weights and candle-nn ops as candle-transformers' (loaded once, on
    /// the first call: a second copy of the block weights while calibrating).
    pub fn forward_collecting(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        stats: &mut ActivationStats,
    ) -> Result<EncoderOutput> {
        let layers = match self.observed.get() {
            Some(l) => l,
            None => {
                let loaded = (0..self.layers.len())
                    .map(|i| {
                        ObservedLayer::load(self.blocks_vb.pp(format!("layer.{i}")), &self.bert)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                self.observed.get_or_init(|| loaded)
            }
        };
        let ids = ids.to_device(&self.device)?;
        let mask = mask.map(|m| m.to_device(&self.device)).transpose()?;
        let keep = token_flags(mask.as_ref())?;
        let mut h = self.embed(&ids, mask.as_ref())?;
        let ext = extended_mask(&ids, mask.as_ref(), self.dtype)?;
        let heads = self.bert.num_attention_heads;
        let head_size = self.bert.hidden_size / heads;
        for (i, l) in layers.iter().enumerate() {
            let mut observe = |stems: &[&str], x: &Tensor| -> Result<()> {
                let names: Vec<String> = stems
                    .iter()
                    .map(|s| format!("encoder.layer.{i}.{s}.weight"))
                    .collect();
                stats.record(&names, x, keep.as_deref())
            };
            observe(
                &[
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                ],
                &h,
            )?;
            // BertSelfAttention::forward.
            let split = |x: Tensor| -> candle_core::Result<Tensor> {
                let mut shape = x.dims().to_vec();
                shape.pop();
                shape.extend([heads, head_size]);
                x.reshape(shape.as_slice())?.transpose(1, 2)?.contiguous()
            };
            let q = split(l.query.forward(&h)?)?;
            let k = split(l.key.forward(&h)?)?;
            let v = split(l.value.forward(&h)?)?;
            let scores = (q.matmul(&k.t()?)? / (head_size as f64).sqrt())?;
            let probs =
                candle_nn::ops::softmax(&scores.broadcast_add(&ext)?, candle_core::D::Minus1)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .flatten_from(candle_core::D::Minus2)?;
            // BertSelfOutput, BertIntermediate, BertOutput.
            observe(&["attention.output.dense"], &ctx)?;
            let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &h)?)?;
            observe(&["intermediate.dense"], &a)?;
            let up = l.up.forward(&a)?;
            let act = match self.bert.hidden_act {
                HiddenAct::Gelu => up.gelu_erf()?,
                HiddenAct::GeluApproximate => up.gelu()?,
                HiddenAct::Relu => up.relu()?,
            };
            observe(&["output.dense"], &act)?;
            h = l.out_norm.forward(&(l.down.forward(&act)? + &a)?)?;
        }
        Ok(EncoderOutput {
            hidden: h.to_dtype(DType::F32)?,
            taps: Vec::new(),
        })
    }
}

/// The additive attention mask `[batch, 1, 1, seq]` in `dtype` that `BertEncoder` takes: 0
/// where `mask` is 1, the lowest finite value of `dtype` where it is 0 (candle-transformers'
/// `get_extended_attention_mask`, which is private, as transformers does); all zeros without
/// a mask.
fn extended_mask(ids: &Tensor, mask: Option<&Tensor>, dtype: DType) -> Result<Tensor> {
    let (b, s) = ids.dims2()?;
    // f32's lowest rounds to -inf in bf16 and f16; a fully masked row would then be NaN.
    let lowest = match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.389_531_4e38,
        _ => f32::MIN as f64,
    };
    Ok(match mask {
        Some(m) => {
            let m = m.to_dtype(DType::F32)?.reshape((b, 1, 1, s))?;
            (m.ones_like()? - m)?.affine(lowest, 0.0)?.to_dtype(dtype)?
        }
        None => Tensor::zeros((b, 1, 1, s), dtype, ids.device())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distilbert_tensors_are_served_under_bert_names() {
        for (bert, distil) in [
            (
                "encoder.layer.3.attention.self.query.weight",
                "transformer.layer.3.attention.q_lin.weight",
            ),
            (
                "encoder.layer.0.attention.output.LayerNorm.bias",
                "transformer.layer.0.sa_layer_norm.bias",
            ),
            (
                "encoder.layer.11.output.dense.weight",
                "transformer.layer.11.ffn.lin2.weight",
            ),
            (
                "encoder.layer.1.output.LayerNorm.gamma",
                "transformer.layer.1.output_layer_norm.gamma",
            ),
        ] {
            assert_eq!(distilbert_name("", bert), distil);
            assert_eq!(
                distilbert_name("distilbert.", bert),
                format!("distilbert.{distil}")
            );
        }
        assert_eq!(distilbert_name("", "embeddings.x"), "embeddings.x");
    }
}
