//! Normalization ops: BatchNormalization (inference and training mode) and
//! LayerNormalization (with its Mean and InvStdDev outputs; ferry-kernels' kernel for f32 on
//! the CPU), and RMSNormalization, InstanceNormalization, GroupNormalization,
//! MeanVarianceNormalization, LpNormalization and LRN, computed in f32 (f64 for f64 inputs)
//! and returned in the input type.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, broadcast_shape, norm_axis, opt, per_channel, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "BatchNormalization" => batch_norm,
        "LayerNormalization" => layer_norm_op,
        "RMSNormalization" => rms_norm,
        "InstanceNormalization" => instance_norm,
        "LpNormalization" => lp_norm,
        "GroupNormalization" => group_norm,
        "MeanVarianceNormalization" => mvn,
        "LRN" => lrn,
        _ => return None,
    })
}

/// The type to compute in: f64 stays f64, everything else widens to f32.
fn work(x: &Tensor) -> R<Tensor> {
    if !x.dtype().is_float() {
        bail!("needs a float input, not {:?}", x.dtype());
    }
    let to = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    Ok(x.to_dtype(to)?)
}

/// `x / sqrt(mean(x^2 over the dims from axis) + eps) * scale`.
fn rms_norm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let scale = arg(&args, 1)?;
    let axis = norm_axis(node.attr_int("axis", -1), x.rank())?;
    let out = broadcast_shape(x.dims(), scale.dims())?;
    cx.fits("its output", &out, DType::F64)?;
    let xf = work(x)?;
    let dims: Vec<usize> = (axis..x.rank()).collect();
    let ms = xf.sqr()?.mean_keepdim(dims.as_slice())?;
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    let y = xf
        .broadcast_div(&(ms + eps)?.sqrt()?)?
        .broadcast_mul(&scale.to_dtype(xf.dtype())?)?;
    Ok(vec![y.to_dtype(x.dtype())?])
}

/// Per-instance, per-channel normalization over the spatial dims, then `scale * y + bias`.
fn instance_norm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if x.rank() < 3 {
        bail!("input {:?} needs [N, C, spatial...]", x.dims());
    }
    let c = x.dims()[1];
    let mut per = vec![1; x.rank()];
    per[1] = c;
    let (s, b) = (arg(&args, 1)?, arg(&args, 2)?);
    if s.elem_count() != c || b.elem_count() != c {
        bail!("scale and bias need {c} values");
    }
    cx.fits("its output", x.dims(), DType::F64)?;
    let xf = work(x)?;
    let s = s.to_dtype(xf.dtype())?.reshape(per.as_slice())?;
    let b = b.to_dtype(xf.dtype())?.reshape(per.as_slice())?;
    let dims: Vec<usize> = (2..x.rank()).collect();
    let mean = xf.mean_keepdim(dims.as_slice())?;
    let d = xf.broadcast_sub(&mean)?;
    let var = d.sqr()?.mean_keepdim(dims.as_slice())?;
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    let y = d
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&s)?
        .broadcast_add(&b)?;
    Ok(vec![y.to_dtype(x.dtype())?])
}

/// `x / (sum over axis of x^p)^(1/p)`, with `p` 1 or 2; zero where the norm is zero.
fn lp_norm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = norm_axis(node.attr_int("axis", -1), x.rank())?;
    let p = node.attr_int("p", 2);
    cx.fits("its output", x.dims(), DType::F64)?;
    let xf = work(x)?;
    let norm = match p {
        1 => xf.abs()?.sum_keepdim(axis)?,
        2 => xf.sqr()?.sum_keepdim(axis)?.sqrt()?,
        _ => bail!("p must be 1 or 2, not {p}"),
    };
    let zero = norm.eq(0.0)?;
    let safe = zero.where_cond(&norm.ones_like()?, &norm)?;
    let y = xf.broadcast_div(&safe)?;
    let y = zero
        .broadcast_as(y.dims())?
        .where_cond(&y.zeros_like()?, &y)?;
    Ok(vec![y.to_dtype(x.dtype())?])
}

/// Normalizes each group of `num_groups` channel groups per instance, then applies a
/// per-channel (opset 21; per-group before it) `scale` and `bias`.
fn group_norm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if x.rank() < 2 {
        bail!("input {:?} needs [N, C, ...]", x.dims());
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let g = node.attr_int("num_groups", 0);
    if g < 1 || c % g as usize != 0 {
        bail!("{c} channels do not split into num_groups {g}");
    }
    let g = g as usize;
    let (s, b) = (arg(&args, 1)?, arg(&args, 2)?);
    let per = if s.elem_count() == c && b.elem_count() == c {
        c
    } else if s.elem_count() == g && b.elem_count() == g {
        g
    } else {
        bail!("scale and bias need {c} (or {g}) values");
    };
    cx.fits("its output", x.dims(), DType::F64)?;
    let xf = work(x)?;
    let rest: usize = x.dims()[2..].iter().product();
    let grouped = xf.reshape((n, g, (c / g) * rest))?;
    let mean = grouped.mean_keepdim(2)?;
    let d = grouped.broadcast_sub(&mean)?;
    let var = d.sqr()?.mean_keepdim(2)?;
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    let y = d.broadcast_div(&(var + eps)?.sqrt()?)?;
    let (s, b) = (s.to_dtype(xf.dtype())?, b.to_dtype(xf.dtype())?);
    let y = if per == c {
        y.reshape((n, c, rest))?
            .broadcast_mul(&s.reshape((c, 1))?)?
            .broadcast_add(&b.reshape((c, 1))?)?
    } else {
        y.broadcast_mul(&s.reshape((g, 1))?)?
            .broadcast_add(&b.reshape((g, 1))?)?
    };
    Ok(vec![y.reshape(x.dims())?.to_dtype(x.dtype())?])
}

/// `(x - mean) / sqrt(variance)` over `axes` (default `[0, 2, 3]`).
fn mvn(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axes = node.attr_ints("axes").unwrap_or(&[0, 2, 3]);
    let mut dims = axes
        .iter()
        .map(|&a| norm_axis(a, x.rank()))
        .collect::<R<Vec<_>>>()?;
    dims.sort_unstable();
    dims.dedup();
    cx.fits("its output", x.dims(), DType::F64)?;
    let xf = work(x)?;
    let mean = xf.mean_keepdim(dims.as_slice())?;
    let d = xf.broadcast_sub(&mean)?;
    let var = d.sqr()?.mean_keepdim(dims.as_slice())?;
    let y = d.broadcast_div(&(var + 1e-9)?.sqrt()?)?;
    Ok(vec![y.to_dtype(x.dtype())?])
}

/// Local response normalization across channels of `[N, C, ...]`:
/// `x / (bias + alpha / size * sum of x^2 over the nearby channels)^beta`.
fn lrn(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if x.rank() < 3 {
        bail!("input {:?} needs [N, C, spatial...]", x.dims());
    }
    let size = node.attr_int("size", 0);
    if size < 1 {
        bail!("size {size} must be positive");
    }
    let size = size as usize;
    let (alpha, beta) = (
        node.attr_float("alpha", 1e-4),
        node.attr_float("beta", 0.75),
    );
    let bias = node.attr_float("bias", 1.0);
    cx.fits("its output", x.dims(), DType::F64)?;
    let xf = work(x)?;
    let c = x.dims()[1];
    let sq = xf.sqr()?;
    let (before, after) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let mut sums = Vec::with_capacity(c);
    for ci in 0..c {
        let lo = ci.saturating_sub(before);
        let hi = (ci + after + 1).min(c);
        sums.push(sq.narrow(1, lo, hi - lo)?.sum_keepdim(1)?);
    }
    let sum = Tensor::cat(&sums, 1)?;
    let den = ((sum * (alpha as f64 / size as f64))? + bias as f64)?.powf(beta as f64)?;
    Ok(vec![(xf / den)?.to_dtype(x.dtype())?])
}

fn batch_norm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let r = x.rank();
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    let scale = per_channel(arg(&args, 1)?, r)?;
    let bias = per_channel(arg(&args, 2)?, r)?;
    let mut mean = per_channel(arg(&args, 3)?, r)?;
    let mut var = per_channel(arg(&args, 4)?, r)?;
    let mut out = x.dims().to_vec();
    for v in [&scale, &bias, &mean, &var] {
        out = broadcast_shape(&out, v.dims())?;
    }
    cx.fits("its output", &out, x.dtype())?;
    let training = node.attr_int("training_mode", 0) != 0;
    let mut running = Vec::new();
    if training {
        // Normalize by the batch statistics; the running ones move towards them.
        let momentum = node.attr_float("momentum", 0.9) as f64;
        let dims: Vec<usize> = (0..r).filter(|&d| d != 1).collect();
        let batch_mean = x.mean_keepdim(dims.as_slice())?;
        let batch_var = x
            .broadcast_sub(&batch_mean)?
            .sqr()?
            .mean_keepdim(dims.as_slice())?;
        let c = x.dims()[1];
        for (run, batch) in [(&mean, &batch_mean), (&var, &batch_var)] {
            let moved = ((run * momentum)?.broadcast_add(&(batch * (1.0 - momentum))?))?;
            running.push(moved.reshape(c)?);
        }
        mean = batch_mean;
        var = batch_var;
    }
    let inv = (var + eps)?.sqrt()?.recip()?;
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_mul(&(inv.broadcast_mul(&scale))?)?
        .broadcast_add(&bias)?;
    let mut outs = vec![y];
    outs.extend(running);
    Ok(outs)
}

/// Layer normalization over the dims from `axis` on: `(x - mean) / sqrt(var + eps) * scale + bias`.
fn layer_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    axis: usize,
    eps: f32,
) -> R<Tensor> {
    let last = axis + 1 == x.rank();
    if last && x.dtype() == DType::F32 && x.device().is_cpu() {
        let d = x.dims()[axis];
        let beta = match bias {
            Some(b) => b.clone(),
            None => Tensor::zeros(d, DType::F32, x.device())?,
        };
        return Ok(ferry_kernels::layer_norm(
            x,
            &scale.flatten_all()?,
            &beta.flatten_all()?,
            eps as f64,
        )?);
    }
    let dims: Vec<usize> = (axis..x.rank()).collect();
    let xf = x.to_dtype(DType::F32)?;
    let mean = xf.mean_keepdim(dims.as_slice())?;
    let c = xf.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(dims.as_slice())?;
    let y = c
        .broadcast_div(&(var + eps as f64)?.sqrt()?)?
        .to_dtype(x.dtype())?;
    let y = y.broadcast_mul(scale)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

fn layer_norm_op(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = norm_axis(node.attr_int("axis", -1), x.rank())?;
    let (scale, bias) = (arg(&args, 1)?, opt(&args, 2));
    let mut out = broadcast_shape(x.dims(), scale.dims())?;
    if let Some(b) = bias {
        out = broadcast_shape(&out, b.dims())?;
    }
    cx.fits("its output", &out, x.dtype())?;
    let eps = node.attr_float("epsilon", 1e-5);
    let y = layer_norm(x, scale, bias, axis, eps)?;
    if node.outputs.iter().skip(1).all(String::is_empty) {
        return Ok(vec![y]);
    }
    // Mean and InvStdDev: per row over the normalized dims, kept as size-1 dims, in the
    // input type (as the reference implementation returns them).
    let dims: Vec<usize> = (axis..x.rank()).collect();
    let xf = x.to_dtype(DType::F32)?;
    let mean = xf.mean_keepdim(dims.as_slice())?;
    let var = xf
        .broadcast_sub(&mean)?
        .sqr()?
        .mean_keepdim(dims.as_slice())?;
    let inv = (var + eps as f64)?.sqrt()?.recip()?;
    Ok(vec![y, mean.to_dtype(x.dtype())?, inv.to_dtype(x.dtype())?])
}
