//! Softmax over the last dimension with a backward pass (candle's fused one has none), and
//! log-softmax from primitives.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::fast_exp;
use crate::host::{f32_slice, fast_path};

/// Rows per parallel task: small tensors stay on one thread.
const ROWS_PER_TASK: usize = 64;

/// Softmax over the last dimension, with a backward pass.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if fast_path(&[x]) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        let m = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&m)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "ferry-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let d = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    o.copy_from_slice(x);
                    fast_exp::softmax_row(o);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBackward)?,
        ))
    }
}

/// dx = y * (g - sum(g * y)) per row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "ferry-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let d = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(
                y.par_chunks(d * ROWS_PER_TASK)
                    .zip(g.par_chunks(d * ROWS_PER_TASK)),
            )
            .for_each(|(o, (y, g))| {
                for ((o, y), g) in o.chunks_mut(d).zip(y.chunks(d)).zip(g.chunks(d)) {
                    let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                    for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                        *o = y * (g - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `log(softmax(x))` over the last dimension, from primitives (differentiable everywhere).
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&m)?;
    let lse = s.exp()?.sum_keepdim(D::Minus1)?.log()?;
    s.broadcast_sub(&lse)
}
