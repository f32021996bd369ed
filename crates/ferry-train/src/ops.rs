//! Differentiable softmax and layer normalization.
//!
//! candle's fused `softmax_last_dim`, `layer_norm` and `rms_norm` have no backward pass
//! (candle issues #2168, #2977, #3011): gradients through them silently vanish. These ops
//! have one. On CPU with f32 they run as single-pass custom kernels whose backward is also a
//! kernel; elsewhere they are composed from candle primitives, which autograd differentiates.
//! Both paths are tested against each other and against finite differences.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor, D,
};
use rayon::prelude::*;

/// Rows per parallel task: small tensors stay on one thread.
const ROWS_PER_TASK: usize = 64;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expects a contiguous f32 tensor"),
    }
}

fn fast_path(xs: &[&Tensor]) -> bool {
    xs.iter()
        .all(|x| matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32)
}

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
                    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let mut sum = 0f32;
                    for (o, &x) in o.iter_mut().zip(x) {
                        *o = (x - m).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    o.iter_mut().for_each(|o| *o *= inv);
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

/// Layer normalization over the last dimension (`(x - mean) / sqrt(var + eps) * gamma +
/// beta`, biased variance as in PyTorch), with a backward pass for `x`, `gamma` and `beta`.
pub fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    if fast_path(&[x, gamma, beta]) {
        x.contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, LayerNorm { eps })
    } else {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
        xhat.broadcast_mul(gamma)?.broadcast_add(beta)
    }
}

struct LayerNorm {
    eps: f64,
}

/// Mean and 1/std of one row (two-pass variance).
fn row_stats(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps as f32).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "ferry-layer-norm"
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
        let gamma = f32_slice(s2, l2, self.name())?;
        let beta = f32_slice(s3, l3, self.name())?;
        let d = gamma.len();
        if d == 0 || x.len() % d != 0 || beta.len() != d {
            candle_core::bail!(
                "layer norm: gamma/beta of {d} values do not match x {:?}",
                l1.dims()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    for i in 0..d {
                        o[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = gamma.elem_count();
        // One op computes dx and, per task, partial dgamma/dbeta rows: [rows + 2 * tasks, d].
        let packed = x.apply_op3_no_bwd(
            &gamma.contiguous()?,
            &g.contiguous()?,
            &LayerNormBackward { eps: self.eps },
        )?;
        let rows = x.elem_count() / d;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let tasks = (packed.dim(0)? - rows) / 2;
        let partial = packed.narrow(0, rows, 2 * tasks)?.reshape((tasks, 2, d))?;
        // Partials summed in task order: the same result for any thread count.
        let sums = partial.sum(0)?;
        let dgamma = sums.get(0)?.reshape(gamma.shape())?;
        let dbeta = sums.get(1)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

struct LayerNormBackward {
    eps: f64,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "ferry-layer-norm-backward"
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
        let gamma = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let d = gamma.len();
        let rows = x.len() / d;
        let tasks = rows.div_ceil(ROWS_PER_TASK);
        let mut out = vec![0f32; (rows + 2 * tasks) * d];
        let (dx, partial) = out.split_at_mut(rows * d);
        dx.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(partial.par_chunks_mut(2 * d))
            .zip(
                x.par_chunks(d * ROWS_PER_TASK)
                    .zip(g.par_chunks(d * ROWS_PER_TASK)),
            )
            .for_each(|((dx, part), (x, g))| {
                let (dgamma, dbeta) = part.split_at_mut(d);
                let mut xhat = vec![0f32; d];
                for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let mut sum_dxhat = 0f32;
                    let mut sum_dxhat_xhat = 0f32;
                    for i in 0..d {
                        xhat[i] = (x[i] - mean) * rstd;
                        let dxhat = g[i] * gamma[i];
                        sum_dxhat += dxhat;
                        sum_dxhat_xhat += dxhat * xhat[i];
                        dgamma[i] += g[i] * xhat[i];
                        dbeta[i] += g[i];
                    }
                    let n = d as f32;
                    let (a, b) = (sum_dxhat / n, sum_dxhat_xhat / n);
                    for i in 0..d {
                        dx[i] = rstd * (g[i] * gamma[i] - a - xhat[i] * b);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows + 2 * tasks, d))))
    }
}

/// `log(softmax(x))` over the last dimension, from primitives (differentiable everywhere).
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&m)?;
    let lse = s.exp()?.sum_keepdim(D::Minus1)?.log()?;
    s.broadcast_sub(&lse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use ferry_data::rng::Rng;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut r = Rng::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (r.next_f64() * 4.0 - 2.0) as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// The composed path, forced: f64 takes it.
    fn reference<F: Fn(&[&Tensor]) -> Tensor>(f: F, xs: &[&Tensor]) -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = xs
            .iter()
            .map(|x| Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap())
            .collect();
        let ts: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let y = f(&ts);
        let w = rand(y.dims(), 99).to_dtype(DType::F64).unwrap();
        let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = vars
            .iter()
            .map(|v| grads.get(v).unwrap().to_dtype(DType::F32).unwrap())
            .collect();
        (y.to_dtype(DType::F32).unwrap(), gs)
    }

    fn fast<F: Fn(&[&Tensor]) -> Tensor>(f: F, xs: &[&Tensor]) -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
        let ts: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let y = f(&ts);
        let w = rand(y.dims(), 99);
        let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = vars
            .iter()
            .map(|v| grads.get(v).expect("every input gets a gradient").clone())
            .collect();
        (y, gs)
    }

    #[test]
    fn softmax_kernel_matches_the_composed_op_forward_and_backward() {
        // 3 x 70 rows: more than one parallel task.
        let x = rand(&[3, 70, 17], 1);
        let f = |t: &[&Tensor]| softmax_last_dim(t[0]).unwrap();
        let (y1, g1) = fast(f, &[&x]);
        let (y2, g2) = reference(f, &[&x]);
        assert!(max_diff(&y1, &y2) < 1e-6);
        assert!(
            max_diff(&g1[0], &g2[0]) < 1e-5,
            "{}",
            max_diff(&g1[0], &g2[0])
        );
        assert!(max_diff(&g1[0], &Tensor::zeros_like(&g1[0]).unwrap()) > 1e-3);
    }

    #[test]
    fn layer_norm_kernel_matches_the_composed_op_forward_and_backward() {
        let x = rand(&[2, 100, 24], 2);
        let gamma = rand(&[24], 3);
        let beta = rand(&[24], 4);
        let f = |t: &[&Tensor]| layer_norm(t[0], t[1], t[2], 1e-5).unwrap();
        let (y1, g1) = fast(f, &[&x, &gamma, &beta]);
        let (y2, g2) = reference(f, &[&x, &gamma, &beta]);
        assert!(max_diff(&y1, &y2) < 1e-5, "y {}", max_diff(&y1, &y2));
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let d = max_diff(a, b);
            assert!(d < 1e-4, "gradient {i} differs by {d}");
        }
    }

    #[test]
    fn layer_norm_gradient_matches_finite_differences() {
        let x = rand(&[3, 8], 5).to_dtype(DType::F64).unwrap();
        let gamma = rand(&[8], 6).to_dtype(DType::F64).unwrap();
        let beta = rand(&[8], 7).to_dtype(DType::F64).unwrap();
        let w = rand(&[3, 8], 8).to_dtype(DType::F64).unwrap();
        let loss = |x: &Tensor| -> f64 {
            (layer_norm(x, &gamma, &beta, 1e-5).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let xv = Var::from_tensor(&x).unwrap();
        let grads = (layer_norm(&xv, &gamma, &beta, 1e-5).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let analytic: Vec<f64> = grads
            .get(&xv)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let flat: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        for i in [0usize, 5, 13, 23] {
            let mut p = flat.clone();
            let mut m = flat.clone();
            p[i] += 1e-6;
            m[i] -= 1e-6;
            let tp = Tensor::from_vec(p, (3, 8), &Device::Cpu).unwrap();
            let tm = Tensor::from_vec(m, (3, 8), &Device::Cpu).unwrap();
            let numeric = (loss(&tp) - loss(&tm)) / 2e-6;
            assert!(
                (numeric - analytic[i]).abs() < 1e-5,
                "x[{i}]: {numeric} vs {}",
                analytic[i]
            );
        }
    }
}
