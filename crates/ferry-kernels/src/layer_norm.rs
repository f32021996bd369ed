//! Layer normalization over the last dimension (`(x - mean) / sqrt(var + eps) * gamma +
//! beta`, biased variance as in PyTorch) with a backward pass for every input, optionally
//! fused with the residual addition before it (post-norm transformers: `LN(x + sublayer)`),
//! which saves the addition's own forward buffer and backward passes.
//!
//! `gamma` and `beta` travel packed as one `[2, dim]` tensor (a custom op takes at most three
//! inputs); the packing is a differentiable `cat`, so each still gets its gradient.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::{f32_slice, fast_path, host_slices};

/// Rows per parallel task (partial gamma/beta gradients are summed per task, then in task
/// order: the same result for any thread count).
const ROWS: usize = 64;

/// `LN(x)`.
pub fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    if fast_path(&[x, gamma, beta]) {
        let gb = Tensor::stack(&[gamma, beta], 0)?;
        x.contiguous()?.apply_op2(&gb, Norm { eps })
    } else {
        composed(x, gamma, beta, eps)
    }
}

/// `LN(x + residual)`.
pub fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    if fast_path(&[x, residual, gamma, beta]) && x.dims() == residual.dims() {
        let gb = Tensor::stack(&[gamma, beta], 0)?;
        x.contiguous()?
            .apply_op3(&residual.contiguous()?, &gb, AddNorm { eps })
    } else {
        composed(&(x + residual)?, gamma, beta, eps)
    }
}

fn composed(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(gamma)?.broadcast_add(beta)
}

/// Sum of `f(x)` in 8 lanes (vectorizes; exact order fixed by the row length).
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&v| f(v)).sum::<f32>()
}

/// Mean and 1/std of one row (two-pass variance).
fn row_stats(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps as f32).sqrt())
}

/// The forward over rows of `x` (plus `r` when given).
pub(crate) fn forward(x: &[f32], r: Option<&[f32]>, gb: &[f32], eps: f64) -> Vec<f32> {
    let d = gb.len() / 2;
    let (gamma, beta) = gb.split_at(d);
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(d * ROWS).enumerate().for_each(|(t, o)| {
        let mut row = vec![0f32; d];
        for (i, o) in o.chunks_mut(d).enumerate() {
            let at = (t * ROWS + i) * d;
            row.copy_from_slice(&x[at..at + d]);
            if let Some(r) = r {
                row.iter_mut()
                    .zip(&r[at..at + d])
                    .for_each(|(a, b)| *a += b);
            }
            let (mean, rstd) = row_stats(&row, eps);
            for k in 0..d {
                o[k] = (row[k] - mean) * rstd * gamma[k] + beta[k];
            }
        }
    });
    out
}

/// The backward: `dx` (also the residual's gradient) and `[dgamma; dbeta]`.
pub(crate) fn backward(
    x: &[f32],
    r: Option<&[f32]>,
    gb: &[f32],
    g: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let d = gb.len() / 2;
    let gamma = &gb[..d];
    let rows = x.len() / d;
    let tasks = rows.div_ceil(ROWS);
    let mut dx = vec![0f32; x.len()];
    let mut partial = vec![0f32; tasks * 2 * d];
    dx.par_chunks_mut(d * ROWS)
        .zip(partial.par_chunks_mut(2 * d))
        .enumerate()
        .for_each(|(t, (dx, part))| {
            let (dgamma, dbeta) = part.split_at_mut(d);
            let mut row = vec![0f32; d];
            for (i, dx) in dx.chunks_mut(d).enumerate() {
                let at = (t * ROWS + i) * d;
                row.copy_from_slice(&x[at..at + d]);
                if let Some(r) = r {
                    row.iter_mut()
                        .zip(&r[at..at + d])
                        .for_each(|(a, b)| *a += b);
                }
                let g = &g[at..at + d];
                let (mean, rstd) = row_stats(&row, eps);
                // row becomes xhat
                row.iter_mut().for_each(|v| *v = (*v - mean) * rstd);
                let mut sum_dxhat = 0f32;
                let mut sum_dxhat_xhat = 0f32;
                for k in 0..d {
                    let dxhat = g[k] * gamma[k];
                    sum_dxhat += dxhat;
                    sum_dxhat_xhat += dxhat * row[k];
                    dgamma[k] += g[k] * row[k];
                    dbeta[k] += g[k];
                }
                let n = d as f32;
                let (a, b) = (sum_dxhat / n, sum_dxhat_xhat / n);
                for k in 0..d {
                    dx[k] = rstd * (g[k] * gamma[k] - a - row[k] * b);
                }
            }
        });
    let mut dgb = vec![0f32; 2 * d];
    for part in partial.chunks_exact(2 * d) {
        dgb.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    (dx, dgb)
}

fn check(x: &Layout, gb: &Layout) -> candle_core::Result<()> {
    let d = gb.dims().last().copied().unwrap_or(0);
    if gb.dims().first() != Some(&2) || x.dims().last() != Some(&d) || d == 0 {
        candle_core::bail!(
            "layer norm: input {:?} does not match gamma/beta {:?}",
            x.dims(),
            gb.dims()
        );
    }
    Ok(())
}

struct Norm {
    eps: f64,
}

impl CustomOp2 for Norm {
    fn name(&self) -> &'static str {
        "ferry-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check(l1, l2)?;
        let y = forward(
            f32_slice(s1, l1, self.name())?,
            None,
            f32_slice(s2, l2, self.name())?,
            self.eps,
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dgb) = host_slices(&[x, gb, g], |s| backward(s[0], None, s[1], s[2], self.eps))?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dgb, gb.shape(), gb.device())?),
        ))
    }
}

struct AddNorm {
    eps: f64,
}

impl CustomOp3 for AddNorm {
    fn name(&self) -> &'static str {
        "ferry-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check(l1, l3)?;
        let r = f32_slice(s2, l2, self.name())?;
        let y = forward(
            f32_slice(s1, l1, self.name())?,
            Some(r),
            f32_slice(s3, l3, self.name())?,
            self.eps,
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        r: &Tensor,
        gb: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgb) = host_slices(&[x, r, gb, g], |s| {
            backward(s[0], Some(s[1]), s[2], s[3], self.eps)
        })?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        Ok((
            Some(dx.clone()),
            Some(dx),
            Some(Tensor::from_vec(dgb, gb.shape(), gb.device())?),
        ))
    }
}
