//! Linear, embedding and layer-norm layers with PyTorch's parameter names and initialization.

use candle_core::{Module, Tensor};

use super::{Activation, Builder};
use crate::params::Init;
use crate::Result;

/// `y = x W^T + b`, `W` of shape `[out, in]` (PyTorch's `nn.Linear`).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `prefix.weight` and `prefix.bias`, Kaiming-uniform like PyTorch (U(+-1/sqrt(in))).
    pub fn new(b: &mut Builder<'_>, prefix: &str, inputs: usize, outputs: usize) -> Result<Self> {
        let bound = 1.0 / (inputs as f64).sqrt();
        let weight = b.create(
            &format!("{prefix}.weight"),
            &[outputs, inputs],
            Init::Uniform(bound),
        )?;
        let bias = b.create(&format!("{prefix}.bias"), &[outputs], Init::Uniform(bound))?;
        Ok(Linear {
            weight,
            bias: Some(bias),
        })
    }

    /// A layer over existing tensors.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// `act(x W^T + b)` in one fused op.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
        ferry_kernels::linear(x, &self.weight, self.bias.as_ref(), Some(act))
    }

    /// The weight and bias tensors.
    pub fn parts(&self) -> (Tensor, Option<Tensor>) {
        (self.weight.clone(), self.bias.clone())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ferry_kernels::linear(x, &self.weight, self.bias.as_ref(), None)
    }
}

/// A lookup table `[vocab, dim]` (PyTorch's `nn.Embedding`, N(0, 1) init).
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    /// `prefix.weight`.
    pub fn new(b: &mut Builder<'_>, prefix: &str, vocab: usize, dim: usize) -> Result<Self> {
        Ok(Embedding {
            weight: b.create(
                &format!("{prefix}.weight"),
                &[vocab, dim],
                Init::Normal(1.0),
            )?,
        })
    }

    /// A table over an existing tensor.
    pub fn from_tensor(weight: Tensor) -> Self {
        Embedding { weight }
    }

    /// The table.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Embedding {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        ferry_kernels::embedding(&self.weight, ids)
    }
}

/// Layer normalization with a backward pass ([`ferry_kernels::layer_norm`]).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// A layer over existing tensors.
    pub fn from_tensors(gamma: Tensor, beta: Tensor, eps: f64) -> Self {
        LayerNorm { gamma, beta, eps }
    }

    /// `prefix.weight` (ones) and `prefix.bias` (zeros).
    pub fn new(b: &mut Builder<'_>, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            gamma: b.create(&format!("{prefix}.weight"), &[dim], Init::Ones)?,
            beta: b.create(&format!("{prefix}.bias"), &[dim], Init::Zeros)?,
            eps,
        })
    }
}

impl LayerNorm {
    /// Gamma, beta and epsilon.
    pub fn parts(&self) -> (&Tensor, &Tensor, f64) {
        (&self.gamma, &self.beta, self.eps)
    }

    /// `LN(x + residual)` in one fused op.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        ferry_kernels::add_layer_norm(x, residual, &self.gamma, &self.beta, self.eps)
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ferry_kernels::layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}
