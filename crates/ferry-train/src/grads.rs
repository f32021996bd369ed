//! Gradients of the trainable parameters: collection after backward, accumulation over
//! micro-batches, and the global L2 norm for clipping.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::host::{with_host_f32, CHUNK};

use crate::params::Params;
use crate::{Error, Result};

/// One gradient per parameter, in [`Params`] order (`None` for frozen parameters).
#[derive(Debug, Clone)]
pub struct Grads(pub Vec<Option<Tensor>>);

impl Grads {
    /// Runs backward from `loss` and collects the gradient of every trainable parameter.
    /// A trainable parameter that gets no gradient is an error naming it: training would
    /// silently leave it untouched.
    pub fn from_loss(params: &Params, loss: &Tensor) -> Result<Self> {
        let store = loss.backward()?;
        let mut out = Vec::with_capacity(params.len());
        for (name, var, trainable) in params.iter() {
            if !trainable {
                out.push(None);
                continue;
            }
            let g = store.get(var).ok_or_else(|| {
                Error::Invalid(format!(
                    "parameter {name} gets no gradient: the loss does not depend on it (or an op without a backward pass cut it off)"
                ))
            })?;
            out.push(Some(g.detach()));
        }
        Ok(Grads(out))
    }

    /// Adds `other` (same parameters) into `self`.
    pub fn accumulate(&mut self, other: Grads) -> Result<()> {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            if let (Some(x), Some(y)) = (a.as_mut(), b) {
                *x = (&*x + y)?;
            }
        }
        Ok(())
    }

    /// The L2 norm over all gradients together (PyTorch's `clip_grad_norm_` total norm).
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum = 0f64;
        for g in self.0.iter().flatten() {
            // CPU: one read pass in 8 lanes per chunk, chunks in parallel, their sums added
            // in order (the same result for any thread count); no temporary tensor.
            let host = with_host_f32(g, |v| {
                let partial: Vec<f64> = v.par_chunks(CHUNK).map(squares).collect();
                partial.iter().sum::<f64>()
            });
            sum += match host {
                Some(s) => s,
                None => f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?),
            };
        }
        Ok(sum.sqrt())
    }
}

/// The sum of squares of `v` in f64, in 8 lanes.
fn squares(v: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f64::from(x) * f64::from(x);
        }
    }
    lanes.iter().sum::<f64>()
        + rest
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
}

/// The factor PyTorch's `clip_grad_norm_(max_norm)` multiplies gradients by.
pub fn clip_factor(total_norm: f64, max_norm: Option<f64>) -> f32 {
    match max_norm {
        Some(max) => ((max / (total_norm + 1e-6)) as f32).min(1.0),
        None => 1.0,
    }
}
