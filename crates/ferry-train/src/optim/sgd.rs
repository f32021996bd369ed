//! SGD with momentum exactly as `torch.optim.SGD` computes it (dampening 0).

use std::sync::Mutex;

use candle_core::Tensor;
use rayon::prelude::*;

use super::Slot;
use crate::grads::Grads;
use crate::host::{update_on_host, CHUNK};
use crate::params::Params;
use crate::Result;

/// SGD state: one momentum buffer per parameter.
#[derive(Debug, Clone)]
pub struct Sgd {
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    buf: Vec<Slot>,
}

#[derive(Clone, Copy)]
struct Coefs {
    lr: f32,
    momentum: f32,
    wd: f32,
    nesterov: bool,
    scale: f32,
    first: bool,
}

impl Sgd {
    /// State for `n` parameters.
    pub fn new(n: usize, momentum: f64, weight_decay: f64, nesterov: bool) -> Self {
        Sgd {
            momentum,
            weight_decay,
            nesterov,
            buf: vec![Slot::Empty; n],
        }
    }

    pub(super) fn slots(&self) -> Vec<Vec<(&'static str, &Slot)>> {
        self.buf
            .iter()
            .map(|b| {
                if self.momentum != 0.0 {
                    vec![("momentum_buffer", b)]
                } else {
                    vec![]
                }
            })
            .collect()
    }

    pub(super) fn slots_mut(&mut self) -> Vec<Vec<(&'static str, &mut Slot)>> {
        let on = self.momentum != 0.0;
        self.buf
            .iter_mut()
            .map(|b| {
                if on {
                    vec![("momentum_buffer", b)]
                } else {
                    vec![]
                }
            })
            .collect()
    }

    /// One update.
    pub fn step(&mut self, params: &Params, grads: &Grads, lr: f64, scale: f32) -> Result<()> {
        for (i, ((_, var, _), g)) in params.iter().zip(&grads.0).enumerate() {
            let Some(g) = g else { continue };
            let first = matches!(self.buf[i], Slot::Empty);
            let c = Coefs {
                lr: lr as f32,
                momentum: self.momentum as f32,
                wd: self.weight_decay as f32,
                nesterov: self.nesterov,
                scale,
                first,
            };
            if var.device().is_cpu() && !matches!(self.buf[i], Slot::Device(_)) {
                if first {
                    self.buf[i] = Slot::Host(vec![0.0; var.elem_count()]);
                }
                let Slot::Host(buf) = &mut self.buf[i] else {
                    unreachable!("host slot")
                };
                let buf = Mutex::new(buf.as_mut_slice());
                let kernel = |p: &mut [f32], g: &[f32]| {
                    let mut buf = buf.lock().expect("sgd state lock");
                    p.par_chunks_mut(CHUNK)
                        .zip(buf.par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|((p, buf), g)| {
                            for i in 0..p.len() {
                                let mut d = g[i] * c.scale;
                                if c.wd != 0.0 {
                                    d += c.wd * p[i];
                                }
                                if c.momentum != 0.0 {
                                    buf[i] = if c.first { d } else { buf[i] * c.momentum + d };
                                    d = if c.nesterov {
                                        d + c.momentum * buf[i]
                                    } else {
                                        buf[i]
                                    };
                                }
                                p[i] -= c.lr * d;
                            }
                        });
                };
                if update_on_host(var, g, &kernel)? {
                    continue;
                }
            }
            let updated = self.step_tensors(i, var.as_tensor(), g, c)?;
            var.set(&updated)?;
        }
        Ok(())
    }

    fn step_tensors(&mut self, i: usize, p: &Tensor, g: &Tensor, c: Coefs) -> Result<Tensor> {
        let mut d = (g * c.scale as f64)?;
        if c.wd != 0.0 {
            d = (d + (p * c.wd as f64)?)?;
        }
        if c.momentum != 0.0 {
            let buf = match &self.buf[i] {
                Slot::Empty => d.clone(),
                Slot::Host(h) => {
                    ((Tensor::from_slice(h, p.dims(), p.device())? * c.momentum as f64)? + &d)?
                }
                Slot::Device(b) => ((b * c.momentum as f64)? + &d)?,
            };
            d = if c.nesterov {
                (d + (&buf * c.momentum as f64)?)?
            } else {
                buf.clone()
            };
            self.buf[i] = Slot::Device(buf);
        }
        Ok((p - (d * c.lr as f64)?)?)
    }
}
