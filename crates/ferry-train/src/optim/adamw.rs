//! AdamW exactly as `torch.optim.AdamW` (single-tensor path) computes it in f32.

use std::sync::Mutex;

use candle_core::Tensor;
use rayon::prelude::*;

use super::Slot;
use crate::grads::Grads;
use crate::host::{update_on_host, CHUNK};
use crate::params::Params;
use crate::Result;

/// AdamW state: step count and two moments per parameter.
#[derive(Debug, Clone)]
pub struct AdamW {
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    steps: u64,
    m: Vec<Slot>,
    v: Vec<Slot>,
}

#[derive(Clone, Copy)]
struct Coefs {
    decay: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
    scale: f32,
}

impl AdamW {
    /// State for `n` parameters.
    pub fn new(n: usize, betas: (f64, f64), eps: f64, weight_decay: f64) -> Self {
        AdamW {
            betas,
            eps,
            weight_decay,
            steps: 0,
            m: vec![Slot::Empty; n],
            v: vec![Slot::Empty; n],
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub(super) fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    pub(super) fn slots(&self) -> Vec<Vec<(&'static str, &Slot)>> {
        self.m
            .iter()
            .zip(&self.v)
            .map(|(m, v)| vec![("exp_avg", m), ("exp_avg_sq", v)])
            .collect()
    }

    pub(super) fn slots_mut(&mut self) -> Vec<Vec<(&'static str, &mut Slot)>> {
        self.m
            .iter_mut()
            .zip(self.v.iter_mut())
            .map(|(m, v)| vec![("exp_avg", m), ("exp_avg_sq", v)])
            .collect()
    }

    /// One update.
    pub fn step(&mut self, params: &Params, grads: &Grads, lr: f64, scale: f32) -> Result<()> {
        self.steps += 1;
        let (b1, b2) = self.betas;
        let t = self.steps as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let c = Coefs {
            decay: (1.0 - lr * self.weight_decay) as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            step_size: (lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: self.eps as f32,
            scale,
        };
        for (i, ((_, var, _), g)) in params.iter().zip(&grads.0).enumerate() {
            let Some(g) = g else { continue };
            let n = var.elem_count();
            if var.device().is_cpu() && !matches!(self.m[i], Slot::Device(_)) {
                for s in [&mut self.m[i], &mut self.v[i]] {
                    if matches!(s, Slot::Empty) {
                        *s = Slot::Host(vec![0.0; n]);
                    }
                }
                let (Slot::Host(m), Slot::Host(v)) = (&mut self.m[i], &mut self.v[i]) else {
                    unreachable!("host slots were just made")
                };
                let (m, v) = (Mutex::new(m.as_mut_slice()), Mutex::new(v.as_mut_slice()));
                let kernel = |p: &mut [f32], g: &[f32]| {
                    let mut m = m.lock().expect("adamw state lock");
                    let mut v = v.lock().expect("adamw state lock");
                    p.par_chunks_mut(CHUNK)
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(((p, m), v), g)| {
                            for i in 0..p.len() {
                                let g = g[i] * c.scale;
                                let pi = p[i] * c.decay;
                                let mi = m[i] + c.one_minus_b1 * (g - m[i]);
                                let vi = v[i] * c.b2 + c.one_minus_b2 * g * g;
                                m[i] = mi;
                                v[i] = vi;
                                p[i] = pi - c.step_size * (mi / (vi.sqrt() / c.bc2_sqrt + c.eps));
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
}

impl AdamW {
    /// The same update with candle tensor ops (any device); returns the new parameter.
    fn step_tensors(&mut self, i: usize, p: &Tensor, g: &Tensor, c: Coefs) -> Result<Tensor> {
        let g = (g * c.scale as f64)?;
        let zeros = || p.zeros_like();
        let m = match &self.m[i] {
            Slot::Device(t) => t.clone(),
            Slot::Host(h) => Tensor::from_slice(h, p.dims(), p.device())?,
            Slot::Empty => zeros()?,
        };
        let v = match &self.v[i] {
            Slot::Device(t) => t.clone(),
            Slot::Host(h) => Tensor::from_slice(h, p.dims(), p.device())?,
            Slot::Empty => zeros()?,
        };
        let m = (&m + ((&g - &m)? * c.one_minus_b1 as f64)?)?;
        let v = ((&v * c.b2 as f64)? + (g.sqr()? * c.one_minus_b2 as f64)?)?;
        let denom = ((v.sqrt()? / c.bc2_sqrt as f64)? + c.eps as f64)?;
        let p = ((p * c.decay as f64)? - ((&m / denom)? * c.step_size as f64)?)?;
        self.m[i] = Slot::Device(m);
        self.v[i] = Slot::Device(v);
        Ok(p)
    }
}
