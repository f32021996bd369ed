//! ferry's fused ops (domain `com.ferry`, see [`crate::onnx`] for their definitions) and the
//! standard `Gelu` (opset 20), run by ferry-kernels where a kernel exists.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, broadcast_shape, opt, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Gelu" | "GeluTanh" => gelu,
        "Attention" => attention,
        "PackedAttention" => packed_attention,
        "AddLayerNorm" => add_layer_norm,
        "MatMulBias" | "MatMulBiasGelu" => matmul_bias,
        _ => return None,
    })
}

pub(super) fn lookup_standard(op: &str) -> Option<OpFn> {
    (op == "Gelu").then_some(gelu as OpFn)
}

fn gelu(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let tanh = node.op_type == "GeluTanh" || node.attr_str("approximate") == Some("tanh");
    Ok(vec![if tanh {
        x.gelu()?
    } else {
        ferry_kernels::gelu_erf(x)?
    }])
}

/// Whether the op reads its `W` through [`OpCx::packed`] when the executor packed it.
pub(super) fn takes_packed_weight(op: &str) -> bool {
    matches!(op, "MatMulBias" | "MatMulBiasGelu")
}

/// `MatMulBias(X, W, B)` = `X W + B`, `MatMulBiasGelu` = `Gelu(X W + B)`, with `W` 2-D; with
/// `W` packed at load ([`OpCx::packed`]) when it is a constant on CPU.
fn matmul_bias(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let act = (node.op_type == "MatMulBiasGelu").then_some(ferry_kernels::Activation::Gelu);
    let (x, bias) = (arg(&args, 0)?, arg(&args, 2)?);
    let n = match cx.packed {
        Some(w) => w.n(),
        None => arg(&args, 1)?.dims2()?.1,
    };
    let mut out = x.dims().to_vec();
    if let Some(last) = out.last_mut() {
        *last = n;
    }
    cx.fits("its output", &out, x.dtype())?;
    match cx.packed {
        Some(w) if x.dtype() == DType::F32 && x.device().is_cpu() => {
            Ok(vec![ferry_kernels::linear_packed(x, w, bias, act)?])
        }
        Some(_) if opt(&args, 1).is_none() => bail!(
            "the weight was packed at load for f32 input on CPU, but the input is {:?} on {:?}",
            x.dtype(),
            x.device().location()
        ),
        _ => Ok(vec![ferry_kernels::linear_in_out(
            x,
            arg(&args, 1)?,
            bias,
            act,
        )?]),
    }
}

/// `Attention(Q, K, V, Bias)`: see the module docs of [`crate::onnx`]. Its scores
/// `[batch, heads, seq, seq]` (plus the bias) are checked against the budget, as the unfused
/// graph's would be.
fn attention(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let (q, k, v) = (arg(&args, 0)?, arg(&args, 1)?, arg(&args, 2)?);
    let bias = arg(&args, 3)?;
    let heads = node.attr_int("num_heads", 0);
    let scale = scale_attr(node)?;
    let (b, s, d) = q.dims3()?;
    if heads <= 0 || d % heads as usize != 0 || k.dims() != q.dims() || v.dims() != q.dims() {
        bail!(
            "Q {:?}, K {:?}, V {:?} with {heads} heads: expected equal [batch, seq, heads x head_size]",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let heads = heads as usize;
    let scores = broadcast_shape(&[b, heads, s, s], bias.dims())?;
    cx.fits("its attention scores", &scores, q.dtype())?;
    if let Some(key_bias) = key_bias(bias, b, s)? {
        if q.dtype() == DType::F32 && q.device().is_cpu() {
            let qkv = Tensor::cat(&[q, k, v], 2)?;
            return Ok(vec![ferry_kernels::attention_inference(
                &qkv,
                heads,
                key_bias.as_ref(),
                scale,
            )?]);
        }
    }
    let hd = d / heads;
    let split = |t: &Tensor| t.reshape((b, s, heads, hd))?.transpose(1, 2)?.contiguous();
    let (qh, kh, vh) = (split(q)?, split(k)?, split(v)?);
    let scores =
        (qh.matmul(&kh.t()?)? * scale as f64)?.broadcast_add(&bias.to_dtype(q.dtype())?)?;
    let probs = super::reduce::softmax_axis(&scores, 3)?;
    let ctx = probs.matmul(&vh)?.transpose(1, 2)?.reshape((b, s, d))?;
    Ok(vec![ctx])
}

/// The `scale` attribute of an attention node (required: a default would be a silent guess).
fn scale_attr(node: &Node) -> R<f32> {
    match node.attrs.get("scale") {
        Some(crate::ir::Attr::Float(s)) => Ok(*s),
        _ => bail!("the `scale` attribute is missing"),
    }
}

/// `AddLayerNorm(A, B, Scale, Bias)` = `LayerNormalization(A + B)` over the last axis.
fn add_layer_norm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let (a, b) = (arg(&args, 0)?, arg(&args, 1)?);
    let out = broadcast_shape(a.dims(), b.dims())?;
    cx.fits("its output", &out, a.dtype())?;
    let (scale, bias) = (arg(&args, 2)?.flatten_all()?, arg(&args, 3)?.flatten_all()?);
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    Ok(vec![ferry_kernels::add_layer_norm(
        a, b, &scale, &bias, eps,
    )?])
}

/// `PackedAttention(QKV, Bias)`: [`attention`] with Q, K, V the thirds of `QKV`'s last axis.
fn packed_attention(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let qkv = arg(&args, 0)?;
    let bias = arg(&args, 1)?;
    let (b, s, d3) = qkv.dims3()?;
    let heads = node.attr_int("num_heads", 0);
    if d3 % 3 != 0 || heads <= 0 || (d3 / 3) % heads as usize != 0 {
        bail!(
            "QKV {:?} is not [batch, seq, 3 x heads ({heads}) x head_size]",
            qkv.dims()
        );
    }
    cx.fits(
        "its attention scores",
        &[b, heads as usize, s, s],
        qkv.dtype(),
    )?;
    if qkv.dtype() == DType::F32 && qkv.device().is_cpu() {
        if let Some(key_bias) = key_bias(bias, b, s)? {
            let scale = scale_attr(node)?;
            return Ok(vec![ferry_kernels::attention_inference(
                qkv,
                heads as usize,
                key_bias.as_ref(),
                scale,
            )?]);
        }
    }
    let d = d3 / 3;
    let parts = vec![
        Some(qkv.narrow(2, 0, d)?),
        Some(qkv.narrow(2, d, d)?),
        Some(qkv.narrow(2, 2 * d, d)?),
        Some(bias.clone()),
    ];
    attention(node, cx, parts)
}

/// The bias as one value per key (`[batch, seq]`) when that is all it holds: a scalar 0
/// (`Some(None)`), a `[.., seq]` row per batch, or a full `[batch|1, 1, seq, seq]` mask whose
/// rows are all the same (a padding mask built per query, as transformers 5 exports it; checked
/// on the values at run time). `None` when the kernel cannot take it.
fn key_bias(bias: &Tensor, b: usize, s: usize) -> R<Option<Option<Tensor>>> {
    let dims = bias.dims().to_vec();
    if bias.elem_count() == 1 {
        let v = bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0];
        return Ok((v == 0.0).then_some(None));
    }
    let r = dims.len();
    if r == 0 || r > 4 || s == 0 || dims[r - 1] != s {
        return Ok(None);
    }
    // Left-pad to [B', H', Q', s].
    let mut d4 = vec![1usize; 4 - r];
    d4.extend_from_slice(&dims);
    let (bb, hh, qq) = (d4[0], d4[1], d4[2]);
    if !(bb == b || bb == 1) || hh != 1 || !(qq == 1 || qq == s) {
        return Ok(None);
    }
    let v = bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut rows = Vec::with_capacity(bb * s);
    for bi in 0..bb {
        let block = &v[bi * qq * s..(bi + 1) * qq * s];
        let first = &block[..s];
        if block.chunks_exact(s).any(|row| row != first) {
            return Ok(None);
        }
        rows.extend_from_slice(first);
    }
    let per_key = Tensor::from_vec(rows, (bb, s), bias.device())?
        .broadcast_as((b, s))?
        .contiguous()?;
    Ok(Some(Some(per_key)))
}
