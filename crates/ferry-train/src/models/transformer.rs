//! A transformer encoder classifier: token + learned position embeddings, encoder layers
//! (PyTorch `nn.TransformerEncoder` names), pooling, a linear head.

use candle_core::{Module, Tensor};

use super::{pool, Arch, ModelSpec, Pooling, TransformerConfig};
use crate::nn::{key_padding_bias, Builder, Embedding, EncoderLayer, EncoderLayerConfig, Linear};
use crate::{Error, Result};

/// See [`super::ModelConfig::Transformer`].
#[derive(Debug, Clone)]
pub struct TransformerClassifier {
    tok_embed: Embedding,
    pos_embed: Embedding,
    layers: Vec<EncoderLayer>,
    head: Linear,
    pooling: Pooling,
    max_len: usize,
}

impl TransformerClassifier {
    /// A new model for `spec` (which must be a transformer).
    pub fn new(b: &mut Builder<'_>, spec: &ModelSpec, classes: usize) -> Result<Self> {
        let Arch::Transformer(TransformerConfig {
            layers,
            heads,
            dim,
            ff,
            max_len,
            activation,
            norm_first,
            pooling,
        }) = spec.arch
        else {
            return Err(Error::Invalid("not a transformer spec".into()));
        };
        let cfg = EncoderLayerConfig {
            dim,
            heads,
            ff,
            activation,
            norm_first,
            eps: 1e-5,
        };
        let tok_embed = Embedding::new(b, "tok_embed", spec.vocab_size, dim)?;
        let pos_embed = Embedding::new(b, "pos_embed", max_len, dim)?;
        let layers = (0..layers)
            .map(|i| EncoderLayer::new(b, &format!("encoder.layers.{i}"), &cfg))
            .collect::<Result<Vec<_>>>()?;
        let head = Linear::new(b, "head", dim, classes)?;
        Ok(TransformerClassifier {
            tok_embed,
            pos_embed,
            layers,
            head,
            pooling,
            max_len,
        })
    }

    /// Logits for `ids` with padding `mask`.
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let seq = ids.dim(1)?;
        if seq > self.max_len {
            candle_core::bail!(
                "input of {seq} tokens is longer than the model's max_len {}; truncate it or raise max_len",
                self.max_len
            );
        }
        let mut x = ferry_kernels::embedding_with_positions(
            self.tok_embed.weight(),
            self.pos_embed.weight(),
            ids,
        )?;
        let bias = mask.map(key_padding_bias).transpose()?;
        for layer in &self.layers {
            x = layer.forward(&x, bias.as_ref())?;
        }
        self.head.forward(&pool(&x, mask, self.pooling)?)
    }
}
