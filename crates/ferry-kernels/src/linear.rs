//! `act(x W^T + b)` as one op: the forward is a single GEMM into the bias plus the activation,
//! the backward three GEMMs-worth (`dz = g * act'`, `dx = dz W`, `dW = dz^T x`, `db = sum dz`),
//! instead of candle's reshape, transpose, matmul, broadcast-add and activation nodes, each of
//! which allocates and adds its own gradient buffers. `x` may have any leading dimensions.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, threads, View};
use super::{f32_slice, fast_path, host_slices};
use crate::packed_gemm::{avx512_available, gemm_new, pack_transposed, rows_rhs, Lhs, Rhs};
use crate::Activation;

/// `act(x W^T + b)`: `x` `[.., in]`, `weight` `[out, in]`, `bias` `[out]` -> `[.., out]`.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    act: Option<Activation>,
) -> candle_core::Result<Tensor> {
    match bias {
        Some(b) if fast_path(&[x, weight, b]) => {
            let op = Linear {
                act,
                pre: Mutex::new(Vec::new()),
            };
            x.contiguous()?
                .apply_op3(&weight.contiguous()?, &b.contiguous()?, op)
        }
        _ => {
            let dims = x.dims().to_vec();
            let (inner, lead) = dims
                .split_last()
                .ok_or_else(|| candle_core::Error::Msg("linear: scalar input".into()))?;
            let rows: usize = lead.iter().product();
            let y = x.reshape((rows, *inner))?.matmul(&weight.t()?)?;
            let y = match bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            };
            let mut out = lead.to_vec();
            out.push(weight.dim(0)?);
            let y = y.reshape(out)?;
            match act {
                Some(a) => a.apply(&y),
                None => Ok(y),
            }
        }
    }
}

struct Linear {
    act: Option<Activation>,
    /// Pre-activation values, kept for GELU's backward.
    pre: Mutex<Vec<f32>>,
}

/// GELU (erf form) and its derivative.
fn gelu(z: f32) -> f32 {
    0.5 * z * (1.0 + erf(z * std::f32::consts::FRAC_1_SQRT_2))
}

fn gelu_grad(z: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(z * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * z * z).exp() * 0.398_942_3;
    cdf + z * pdf
}

/// candle's own erf, so the fused GELU matches `gelu_erf` exactly.
fn erf(x: f32) -> f32 {
    candle_core::cpu::erf::erf_f32(x)
}

/// Rows per task of the parallel `dz` / `db` pass (partial bias gradients are summed per
/// task, then in task order: the same result for any thread count).
const DZ_ROWS: usize = 64;

/// The forward over host slices: `act(x W^T + b)` for `x` `[n, inp]`, `w` `[out, inp]`,
/// `b` `[out]`, as `(y, pre)`; `pre` holds the values before the activation where the
/// backward needs them (GELU), else is empty. ReLU runs inside the product, on each row as
/// it finishes.
pub(crate) fn forward_host(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (n, inp, out): (usize, usize, usize),
    act: Option<Activation>,
) -> (Vec<f32>, Vec<f32>) {
    let relu = |row: &mut [f32]| row.iter_mut().for_each(|v| *v = v.max(0.0));
    let epilogue: &(dyn Fn(&mut [f32]) + Sync) = match act {
        Some(Activation::Relu) => &relu,
        _ => &|_| {},
    };
    let y = if avx512_available() {
        let mut wt = Vec::new();
        pack_transposed(w, (0, inp), (out, inp), &mut wt);
        gemm_new(
            (n, inp, out),
            Lhs::Rows(x, inp),
            Rhs::Panels(&wt),
            Some(b),
            epilogue,
        )
    } else {
        let mut y = Vec::with_capacity(n * out);
        for _ in 0..n {
            y.extend_from_slice(b);
        }
        matmul(
            (n, out, inp),
            &mut y,
            View::rows(0, out),
            true,
            x,
            View::rows(0, inp),
            w,
            View::rows(0, inp).t(),
            1.0,
            threads(),
        );
        if out > 0 {
            y.chunks_exact_mut(out).for_each(epilogue);
        }
        y
    };
    if act == Some(Activation::Gelu) {
        // The product becomes `pre` as it is; GELU writes a new output (no copy of `pre`).
        let act_out: Vec<f32> = y.par_iter().map(|v| gelu(*v)).collect();
        return (act_out, y);
    }
    (y, Vec::new())
}

/// What the backward reads of a forward ([`forward_host`]): its input, weight, output and
/// pre-activation values (the last two only where the activation needs them: empty
/// otherwise).
pub(crate) struct Tape<'a> {
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub y: &'a [f32],
    pub pre: &'a [f32],
}

impl<'a> Tape<'a> {
    /// The tape of a layer without an activation.
    pub fn plain(x: &'a [f32], w: &'a [f32]) -> Self {
        Tape {
            x,
            w,
            y: &[],
            pre: &[],
        }
    }
}

/// The backward over host slices: `(dx, dW, db)` from the forward's tape and the output
/// gradient `g`.
pub(crate) fn backward_host(
    tape: &Tape,
    g: &[f32],
    (n, inp, out): (usize, usize, usize),
    act: Option<Activation>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Tape { x, w, y, pre } = *tape;
    let (dz, db) = pre_activation_grad(y, pre, g, out, act);
    let dz: &[f32] = match &dz {
        Some(v) => v,
        None => g,
    };
    let t = threads();
    // dx and dW are independent: run them side by side, each on its share of the threads
    // (two half-size GEMMs synchronize less than two split ones).
    let half = (t / 2).max(1);
    let (dx, dw) = if avx512_available() {
        // dx = dz W and dw = dz^T x, both in parallel, the operands read in place (dz
        // transposed, W and x row-major; see `rows_rhs` for when W and x are packed).
        rayon::join(
            || {
                let mut buf = Vec::new();
                let b = rows_rhs(w, (0, inp), (out, inp), &mut buf);
                gemm_new((n, out, inp), Lhs::Rows(dz, out), b, None, &|_| {})
            },
            || {
                let mut buf = Vec::new();
                let b = rows_rhs(x, (0, inp), (n, inp), &mut buf);
                gemm_new((out, n, inp), Lhs::Cols(dz, out), b, None, &|_| {})
            },
        )
    } else {
        rayon::join(
            || {
                let mut dx = vec![0f32; n * inp];
                matmul(
                    (n, inp, out),
                    &mut dx,
                    View::rows(0, inp),
                    false,
                    dz,
                    View::rows(0, out),
                    w,
                    View::rows(0, inp),
                    1.0,
                    half,
                );
                dx
            },
            || {
                let mut dw = vec![0f32; out * inp];
                matmul(
                    (out, inp, n),
                    &mut dw,
                    View::rows(0, inp),
                    false,
                    dz,
                    View::rows(0, out).t(),
                    x,
                    View::rows(0, inp),
                    1.0,
                    t - half,
                );
                dw
            },
        )
    };
    (dx, dw, db)
}

/// `dz = g * act'(z)` (`None`: no activation, `dz` is `g` itself) and `db = sum over rows
/// of dz`, in one parallel pass.
fn pre_activation_grad(
    y: &[f32],
    pre: &[f32],
    g: &[f32],
    out: usize,
    act: Option<Activation>,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let chunk = DZ_ROWS * out.max(1);
    let tasks = g.len().div_ceil(chunk);
    let mut partial = vec![0f32; tasks * out];
    let mut dz = act.map(|_| vec![0f32; g.len()]);
    let sum_rows = |rows: &[f32], part: &mut [f32]| {
        for row in rows.chunks_exact(out) {
            part.iter_mut().zip(row).for_each(|(p, v)| *p += v);
        }
    };
    match (&mut dz, act) {
        (Some(dz), Some(act)) => {
            let deriv = match act {
                Activation::Relu => y,
                Activation::Gelu => pre,
            };
            dz.par_chunks_mut(chunk)
                .zip(partial.par_chunks_mut(out.max(1)))
                .enumerate()
                .for_each(|(t, (dz, part))| {
                    let at = t * chunk;
                    let (g, z) = (&g[at..at + dz.len()], &deriv[at..at + dz.len()]);
                    // One loop per activation, and ReLU's as a bit mask: a branch on the
                    // sign mispredicts half the time and does not vectorize.
                    let pairs = dz.iter_mut().zip(g.iter().zip(z));
                    match act {
                        Activation::Relu => pairs.for_each(|(d, (g, z))| {
                            let keep = u32::from(*z > 0.0).wrapping_neg();
                            *d = f32::from_bits(g.to_bits() & keep);
                        }),
                        Activation::Gelu => pairs.for_each(|(d, (g, z))| *d = g * gelu_grad(*z)),
                    }
                    sum_rows(dz, part);
                });
        }
        _ => g
            .par_chunks(chunk)
            .zip(partial.par_chunks_mut(out.max(1)))
            .for_each(|(g, part)| sum_rows(g, part)),
    }
    let mut db = vec![0f32; out];
    for part in partial.chunks_exact(out.max(1)) {
        db.iter_mut().zip(part).for_each(|(d, p)| *d += p);
    }
    (dz, db)
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "ferry-linear"
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
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let b = f32_slice(s3, l3, self.name())?;
        let (out, inp) = l2.shape().dims2()?;
        let dims = l1.dims();
        if dims.last() != Some(&inp) || b.len() != out {
            candle_core::bail!(
                "linear: input {dims:?}, weight {:?}, bias {}",
                l2.dims(),
                b.len()
            );
        }
        let n = x.len() / inp.max(1);
        let (y, pre) = forward_host(x, w, b, (n, inp, out), self.act);
        *self.pre.lock().expect("linear cache") = pre;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("has a last dimension") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out, inp) = w.dims2()?;
        let n = x.elem_count() / inp.max(1);
        let pre = std::mem::take(&mut *self.pre.lock().expect("linear cache"));
        let (dx, dw, db) = host_slices(&[x, w, g, y], |s| {
            let tape = Tape {
                x: s[0],
                w: s[1],
                y: s[3],
                pre: &pre,
            };
            backward_host(&tape, s[2], (n, inp, out), self.act)
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, (out, inp), dev)?),
            Some(Tensor::from_vec(db, out, dev)?),
        ))
    }
}
