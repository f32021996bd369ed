//! `act(x W^T + b)` as one op: the forward is a single GEMM into the bias plus the activation,
//! the backward three GEMMs-worth (`dz = g * act'`, `dx = dz W`, `dW = dz^T x`, `db = sum dz`),
//! instead of candle's reshape, transpose, matmul, broadcast-add and activation nodes, each of
//! which allocates and adds its own gradient buffers. `x` may have any leading dimensions.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::gemm::{matmul, threads, View};
use super::{f32_slice, fast_path, host_slices};
use crate::packed_gemm::{avx512_available, gemm_new, pack_rows, pack_transposed, Lhs};
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
        let mut y = if avx512_available() {
            let mut wt = Vec::new();
            pack_transposed(w, (0, inp), (out, inp), &mut wt);
            gemm_new((n, inp, out), Lhs::Rows(x, inp), &wt, Some(b), &|_| {})
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
            y
        };
        match self.act {
            None => {}
            Some(Activation::Relu) => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Some(Activation::Gelu) => {
                let pre = y.clone();
                y.iter_mut().for_each(|v| *v = gelu(*v));
                *self.pre.lock().expect("linear cache") = pre;
            }
        }
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
        let t = threads();
        let pre = std::mem::take(&mut *self.pre.lock().expect("linear cache"));
        let (dx, dw, db) = host_slices(&[x, w, g, y], |s| {
            let (xv, wv, gv, yv) = (s[0], s[1], s[2], s[3]);
            // dz = g * act'(z)
            let dz: std::borrow::Cow<'_, [f32]> = match self.act {
                None => gv.into(),
                Some(Activation::Relu) => gv
                    .iter()
                    .zip(yv)
                    .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
                    .collect::<Vec<_>>()
                    .into(),
                Some(Activation::Gelu) => gv
                    .iter()
                    .zip(&pre)
                    .map(|(g, z)| g * gelu_grad(*z))
                    .collect::<Vec<_>>()
                    .into(),
            };
            // dx and dW are independent: run them side by side, each on its share of the
            // threads (two half-size GEMMs synchronize less than two split ones).
            let half = (t / 2).max(1);
            let (dx, dw) = if avx512_available() {
                // dx = dz W and dw = dz^T x (dz read transposed in place), both in parallel.
                rayon::join(
                    || {
                        let mut wp = Vec::new();
                        pack_rows(wv, (0, inp), (out, inp), &mut wp);
                        gemm_new((n, out, inp), Lhs::Rows(&dz, out), &wp, None, &|_| {})
                    },
                    || {
                        let mut xp = Vec::new();
                        pack_rows(xv, (0, inp), (n, inp), &mut xp);
                        gemm_new((out, n, inp), Lhs::Cols(&dz, out), &xp, None, &|_| {})
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
                            &dz,
                            View::rows(0, out),
                            wv,
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
                            &dz,
                            View::rows(0, out).t(),
                            xv,
                            View::rows(0, inp),
                            1.0,
                            t - half,
                        );
                        dw
                    },
                )
            };
            let mut db = vec![0f32; out];
            for row in dz.chunks_exact(out.max(1)) {
                for (d, s) in db.iter_mut().zip(row) {
                    *d += s;
                }
            }
            (dx, dw, db)
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, (out, inp), dev)?),
            Some(Tensor::from_vec(db, out, dev)?),
        ))
    }
}
