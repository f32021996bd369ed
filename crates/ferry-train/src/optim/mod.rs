//! Optimizers with PyTorch's update rules (AdamW, SGD with momentum), their state exposed
//! for checkpoints, and learning-rate schedules.
//!
//! On CPU each parameter is updated in place by one fused, parallel pass (no temporary
//! tensors); on other devices the same rule runs as candle tensor ops.

mod adamw;
mod schedule;
mod sgd;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use adamw::AdamW;
pub use schedule::Schedule;
pub use sgd::Sgd;

use crate::grads::Grads;
use crate::params::Params;
use crate::{Error, Result};

/// An optimizer as a config file names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// AdamW (decoupled weight decay).
    Adamw {
        /// Peak learning rate.
        lr: f64,
        /// Moment decay rates.
        #[serde(default = "default_betas")]
        betas: (f64, f64),
        /// Denominator epsilon.
        #[serde(default = "default_eps")]
        eps: f64,
        /// Decoupled weight decay.
        #[serde(default = "default_wd")]
        weight_decay: f64,
    },
    /// SGD with (optional) momentum and L2 weight decay.
    Sgd {
        /// Peak learning rate.
        lr: f64,
        /// Momentum (0: none).
        #[serde(default)]
        momentum: f64,
        /// L2 weight decay added to the gradient.
        #[serde(default)]
        weight_decay: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
    },
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}
fn default_wd() -> f64 {
    0.01
}

impl OptimizerConfig {
    /// The configured (peak) learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Adamw { lr, .. } | OptimizerConfig::Sgd { lr, .. } => *lr,
        }
    }

    /// A fresh optimizer for `params`.
    pub fn build(&self, params: &Params) -> Optimizer {
        match *self {
            OptimizerConfig::Adamw {
                betas,
                eps,
                weight_decay,
                ..
            } => Optimizer::AdamW(AdamW::new(params.len(), betas, eps, weight_decay)),
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                nesterov,
                ..
            } => Optimizer::Sgd(Sgd::new(params.len(), momentum, weight_decay, nesterov)),
        }
    }
}

/// A configured optimizer.
#[derive(Debug, Clone)]
pub enum Optimizer {
    /// AdamW.
    AdamW(AdamW),
    /// SGD.
    Sgd(Sgd),
}

impl Optimizer {
    /// Updates every trainable parameter with its gradient times `grad_scale` (the clipping
    /// factor) at learning rate `lr`.
    pub fn step(&mut self, params: &Params, grads: &Grads, lr: f64, grad_scale: f32) -> Result<()> {
        match self {
            Optimizer::AdamW(o) => o.step(params, grads, lr, grad_scale),
            Optimizer::Sgd(o) => o.step(params, grads, lr, grad_scale),
        }
    }

    /// The state tensors by name (`<param>.exp_avg`, ...), for a checkpoint.
    pub fn state(&self, params: &Params) -> Result<Vec<(String, Tensor)>> {
        let slots = match self {
            Optimizer::AdamW(o) => o.slots(),
            Optimizer::Sgd(o) => o.slots(),
        };
        let mut out = Vec::new();
        for ((name, var, _), slot) in params.iter().zip(slots) {
            for (suffix, s) in slot {
                out.push((
                    format!("{name}.{suffix}"),
                    s.to_tensor(var.dims(), var.device())?,
                ));
            }
        }
        Ok(out)
    }

    /// Restores the state written by [`Optimizer::state`].
    pub fn load_state(
        &mut self,
        params: &Params,
        tensors: &HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<()> {
        let names: Vec<(String, Vec<usize>)> = params
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.dims().to_vec()))
            .collect();
        let slots = match self {
            Optimizer::AdamW(o) => {
                o.set_steps(steps);
                o.slots_mut()
            }
            Optimizer::Sgd(o) => o.slots_mut(),
        };
        for ((name, dims), slot) in names.iter().zip(slots) {
            for (suffix, s) in slot {
                if let Some(t) = tensors.get(&format!("{name}.{suffix}")) {
                    if t.dims() != dims.as_slice() {
                        return Err(Error::Invalid(format!(
                            "optimizer state {name}.{suffix} has shape {:?}, the parameter {dims:?}",
                            t.dims()
                        )));
                    }
                    *s = Slot::from_tensor(t)?;
                }
            }
        }
        Ok(())
    }
}

/// One state buffer of one parameter: host memory for CPU parameters (updated by fused
/// kernels), a tensor on the parameter's device otherwise.
#[derive(Debug, Clone, Default)]
pub enum Slot {
    /// Not yet created (the first step creates it).
    #[default]
    Empty,
    /// On the host.
    Host(Vec<f32>),
    /// On the parameter's device.
    Device(Tensor),
}

impl Slot {
    fn to_tensor(&self, dims: &[usize], device: &Device) -> Result<Tensor> {
        Ok(match self {
            Slot::Empty => Tensor::zeros(dims, candle_core::DType::F32, device)?,
            Slot::Host(v) => Tensor::from_slice(v, dims, &Device::Cpu)?,
            Slot::Device(t) => t.clone(),
        })
    }

    fn from_tensor(t: &Tensor) -> Result<Self> {
        Ok(if t.device().is_cpu() {
            Slot::Host(
                t.flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1()?,
            )
        } else {
            Slot::Device(t.clone())
        })
    }
}
