//! ferry-kernels: fast CPU kernels on candle, shared by training (ferry-train, which needs
//! their backward passes) and graph execution (ferry-graph, which runs fused ops with them):
//! softmax, layer normalization, embedding lookup (with or without positions), linear layers,
//! self-attention, and a whole transformer encoder layer as one op.
//!
//! candle's fused `softmax_last_dim`, `layer_norm` and `rms_norm` have no backward pass
//! (candle issues #2168, #2977, #3011): gradients through them silently vanish. These ops
//! have one. On CPU with f32 they run as single-pass custom kernels whose backward is also a
//! kernel; elsewhere they are composed from candle primitives, which autograd differentiates.
//! Both paths are tested against each other and against finite differences.

#![warn(missing_docs)]

mod activation;
mod attention;
mod causal_attention;
pub mod cpu;
mod embedding;
mod encoder_layer;
mod fast_exp;
mod gemm;
mod inference;
mod layer_norm;
mod linear;
mod packed_gemm;
pub mod qgemm;

pub use activation::Activation;
pub use attention::{attention_inference, self_attention};
pub use causal_attention::{causal_attention, CausalMask};
pub use embedding::{embedding, embedding_with_positions};
pub use encoder_layer::{encoder_layer, EncoderLayerParams, EncoderLayerSpec};
pub use inference::{erf_fast, gelu_erf, linear_in_out, linear_packed, linear_q8};
pub use layer_norm::{add_layer_norm, layer_norm};
pub use linear::linear;
pub use packed_gemm::{avx512_available, gemm_packed, PackedMatrix};

/// Process-wide settings for CPU work (training and graph execution), to call once at program start before any tensor
/// work (the `ferry` binary and the benchmarks do): candle's barrier-pool workers spin 25 000
/// times before sleeping, which on a machine with as many threads as cores steals a core
/// from the matrix multiplies (measured: 5-15% of a transformer step on 2 cores). A value the
/// user set in `CANDLE_BARRIER_POOL_SPIN_LIMIT` is kept.
pub fn init_cpu_runtime() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: called at start-up, before any thread is spawned.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100") };
    }
}

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per parallel task: small tensors stay on one thread.
const ROWS_PER_TASK: usize = 64;

pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expects a contiguous f32 tensor"),
    }
}

/// Calls `f` with the f32 data of CPU tensors (made contiguous first), borrowed, not copied.
pub(crate) fn host_slices<R>(
    ts: &[&Tensor],
    f: impl FnOnce(&[&[f32]]) -> R,
) -> candle_core::Result<R> {
    let owned: Vec<Tensor> = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (s, l) in &guards {
        match (&**s, l.contiguous_offsets()) {
            (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => slices.push(&v[a..b]),
            _ => candle_core::bail!("expected contiguous f32 CPU tensors"),
        }
    }
    Ok(f(&slices))
}

pub(crate) fn fast_path(xs: &[&Tensor]) -> bool {
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

    #[test]
    fn linear_kernel_matches_matmul_forward_and_backward() {
        // Narrower than one 32-column panel, and wider than one with ragged edges.
        for (rows, inp, out) in [(70, 24, 10), (130, 40, 45)] {
            let x = rand(&[rows, inp], 11);
            let w = rand(&[out, inp], 12);
            let b = rand(&[out], 13);
            let f = |t: &[&Tensor]| linear(t[0], t[1], Some(t[2]), None).unwrap();
            let (y1, g1) = fast(f, &[&x, &w, &b]);
            let (y2, g2) = reference(f, &[&x, &w, &b]);
            assert!(max_diff(&y1, &y2) < 1e-4, "{rows}x{inp}x{out}");
            for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
                assert!(
                    max_diff(a, b) < 1e-3,
                    "{rows}x{inp}x{out}: gradient {i} differs by {}",
                    max_diff(a, b)
                );
            }
        }
    }

    #[test]
    fn fused_activations_match_the_composed_ops() {
        let x = rand(&[3, 7, 12], 21);
        let w = rand(&[9, 12], 22);
        let b = rand(&[9], 23);
        for act in [crate::Activation::Relu, crate::Activation::Gelu] {
            let f = |t: &[&Tensor]| linear(t[0], t[1], Some(t[2]), Some(act)).unwrap();
            let (y1, g1) = fast(f, &[&x, &w, &b]);
            let (y2, g2) = reference(f, &[&x, &w, &b]);
            assert_eq!(y1.dims(), &[3, 7, 9]);
            assert!(max_diff(&y1, &y2) < 1e-4, "{act:?} forward");
            for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
                assert!(
                    max_diff(a, b) < 1e-3,
                    "{act:?} gradient {i} differs by {}",
                    max_diff(a, b)
                );
            }
        }
    }

    #[test]
    fn embedding_kernel_matches_index_select_forward_and_backward() {
        let w = rand(&[30, 6], 14);
        let ids = Tensor::new(&[[3u32, 7, 3], [29, 0, 7]], &Device::Cpu).unwrap();
        let f = |t: &[&Tensor]| embedding(t[0], &ids).unwrap();
        let (y1, g1) = fast(f, &[&w]);
        let (y2, g2) = reference(f, &[&w]);
        assert_eq!(y1.dims(), &[2, 3, 6]);
        assert!(max_diff(&y1, &y2) < 1e-6);
        assert!(max_diff(&g1[0], &g2[0]) < 1e-5);
        let bad = Tensor::new(&[30u32], &Device::Cpu).unwrap();
        let err = embedding(&w, &bad).unwrap_err().to_string();
        assert!(err.contains("token id 30"), "{err}");
    }

    #[test]
    fn embedding_with_positions_matches_lookup_plus_positions() {
        // 3 tokens of a 5-position table: the positions are narrowed, and repeated ids
        // accumulate.
        let (w, pos) = (rand(&[30, 6], 16), rand(&[5, 6], 17));
        let ids = Tensor::new(&[[3u32, 7, 3], [29, 0, 7]], &Device::Cpu).unwrap();
        let f = |t: &[&Tensor]| embedding_with_positions(t[0], t[1], &ids).unwrap();
        let (y1, g1) = fast(f, &[&w, &pos]);
        let composed = |t: &[&Tensor]| {
            let p = t[1].narrow(0, 0, 3).unwrap();
            embedding(t[0], &ids).unwrap().broadcast_add(&p).unwrap()
        };
        let (y2, g2) = reference(composed, &[&w, &pos]);
        assert_eq!(y1.dims(), &[2, 3, 6]);
        assert!(max_diff(&y1, &y2) < 1e-6);
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
        }
        let err = embedding_with_positions(&w, &pos.narrow(0, 0, 2).unwrap(), &ids)
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not cover 3 tokens"), "{err}");
    }

    #[test]
    fn attention_kernel_matches_the_composed_op_forward_and_backward() {
        // (batch, seq, heads, head size): head size 4 has no kernel (composed path); 32 and
        // 64 run the kernels, with sequence lengths that are not multiples of their tiles
        // (12 rows, 32 columns). The last sequence of each batch ends in 2 padding tokens.
        for (b, s, h, hd) in [(3, 5, 2, 4), (2, 37, 2, 32), (1, 70, 1, 64)] {
            let qkv = (rand(&[b, s, 3 * h * hd], 15 + s as u64) * 0.5).unwrap();
            let mut keep = vec![1f32; b * s];
            keep[b * s - 2..].fill(0.0);
            let bias = ((Tensor::from_vec(keep, (b, s), &Device::Cpu).unwrap() - 1.0).unwrap()
                * 1e9)
                .unwrap();
            for with_bias in [false, true] {
                let f =
                    |t: &[&Tensor]| self_attention(t[0], h, with_bias.then_some(&bias)).unwrap();
                let (y1, g1) = fast(f, &[&qkv]);
                let (y2, g2) = reference(f, &[&qkv]);
                let what = format!("[{b}, {s}] x {h} heads of {hd}, bias {with_bias}");
                assert!(
                    max_diff(&y1, &y2) < 1e-5,
                    "{what}: forward {}",
                    max_diff(&y1, &y2)
                );
                assert!(
                    max_diff(&g1[0], &g2[0]) < 1e-4,
                    "{what}: backward {}",
                    max_diff(&g1[0], &g2[0])
                );
            }
        }
    }

    /// An encoder layer from its parts (`t`: x, then the parameters in
    /// [`EncoderLayerParams`] order), as a caller without the fused op would build it.
    fn layer_from_parts(
        t: &[&Tensor],
        spec: &EncoderLayerSpec,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let eps = spec.eps;
        let attn = |x: &Tensor| {
            let qkv = linear(x, t[1], Some(t[2]), None)?;
            linear(
                &self_attention(&qkv, spec.heads, bias)?,
                t[3],
                Some(t[4]),
                None,
            )
        };
        let ff = |x: &Tensor| {
            let h = linear(x, t[7], Some(t[8]), Some(spec.activation))?;
            linear(&h, t[9], Some(t[10]), None)
        };
        if spec.norm_first {
            let x1 = (t[0] + attn(&layer_norm(t[0], t[5], t[6], eps)?)?)?;
            &x1 + ff(&layer_norm(&x1, t[11], t[12], eps)?)?
        } else {
            let x1 = add_layer_norm(t[0], &attn(t[0])?, t[5], t[6], eps)?;
            add_layer_norm(&x1, &ff(&x1)?, t[11], t[12], eps)
        }
    }

    #[test]
    fn fused_encoder_layer_matches_the_layer_from_its_parts() {
        // Post-norm ReLU with a padding bias and head size 32 (the tiled attention), and
        // pre-norm GELU with head size 8; ragged sequences, feed-forward widths that are not
        // multiples of 32 (partial panels read in place).
        let cases = [
            (3, 13, 64, 2, 80, Activation::Relu, false, true),
            (2, 21, 32, 4, 48, Activation::Gelu, true, false),
        ];
        for (b, s, d, heads, ff, activation, norm_first, with_bias) in cases {
            let spec = EncoderLayerSpec {
                heads,
                activation,
                norm_first,
                eps: 1e-5,
            };
            let shapes: [&[usize]; 13] = [
                &[b, s, d],
                &[3 * d, d],
                &[3 * d],
                &[d, d],
                &[d],
                &[d],
                &[d],
                &[ff, d],
                &[ff],
                &[d, ff],
                &[d],
                &[d],
                &[d],
            ];
            let inputs: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, sh)| {
                    let r = rand(sh, 40 + i as u64);
                    match i {
                        0 => r,
                        5 | 11 => ((r * 0.2).unwrap() + 1.0).unwrap(),
                        _ => (r * 0.3).unwrap(),
                    }
                })
                .collect();
            let mut keep = vec![1f32; b * s];
            keep[b * s - 3..].fill(0.0);
            let bias = ((Tensor::from_vec(keep, (b, s), &Device::Cpu).unwrap() - 1.0).unwrap()
                * 1e9)
                .unwrap();
            let bias = with_bias.then_some(&bias);
            let f = |t: &[&Tensor]| {
                let params = EncoderLayerParams {
                    in_proj: (t[1], t[2]),
                    out_proj: (t[3], t[4]),
                    norm1: (t[5], t[6]),
                    linear1: (t[7], t[8]),
                    linear2: (t[9], t[10]),
                    norm2: (t[11], t[12]),
                };
                let fused = encoder_layer(t[0], &params, &spec, bias).unwrap();
                // f32 on the CPU takes the fused op; the f64 reference, the parts.
                assert_eq!(fused.is_some(), t[0].dtype() == DType::F32);
                fused.unwrap_or_else(|| layer_from_parts(t, &spec, bias).unwrap())
            };
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let (y1, g1) = fast(f, &refs);
            let (y2, g2) = reference(f, &refs);
            let what = format!("norm_first {norm_first}, {activation:?}, bias {with_bias}");
            assert!(
                max_diff(&y1, &y2) < 1e-4,
                "{what}: forward {}",
                max_diff(&y1, &y2)
            );
            for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
                let scale = 1.0 + max_diff(b, &b.zeros_like().unwrap());
                let d = max_diff(a, b);
                assert!(
                    d < 1e-4 * scale,
                    "{what}: gradient {i} differs by {d} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn fused_encoder_layer_names_a_misshapen_parameter_and_key_bias() {
        let (d, ff) = (16, 24);
        let t = |sh: &[usize], seed| rand(sh, seed);
        let x = t(&[2, 5, d], 60);
        let (in_w, in_b, out_w, out_b) = (
            t(&[3 * d, d], 61),
            t(&[3 * d], 62),
            t(&[d, d], 63),
            t(&[d], 64),
        );
        let (g, beta, l1_w, l2_w) = (t(&[d], 65), t(&[d], 66), t(&[ff, d], 67), t(&[d, ff], 68));
        let (bad_l1_b, l2_b) = (t(&[ff + 1], 69), t(&[d], 70));
        let spec = EncoderLayerSpec {
            heads: 2,
            activation: Activation::Relu,
            norm_first: false,
            eps: 1e-5,
        };
        let mut params = EncoderLayerParams {
            in_proj: (&in_w, &in_b),
            out_proj: (&out_w, &out_b),
            norm1: (&g, &beta),
            linear1: (&l1_w, &bad_l1_b),
            linear2: (&l2_w, &l2_b),
            norm2: (&g, &beta),
        };
        let err = encoder_layer(&x, &params, &spec, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("linear1 bias is [25], expected [24]"), "{err}");
        let l1_b = t(&[ff], 71);
        params.linear1 = (&l1_w, &l1_b);
        let bias = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let err = encoder_layer(&x, &params, &spec, Some(&bias))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key bias [2, 4] is not [batch 2, seq 5]"),
            "{err}"
        );
        assert!(encoder_layer(&x, &params, &spec, None).unwrap().is_some());
    }

    #[test]
    fn fused_residual_layer_norm_matches_the_composed_op() {
        let x = rand(&[2, 70, 16], 31);
        let r = rand(&[2, 70, 16], 32);
        let gamma = rand(&[16], 33);
        let beta = rand(&[16], 34);
        let f = |t: &[&Tensor]| add_layer_norm(t[0], t[1], t[2], t[3], 1e-5).unwrap();
        let (y1, g1) = fast(f, &[&x, &r, &gamma, &beta]);
        let (y2, g2) = reference(f, &[&x, &r, &gamma, &beta]);
        assert!(max_diff(&y1, &y2) < 1e-5);
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            assert!(
                max_diff(a, b) < 1e-4,
                "gradient {i} differs by {}",
                max_diff(a, b)
            );
        }
    }
}
