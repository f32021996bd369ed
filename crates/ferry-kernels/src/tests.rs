//! Tests of the kernels: each fused op against its composed twin (in f64 where it matters)
//! and against finite differences.

use candle_core::{DType, Device, Tensor, Var};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256StarStar;

use super::*;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Xoshiro256StarStar::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| ((r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32)
        .collect();
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
        let bias =
            ((Tensor::from_vec(keep, (b, s), &Device::Cpu).unwrap() - 1.0).unwrap() * 1e9).unwrap();
        for with_bias in [false, true] {
            let f = |t: &[&Tensor]| self_attention(t[0], h, with_bias.then_some(&bias)).unwrap();
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
        let bias =
            ((Tensor::from_vec(keep, (b, s), &Device::Cpu).unwrap() - 1.0).unwrap() * 1e9).unwrap();
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
