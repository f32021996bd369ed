//! Multi-head self-attention with PyTorch's packed `in_proj` parameters.

use candle_core::{DType, Module, Tensor};

use super::{Builder, Linear};
use crate::params::Init;
use crate::Result;

/// Self-attention over `[batch, seq, dim]` with `heads` heads.
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj: InProj,
    out_proj: Linear,
    heads: usize,
}

/// The query/key/value projection: packed (PyTorch) or three layers (BERT).
#[derive(Debug, Clone)]
enum InProj {
    Packed(Linear),
    Separate([Linear; 3]),
}

impl InProj {
    /// `[.., dim]` -> `[.., 3 dim]` as `[q | k | v]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            InProj::Packed(l) => l.forward(x),
            InProj::Separate(_) => {
                let (w, b) = self.packed()?;
                Linear::from_tensors(w, b).forward(x)
            }
        }
    }

    /// The packed weight `[3 dim, dim]` and bias. Separate weights are concatenated at every
    /// call: concatenating once at construction would freeze a copy that neither loading
    /// nor training updates.
    fn packed(&self) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        match self {
            InProj::Packed(l) => Ok(l.parts()),
            InProj::Separate(ls) => {
                let parts: Vec<(Tensor, Option<Tensor>)> = ls.iter().map(Linear::parts).collect();
                let w = Tensor::cat(&parts.iter().map(|p| &p.0).collect::<Vec<_>>(), 0)?;
                let b = match parts
                    .iter()
                    .map(|p| p.1.as_ref())
                    .collect::<Option<Vec<_>>>()
                {
                    Some(bs) => Some(Tensor::cat(&bs, 0)?),
                    None => None,
                };
                Ok((w, b))
            }
        }
    }
}

/// An additive attention bias `[batch, seq]` from a `[batch, seq]` mask (1 = token): 0 for
/// tokens, a large negative number for padding.
pub fn key_padding_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    (mask.to_dtype(DType::F32)? - 1.0)? * 1e9
}

impl MultiheadAttention {
    /// `prefix.in_proj_weight`/`_bias` (`[3 dim, dim]`, Xavier-uniform, zero bias) and
    /// `prefix.out_proj` (zero bias), as `nn.MultiheadAttention` initializes them.
    pub fn new(b: &mut Builder<'_>, prefix: &str, dim: usize, heads: usize) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(crate::Error::Invalid(format!(
                "model width {dim} is not divisible by {heads} heads"
            )));
        }
        let xavier = (6.0 / (dim + 3 * dim) as f64).sqrt();
        let w = b.create(
            &format!("{prefix}.in_proj_weight"),
            &[3 * dim, dim],
            Init::Uniform(xavier),
        )?;
        let bias = b.create(&format!("{prefix}.in_proj_bias"), &[3 * dim], Init::Zeros)?;
        let bound = 1.0 / (dim as f64).sqrt();
        let ow = b.create(
            &format!("{prefix}.out_proj.weight"),
            &[dim, dim],
            Init::Uniform(bound),
        )?;
        let ob = b.create(&format!("{prefix}.out_proj.bias"), &[dim], Init::Zeros)?;
        Ok(MultiheadAttention {
            in_proj: InProj::Packed(Linear::from_tensors(w, Some(bias))),
            out_proj: Linear::from_tensors(ow, Some(ob)),
            heads,
        })
    }

    /// Attention from separate query/key/value projections (BERT's layout).
    pub fn from_projections(q: Linear, k: Linear, v: Linear, out: Linear, heads: usize) -> Self {
        MultiheadAttention {
            in_proj: InProj::Separate([q, k, v]),
            out_proj: out,
            heads,
        }
    }

    /// Heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The packed query/key/value projection and the output projection, each as
    /// `(weight, bias)` (a missing bias is `None`).
    #[allow(clippy::type_complexity)]
    pub fn projections(
        &self,
    ) -> candle_core::Result<((Tensor, Option<Tensor>), (Tensor, Option<Tensor>))> {
        Ok((self.in_proj.packed()?, self.out_proj.parts()))
    }

    /// `x`: `[batch, seq, dim]`; `bias`: an additive `[batch, seq]` key bias or none.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let ctx = ferry_kernels::self_attention(&self.in_proj.forward(x)?, self.heads, bias)?;
        self.out_proj.forward(&ctx)
    }
}
