//! A transformer encoder layer, post-norm (BERT, PyTorch's default) or pre-norm.

use candle_core::{DType, Module, Tensor};
use ferry_kernels::{EncoderLayerParams, EncoderLayerSpec};
use serde::{Deserialize, Serialize};

use super::{Activation, Builder, LayerNorm, Linear, MultiheadAttention};
use crate::Result;

/// The shape of one encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EncoderLayerConfig {
    /// Model width.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub ff: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Normalize before each block (pre-norm) instead of after (post-norm).
    pub norm_first: bool,
    /// Layer-norm epsilon.
    pub eps: f64,
}

/// Self-attention then feed-forward, each with a residual connection and a layer norm.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    attn: MultiheadAttention,
    norm1: LayerNorm,
    linear1: Linear,
    linear2: Linear,
    norm2: LayerNorm,
    activation: Activation,
    norm_first: bool,
}

impl EncoderLayer {
    /// A layer with PyTorch `nn.TransformerEncoderLayer` names under `prefix`
    /// (`self_attn.*`, `linear1`, `linear2`, `norm1`, `norm2`).
    pub fn new(b: &mut Builder<'_>, prefix: &str, cfg: &EncoderLayerConfig) -> Result<Self> {
        Ok(EncoderLayer {
            attn: MultiheadAttention::new(b, &format!("{prefix}.self_attn"), cfg.dim, cfg.heads)?,
            linear1: Linear::new(b, &format!("{prefix}.linear1"), cfg.dim, cfg.ff)?,
            linear2: Linear::new(b, &format!("{prefix}.linear2"), cfg.ff, cfg.dim)?,
            norm1: LayerNorm::new(b, &format!("{prefix}.norm1"), cfg.dim, cfg.eps)?,
            norm2: LayerNorm::new(b, &format!("{prefix}.norm2"), cfg.dim, cfg.eps)?,
            activation: cfg.activation,
            norm_first: cfg.norm_first,
        })
    }

    /// A post-norm layer over existing parts (BERT's names differ from PyTorch's).
    pub fn from_parts(
        attn: MultiheadAttention,
        norm1: LayerNorm,
        linear1: Linear,
        linear2: Linear,
        norm2: LayerNorm,
        activation: Activation,
    ) -> Self {
        EncoderLayer {
            attn,
            norm1,
            linear1,
            linear2,
            norm2,
            activation,
            norm_first: false,
        }
    }

    /// The layer as one op, or `None` where that does not apply (a projection without a
    /// bias, two different layer-norm epsilons, or see [`ferry_kernels::encoder_layer`]).
    fn fused(&self, x: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Option<Tensor>> {
        // Checked first: elsewhere, gathering BERT's separate projections would be wasted.
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let ((in_w, in_b), (out_w, out_b)) = self.attn.projections()?;
        let ((l1_w, l1_b), (l2_w, l2_b)) = (self.linear1.parts(), self.linear2.parts());
        let (g1, b1, eps) = self.norm1.parts();
        let (g2, b2, eps2) = self.norm2.parts();
        let (Some(in_b), Some(out_b), Some(l1_b), Some(l2_b)) = (in_b, out_b, l1_b, l2_b) else {
            return Ok(None);
        };
        if eps != eps2 {
            return Ok(None);
        }
        let params = EncoderLayerParams {
            in_proj: (&in_w, &in_b),
            out_proj: (&out_w, &out_b),
            norm1: (g1, b1),
            linear1: (&l1_w, &l1_b),
            linear2: (&l2_w, &l2_b),
            norm2: (g2, b2),
        };
        let spec = EncoderLayerSpec {
            heads: self.attn.heads(),
            activation: self.activation,
            norm_first: self.norm_first,
            eps,
        };
        ferry_kernels::encoder_layer(x, &params, &spec, bias)
    }

    fn ff(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.linear2
            .forward(&self.linear1.forward_act(x, self.activation)?)
    }

    /// `x`: `[batch, seq, dim]`; `bias`: see [`super::key_padding_bias`]. On CPU in f32 the
    /// whole layer runs as one op ([`ferry_kernels::encoder_layer`]), else from its parts;
    /// both compute the same function.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        if let Some(y) = self.fused(x, bias)? {
            return Ok(y);
        }
        if self.norm_first {
            let x = (x + self.attn.forward(&self.norm1.forward(x)?, bias)?)?;
            &x + self.ff(&self.norm2.forward(&x)?)?
        } else {
            let x = self
                .norm1
                .forward_residual(x, &self.attn.forward(x, bias)?)?;
            self.norm2.forward_residual(&x, &self.ff(&x)?)
        }
    }
}
