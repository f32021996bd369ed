//! A BERT-family encoder (BERT, MiniLM, ...) with Hugging Face parameter names, plus a
//! classification head (`classifier.weight`/`bias`) for fine-tuning.

use std::path::{Path, PathBuf};

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};

use super::{pool, Pooling};
use crate::nn::{
    key_padding_bias, Activation, Builder, Embedding, EncoderLayer, LayerNorm, Linear,
    MultiheadAttention,
};
use crate::params::Init;
use crate::{Error, Result};

/// The `config.json` values the encoder needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Feed-forward activation name (`gelu` is the exact erf form).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Segment vocabulary.
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_types() -> usize {
    2
}

impl BertConfig {
    /// Reads `config.json` from a model folder (or the folder holding a weights file).
    pub fn load(path: &Path) -> Result<Self> {
        let file: PathBuf = if path.is_dir() {
            path.join("config.json")
        } else {
            path.with_file_name("config.json")
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let cfg: BertConfig = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(&file, format!("not a BERT config.json: {e}")))?;
        cfg.activation(&file)?;
        Ok(cfg)
    }

    fn activation(&self, file: &Path) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::malformed(
                file,
                format!("hidden_act {other:?} is not supported (gelu, relu)"),
            )),
        }
    }
}

/// The encoder and its head.
#[derive(Debug, Clone)]
pub struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    classifier: Linear,
    pooling: Pooling,
}

impl Bert {
    /// A new (randomly initialized) encoder with a head of `classes` outputs.
    pub fn new(
        b: &mut Builder<'_>,
        cfg: &BertConfig,
        pooling: Pooling,
        classes: usize,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || !d.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::Invalid(format!(
                "hidden_size {d} is not divisible by {} heads",
                cfg.num_attention_heads
            )));
        }
        let act = cfg.activation(Path::new("config.json"))?;
        let eps = cfg.layer_norm_eps;
        let emb = |b: &mut Builder<'_>, name: &str, n: usize| -> Result<Embedding> {
            Ok(Embedding::from_tensor(b.create(
                name,
                &[n, d],
                Init::Normal(0.02),
            )?))
        };
        let word = emb(b, "embeddings.word_embeddings.weight", cfg.vocab_size)?;
        let position = emb(
            b,
            "embeddings.position_embeddings.weight",
            cfg.max_position_embeddings,
        )?;
        let token_type = emb(
            b,
            "embeddings.token_type_embeddings.weight",
            cfg.type_vocab_size,
        )?;
        let emb_norm = LayerNorm::new(b, "embeddings.LayerNorm", d, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = Linear::new(b, &format!("{p}.attention.self.query"), d, d)?;
            let k = Linear::new(b, &format!("{p}.attention.self.key"), d, d)?;
            let v = Linear::new(b, &format!("{p}.attention.self.value"), d, d)?;
            let o = Linear::new(b, &format!("{p}.attention.output.dense"), d, d)?;
            let attn = MultiheadAttention::from_projections(q, k, v, o, cfg.num_attention_heads);
            let norm1 = LayerNorm::new(b, &format!("{p}.attention.output.LayerNorm"), d, eps)?;
            let l1 = Linear::new(
                b,
                &format!("{p}.intermediate.dense"),
                d,
                cfg.intermediate_size,
            )?;
            let l2 = Linear::new(b, &format!("{p}.output.dense"), cfg.intermediate_size, d)?;
            let norm2 = LayerNorm::new(b, &format!("{p}.output.LayerNorm"), d, eps)?;
            layers.push(EncoderLayer::from_parts(attn, norm1, l1, l2, norm2, act));
        }
        let classifier = Linear::new(b, "classifier", d, classes)?;
        Ok(Bert {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            classifier,
            pooling,
        })
    }

    /// The last layer's states `[batch, seq, hidden]` (segment ids all 0).
    pub fn hidden_states(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let seq = ids.dim(1)?;
        let max = self.position.weight().dim(0)?;
        if seq > max {
            candle_core::bail!(
                "input of {seq} tokens is longer than max_position_embeddings {max}; truncate it"
            );
        }
        let pos = self.position.weight().narrow(0, 0, seq)?;
        let ty = self.token_type.weight().narrow(0, 0, 1)?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&pos)?
            .broadcast_add(&ty)?;
        let mut x = self.emb_norm.forward(&x)?;
        let bias = mask.map(key_padding_bias).transpose()?;
        for layer in &self.layers {
            x = layer.forward(&x, bias.as_ref())?;
        }
        Ok(x)
    }

    /// Logits.
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let h = self.hidden_states(ids, mask)?;
        self.classifier.forward(&pool(&h, mask, self.pooling)?)
    }
}
