//! Scaled dot-product self-attention over packed `[q | k | v]` projections as one op.
//!
//! The composed form (split heads with permute copies, scale, batched matmul, mask add,
//! softmax, matmul, merge heads) makes a dozen graph nodes whose backward passes each
//! allocate and add full-size buffers. This kernel reads the heads in place through strided
//! GEMMs, keeps the attention probabilities for the backward pass, and writes the merged
//! context directly: per (batch, head) `P = softmax(q k^T / sqrt(d) + bias)`, `ctx = P v`;
//! backward `dP = dctx v^T`, `dS = P * (dP - rowsum(dP * P)) / sqrt(d)`, `dq = dS k`,
//! `dk = dS^T q`, `dv = P^T dctx`.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::gemm::{matmul, View};
use super::{f32_slice, fast_exp, fast_path, host_slices};

/// `qkv` `[batch, seq, 3 dim]` -> context `[batch, seq, dim]` with `heads` heads;
/// `key_bias` `[batch, seq]` is added to every query's scores (0 for tokens, a large
/// negative number for padding).
pub fn self_attention(
    qkv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, s, d3) = qkv.dims3()?;
    let dim = d3 / 3;
    if heads == 0 || d3 % 3 != 0 || dim % heads != 0 {
        candle_core::bail!("attention: width {d3} is not 3 x heads ({heads}) x head size");
    }
    if fast_path(&[qkv]) {
        let bias = match key_bias {
            Some(m) => Some(m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let op = Attention {
            heads,
            bias,
            probs: Mutex::new(Vec::new()),
        };
        return qkv.contiguous()?.apply_op1(op);
    }
    composed(qkv, heads, key_bias, (b, s, dim))
}

/// The same computation from candle primitives (any device, differentiable by autograd).
fn composed(
    qkv: &Tensor,
    h: usize,
    key_bias: Option<&Tensor>,
    (b, s, d): (usize, usize, usize),
) -> candle_core::Result<Tensor> {
    let hd = d / h;
    let qkv = qkv.reshape((b, s, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)?.contiguous()? * (1.0 / (hd as f64).sqrt()))?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let scores = q.matmul(&k.t()?)?;
    let scores = match key_bias {
        Some(m) => scores.broadcast_add(&m.to_dtype(scores.dtype())?.reshape((b, 1, 1, s))?)?,
        None => scores,
    };
    let m = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&m)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    p.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))
}

struct Attention {
    heads: usize,
    bias: Option<Vec<f32>>,
    /// The probabilities `[batch, heads, seq, seq]` of the forward pass, for the backward.
    probs: Mutex<Vec<f32>>,
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "ferry-attention"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(st, l, self.name())?;
        let (b, s, d3) = l.shape().dims3()?;
        let (d, h) = (d3 / 3, self.heads);
        let hd = d / h;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut probs = vec![0f32; b * h * s * s];
        let mut ctx = vec![0f32; b * s * d];
        // Scores and softmax per (batch, head), in parallel.
        probs.par_chunks_mut(s * s).enumerate().for_each(|(bh, p)| {
            let (bi, hi) = (bh / h, bh % h);
            let base = bi * s * d3 + hi * hd;
            let q = View::rows(base, d3);
            let k = View::rows(base + d, d3);
            matmul(
                (s, s, hd),
                p,
                View::rows(0, s),
                false,
                qkv,
                q,
                qkv,
                k.t(),
                scale,
                1,
            );
            let bias = self.bias.as_ref().map(|m| &m[bi * s..(bi + 1) * s]);
            for row in p.chunks_exact_mut(s) {
                if let Some(m) = bias {
                    row.iter_mut().zip(m).for_each(|(x, m)| *x += m);
                }
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let mut sum = 0f32;
                for x in row.iter_mut() {
                    *x = fast_exp::exp(*x - max);
                    sum += *x;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
        });
        // Context: each batch's [seq, dim] block is written by its own task.
        ctx.par_chunks_mut(s * d).enumerate().for_each(|(bi, c)| {
            for hi in 0..h {
                let p = &probs[(bi * h + hi) * s * s..(bi * h + hi + 1) * s * s];
                let v = View::rows(bi * s * d3 + 2 * d + hi * hd, d3);
                matmul(
                    (s, hd, s),
                    c,
                    View::rows(hi * hd, d),
                    false,
                    p,
                    View::rows(0, s),
                    qkv,
                    v,
                    1.0,
                    1,
                );
            }
        });
        *self.probs.lock().expect("attention cache") = probs;
        Ok((CpuStorage::F32(ctx), Shape::from((b, s, d))))
    }

    fn bwd(&self, qkv: &Tensor, _ctx: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, s, d3) = qkv.dims3()?;
        let (d, h) = (d3 / 3, self.heads);
        let hd = d / h;
        let scale = 1.0 / (hd as f32).sqrt();
        let probs = std::mem::take(&mut *self.probs.lock().expect("attention cache"));
        if probs.len() != b * h * s * s {
            candle_core::bail!("attention backward ran twice or without its forward");
        }
        let mut dx = vec![0f32; b * s * d3];
        host_slices(&[qkv, g], |sl| {
            let (x, g) = (sl[0], sl[1]);
            // Each batch's [seq, 3 dim] block of dqkv is written by its own task.
            dx.par_chunks_mut(s * d3).enumerate().for_each(|(bi, dxb)| {
                let mut ds = vec![0f32; s * s];
                for hi in 0..h {
                    let p = &probs[(bi * h + hi) * s * s..(bi * h + hi + 1) * s * s];
                    let go = View::rows(bi * s * d + hi * hd, d);
                    let at = |part: usize| View::rows(bi * s * d3 + part * d + hi * hd, d3);
                    let local = |part: usize| View::rows(part * d + hi * hd, d3);
                    // dP = dctx v^T
                    matmul(
                        (s, s, hd),
                        &mut ds,
                        View::rows(0, s),
                        false,
                        g,
                        go,
                        x,
                        at(2).t(),
                        1.0,
                        1,
                    );
                    // dv = P^T dctx
                    matmul(
                        (s, hd, s),
                        dxb,
                        local(2),
                        false,
                        p,
                        View::rows(0, s).t(),
                        g,
                        go,
                        1.0,
                        1,
                    );
                    // dS = P * (dP - rowsum(dP * P)), scaled.
                    for (dr, pr) in ds.chunks_exact_mut(s).zip(p.chunks_exact(s)) {
                        let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                        dr.iter_mut()
                            .zip(pr)
                            .for_each(|(x, p)| *x = p * (*x - dot) * scale);
                    }
                    // dq = dS k, dk = dS^T q
                    matmul(
                        (s, hd, s),
                        dxb,
                        local(0),
                        false,
                        &ds,
                        View::rows(0, s),
                        x,
                        at(1),
                        1.0,
                        1,
                    );
                    matmul(
                        (s, hd, s),
                        dxb,
                        local(1),
                        false,
                        &ds,
                        View::rows(0, s).t(),
                        x,
                        at(0),
                        1.0,
                        1,
                    );
                }
            });
        })?;
        Ok(Some(Tensor::from_vec(dx, (b, s, d3), qkv.device())?))
    }
}
