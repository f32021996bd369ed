//! Forward-only kernels for graph execution: a linear layer over `[in, out]` weights (ONNX's
//! MatMul layout) with the bias folded into the GEMM and an optional GELU applied in place,
//! a vectorized GELU, and SwiGLU's gating (`silu(gate) * up`) in one pass.

use candle_core::Tensor;
use rayon::prelude::*;

use super::gemm::{matmul, threads, View};
use super::{fast_path, host_slices};
use crate::packed_gemm::{gemm_packed, PackedMatrix};
use crate::qgemm::{qgemm, PackedQ8};
use crate::Activation;

/// Elements per parallel task of the element-wise loops.
const CHUNK: usize = 1 << 14;

/// `erf(x)` as a rational function of `x` clamped to [-4, 4] (beyond which f32 erf is
/// +-1): branch-free, so loops over it vectorize. Within 1e-6 of the exact value (tested).
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_600_1e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329_2e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    x * p / q
}

#[inline(always)]
fn gelu_slice(v: &mut [f32]) {
    for z in v.iter_mut() {
        *z = 0.5 * *z * (1.0 + erf_fast(*z * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Applies GELU in place, with AVX-512 when the CPU has it.
fn gelu_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn wide(v: &mut [f32]) {
            gelu_slice(v)
        }
        let f = crate::cpu::features();
        if f.avx512f && f.fma {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above).
            return unsafe { wide(v) };
        }
    }
    gelu_slice(v)
}

fn gelu_par(v: &mut [f32]) {
    v.par_chunks_mut(CHUNK).for_each(gelu_in_place);
}

/// GELU (erf form) for inference: [`erf_fast`] on CPU f32, candle's `gelu_erf` elsewhere.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if !fast_path(&[x]) {
        return x.gelu_erf();
    }
    let mut out = host_slices(&[x], |s| s[0].to_vec())?;
    gelu_par(&mut out);
    Tensor::from_vec(out, x.shape(), x.device())
}

/// `silu(g) * u` over a chunk, with the exponential of [`crate::fast_exp`].
#[inline(always)]
fn silu_mul_slice<const FMA: bool>(out: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + crate::fast_exp::exp_with::<FMA>(-g)) * u;
    }
}

/// `silu(g) * u` over a chunk, with AVX-512 and FMA when the CPU has them.
fn silu_mul_chunk(out: &mut [f32], g: &[f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn wide(out: &mut [f32], g: &[f32], u: &[f32]) {
            silu_mul_slice::<true>(out, g, u)
        }
        let f = crate::cpu::features();
        if f.avx512f && f.fma {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above).
            return unsafe { wide(out, g, u) };
        }
    }
    silu_mul_slice::<false>(out, g, u)
}

/// SwiGLU's gating for inference, `silu(gate) * up` (Llama's MLP between its up and down
/// projections): on CPU f32 one pass over both, in parallel chunks, with an exponential that
/// vectorizes (within 2 ulp of libm's); candle's `silu` and product elsewhere, or when the
/// shapes differ (candle then says how).
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if !fast_path(&[gate, up]) || gate.shape() != up.shape() {
        return gate.silu()? * up;
    }
    let out = host_slices(&[gate, up], |s| {
        let mut out = vec![0f32; s[0].len()];
        out.par_chunks_mut(CHUNK)
            .zip(s[0].par_chunks(CHUNK).zip(s[1].par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| silu_mul_chunk(o, g, u));
        out
    })?;
    Tensor::from_vec(out, gate.shape(), gate.device())
}

/// `act(x W + b)` for inference: `x` `[.., in]`, `weight` `[in, out]` (ONNX MatMul layout),
/// `bias` `[out]`. On CPU f32 the bias is the GEMM's starting value and the activation runs
/// in place; elsewhere it is composed from candle ops.
pub fn linear_in_out(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    act: Option<Activation>,
) -> candle_core::Result<Tensor> {
    let (k, n) = weight.dims2()?;
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) || bias.elem_count() != n {
        candle_core::bail!(
            "linear: x {dims:?}, weight [{k}, {n}], bias {:?} do not fit",
            bias.dims()
        );
    }
    let m: usize = dims[..dims.len() - 1].iter().product();
    let mut out_dims = dims[..dims.len() - 1].to_vec();
    out_dims.push(n);
    if !fast_path(&[x, weight, bias]) {
        let y = x.reshape((m, k))?.matmul(weight)?.broadcast_add(bias)?;
        let y = match act {
            Some(a) => a.apply(&y)?,
            None => y,
        };
        return y.reshape(out_dims);
    }
    let mut out = vec![0f32; m * n];
    host_slices(&[x, weight, bias], |s| {
        let (xs, ws, bs) = (s[0], s[1], s[2].to_vec());
        out.par_chunks_mut(n * 64).for_each(|rows| {
            for r in rows.chunks_mut(n) {
                r.copy_from_slice(&bs);
            }
        });
        matmul(
            (m, n, k),
            &mut out,
            View::rows(0, n),
            true,
            xs,
            View::rows(0, k),
            ws,
            View::rows(0, n),
            1.0,
            threads(),
        );
    })?;
    match act {
        Some(Activation::Gelu) => gelu_par(&mut out),
        Some(Activation::Relu) => out
            .par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0))),
        None => {}
    }
    Tensor::from_vec(out, out_dims, x.device())
}

/// `act(x W + b)` for inference with `W` packed once ([`PackedMatrix`]): `x` `[.., in]` f32 on
/// CPU, `bias` `[out]`. The bias starts each tile and the activation runs on each tile while it
/// is in cache.
pub fn linear_packed(
    x: &Tensor,
    weight: &PackedMatrix,
    bias: &Tensor,
    act: Option<Activation>,
) -> candle_core::Result<Tensor> {
    let (k, n) = (weight.k(), weight.n());
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) || bias.elem_count() != n || !fast_path(&[x, bias]) {
        candle_core::bail!(
            "linear: x {dims:?} ({:?}), packed weight [{k}, {n}], bias {:?} do not fit",
            x.dtype(),
            bias.dims()
        );
    }
    let m: usize = dims[..dims.len() - 1].iter().product();
    let mut out_dims = dims[..dims.len() - 1].to_vec();
    out_dims.push(n);
    let out = host_slices(&[x, bias], |s| {
        let epilogue: &(dyn Fn(&mut [f32]) + Sync) = match act {
            Some(Activation::Gelu) => &gelu_in_place,
            Some(Activation::Relu) => &|r: &mut [f32]| r.iter_mut().for_each(|v| *v = v.max(0.0)),
            None => &|_: &mut [f32]| {},
        };
        gemm_packed(m, s[0], weight, Some(s[1]), epilogue)
    })?;
    Tensor::from_vec(out, out_dims, x.device())
}

/// `x W^T + bias` for a GGML-quantized `W` packed for the int8 kernel ([`PackedQ8`]): `x`
/// `[..., k]` f32 on the CPU is quantized to 8 bits per block of 32 (llama.cpp's `q8_0`
/// activations) and multiplied in int8; the result is `[..., n]` f32.
pub fn linear_q8(
    x: &Tensor,
    weight: &PackedQ8,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (k, n) = (weight.k(), weight.n());
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) || bias.is_some_and(|b| b.elem_count() != n) || !fast_path(&[x]) {
        candle_core::bail!(
            "linear: x {dims:?} ({:?}), int8 weight [{n}, {k}], bias {:?} do not fit",
            x.dtype(),
            bias.map(Tensor::dims)
        );
    }
    let m: usize = dims[..dims.len() - 1].iter().product();
    let mut out_dims = dims[..dims.len() - 1].to_vec();
    out_dims.push(n);
    let mut ts = vec![x];
    ts.extend(bias);
    let out = host_slices(&ts, |s| qgemm(m, s[0], weight, s.get(1).copied()))?;
    Tensor::from_vec(out, out_dims, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn silu_mul_matches_candles_silu_and_product() {
        let dev = Device::Cpu;
        let n = 3 * CHUNK + 17;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 20011) as f32 - 10005.0) / 97.0)
            .collect();
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 104729 % 1009) as f32 - 504.0) / 50.0)
            .collect();
        let g = Tensor::from_vec(g, n, &dev).unwrap();
        let u = Tensor::from_vec(u, n, &dev).unwrap();
        let fused: Vec<f32> = silu_mul(&g, &u).unwrap().to_vec1().unwrap();
        let composed: Vec<f32> = (g.silu().unwrap() * &u).unwrap().to_vec1().unwrap();
        for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "element {i}: fused {a}, composed {b}"
            );
        }
        // Extremes: a very negative gate gives 0, a very positive one the gate itself, NaN
        // stays NaN.
        let g = Tensor::new(&[-200f32, 200.0, f32::NAN, 0.0], &dev).unwrap();
        let u = Tensor::new(&[3f32, 0.5, 1.0, 7.0], &dev).unwrap();
        let y: Vec<f32> = silu_mul(&g, &u).unwrap().to_vec1().unwrap();
        assert!(y[0] <= 0.0 && y[0] > -1e-30, "{}", y[0]);
        assert_eq!(y[1], 100.0);
        assert!(y[2].is_nan());
        assert_eq!(y[3], 0.0);
    }

    #[test]
    fn erf_fast_is_within_1e6_of_candles_erf() {
        let mut worst = 0f32;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            worst = worst.max((erf_fast(x) - candle_core::cpu::erf::erf_f32(x)).abs());
        }
        assert!(worst < 1e-6, "max error {worst}");
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn linear_in_out_matches_composed_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (16, 24), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 24, &dev).unwrap();
        for act in [None, Some(Activation::Gelu), Some(Activation::Relu)] {
            let got = linear_in_out(&x, &w, &b, act).unwrap();
            let y = x.broadcast_matmul(&w).unwrap().broadcast_add(&b).unwrap();
            let want = match act {
                Some(a) => a.apply(&y).unwrap(),
                None => y,
            };
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "{act:?}: {diff}");
        }
    }

    #[test]
    fn linear_packed_matches_linear_in_out() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 40), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (40, 70), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 70, &dev).unwrap();
        let Some(packed) = PackedMatrix::pack(&w.flatten_all().unwrap().to_vec1().unwrap(), 40, 70)
        else {
            return; // no AVX-512 on this CPU: callers use linear_in_out
        };
        for act in [None, Some(Activation::Gelu), Some(Activation::Relu)] {
            let got = linear_packed(&x, &packed, &b, act).unwrap();
            let want = linear_in_out(&x, &w, &b, act).unwrap();
            assert_eq!(got.dims(), &[3, 5, 70]);
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "{act:?}: {diff}");
        }
        assert!(linear_packed(&x.narrow(2, 0, 39).unwrap(), &packed, &b, None).is_err());
    }
}
