//! Convolutional-network and normalization ops: Conv (1-D, 2-D), BatchNormalization
//! (inference), MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, LayerNormalization.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, broadcast_shape, norm_axis, opt, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Conv" => conv,
        "BatchNormalization" => batch_norm,
        "MaxPool" | "AveragePool" => pool,
        "GlobalAveragePool" | "GlobalMaxPool" => global_pool,
        "LayerNormalization" => layer_norm_op,
        _ => return None,
    })
}

/// Spatial padding `[begin..., end...]` for `spatial` dims, resolving `auto_pad`. The kernel
/// (dilated) must fit the input; sizes are computed with overflow checks.
fn pads(
    node: &Node,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
) -> R<Vec<(usize, usize)>> {
    let n = kernel.len();
    let auto = node.attr_str("auto_pad").unwrap_or("NOTSET");
    let eff = effective_kernel(kernel, dil)?;
    let p = match auto {
        "SAME_UPPER" | "SAME_LOWER" => (0..n)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                // (out - 1) * stride < input; a saturated total fails `padded` below.
                let total = (out.saturating_sub(1) * strides[i])
                    .saturating_add(eff[i])
                    .saturating_sub(input[i]);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect(),
        "VALID" => vec![(0, 0); n],
        _ => match node.attr_ints("pads") {
            Some(p) if p.len() == 2 * n => (0..n)
                .map(|i| (p[i].max(0) as usize, p[i + n].max(0) as usize))
                .collect(),
            Some(p) => bail!("pads {p:?} do not match {n} spatial dimensions"),
            None => vec![(0, 0); n],
        },
    };
    for i in 0..n {
        if padded(input[i], p[i])? < eff[i] {
            bail!(
                "the kernel {kernel:?} (dilations {dil:?}) does not fit the input {input:?} padded by {p:?}"
            );
        }
    }
    Ok(p)
}

/// The extent of each dilated kernel dimension, `(k - 1) * dilation + 1`.
fn effective_kernel(kernel: &[usize], dil: &[usize]) -> R<Vec<usize>> {
    kernel
        .iter()
        .zip(dil)
        .map(|(&k, &d)| {
            k.saturating_sub(1)
                .checked_mul(d)
                .and_then(|e| e.checked_add(1))
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "kernel {kernel:?} with dilations {dil:?} overflows"
                    ))
                    .into()
                })
        })
        .collect()
}

/// `len` padded by `(begin, end)`.
fn padded(len: usize, (l, r): (usize, usize)) -> R<usize> {
    match len.checked_add(l).and_then(|n| n.checked_add(r)) {
        Some(n) => Ok(n),
        None => bail!("a dimension of {len} padded by ({l}, {r}) overflows"),
    }
}

/// The shape of `x` with its spatial dims (from dim 2) padded by `p`.
fn padded_shape(x: &Tensor, p: &[(usize, usize)]) -> R<Vec<usize>> {
    let mut dims = x.dims().to_vec();
    for (i, &q) in p.iter().enumerate() {
        dims[i + 2] = padded(dims[i + 2], q)?;
    }
    Ok(dims)
}

/// An attribute of one positive value per spatial dimension (`default` for each when absent).
fn usizes(node: &Node, name: &str, n: usize, default: usize) -> R<Vec<usize>> {
    match node.attr_ints(name) {
        Some(v) if v.len() == n => Ok(v.iter().map(|&x| x.max(1) as usize).collect()),
        Some(v) => {
            bail!("`{name}` {v:?} does not have one value per spatial dimension ({n})")
        }
        None => Ok(vec![default; n]),
    }
}

fn uniform(v: &[usize], what: &str) -> R<usize> {
    match v.first() {
        Some(&f) if v.iter().all(|&x| x == f) => Ok(f),
        None => Ok(1),
        _ => bail!("different {what} per dimension ({v:?}) are not supported"),
    }
}

/// Pads spatial dims (from dim 2) with `value`; the padded tensor must fit the budget.
fn pad_spatial(cx: &OpCx, x: &Tensor, p: &[(usize, usize)], value: f64) -> R<Tensor> {
    cx.fits("its padded input", &padded_shape(x, p)?, x.dtype())?;
    let mut x = x.clone();
    for (i, &(l, r)) in p.iter().enumerate() {
        if l == 0 && r == 0 {
            continue;
        }
        let d = i + 2;
        x = if value == 0.0 {
            x.pad_with_zeros(d, l, r)?
        } else {
            let mut dims = x.dims().to_vec();
            let mut parts = Vec::new();
            if l > 0 {
                dims[d] = l;
                parts.push((Tensor::ones(dims.as_slice(), x.dtype(), x.device())? * value)?);
            }
            parts.push(x.clone());
            if r > 0 {
                dims[d] = r;
                parts.push((Tensor::ones(dims.as_slice(), x.dtype(), x.device())? * value)?);
            }
            Tensor::cat(&parts, d)?
        };
    }
    Ok(x)
}

fn conv(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let w = arg(&args, 1)?;
    let spatial = x.rank().saturating_sub(2);
    if !(1..=2).contains(&spatial) {
        bail!("{spatial}-D convolution is not supported (1-D and 2-D are)");
    }
    if w.rank() != x.rank() {
        bail!("weights {:?} do not match input {:?}", w.dims(), x.dims());
    }
    let (c, m, per_group) = (x.dims()[1], w.dims()[0], w.dims()[1]);
    let groups = node.attr_int("group", 1);
    if groups < 1 || per_group.checked_mul(groups as usize) != Some(c) || m % groups as usize != 0 {
        bail!(
            "{groups} groups of weights {:?} do not fit input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let groups = groups as usize;
    let kernel: Vec<usize> = w.dims()[2..].to_vec();
    let strides = usizes(node, "strides", spatial, 1)?;
    let dil = usizes(node, "dilations", spatial, 1)?;
    let p = pads(node, &x.dims()[2..], &kernel, &strides, &dil)?;
    let grown = padded_shape(x, &p)?;
    cx.fits("its padded input", &grown, x.dtype())?;
    let eff = effective_kernel(&kernel, &dil)?;
    let mut out = vec![x.dims()[0], m];
    out.extend((0..spatial).map(|i| (grown[i + 2] - eff[i]) / strides[i] + 1));
    cx.fits("its output", &out, x.dtype())?;
    if spatial == 1 {
        // candle's 1-D convolution unfolds the input: [N, length out, C / groups x kernel].
        cx.fits(
            "its unfolded input",
            &[x.dims()[0], out[2], per_group * kernel[0]],
            x.dtype(),
        )?;
    }
    let sym = p.iter().all(|&(l, r)| l == r) && p.iter().all(|&(l, _)| l == p[0].0);
    let (x, padding) = if sym {
        (x.clone(), p.first().map_or(0, |q| q.0))
    } else {
        (pad_spatial(cx, x, &p, 0.0)?, 0)
    };
    let (stride, dilation) = (uniform(&strides, "strides")?, uniform(&dil, "dilations")?);
    let y = if spatial == 1 {
        x.conv1d(w, padding, stride, dilation, groups)?
    } else {
        x.conv2d(w, padding, stride, dilation, groups)?
    };
    let y = match opt(&args, 2) {
        Some(b) => {
            let b = per_channel(b, y.rank())?;
            cx.fits(
                "its output",
                &broadcast_shape(y.dims(), b.dims())?,
                y.dtype(),
            )?;
            y.broadcast_add(&b)?
        }
        None => y,
    };
    Ok(vec![y])
}

/// Reshapes a per-channel vector to broadcast over `[N, C, ...]` (`rank` at least 2).
fn per_channel(v: &Tensor, rank: usize) -> R<Tensor> {
    if rank < 2 {
        bail!("an input of rank {rank} has no channel dimension");
    }
    let mut shape = vec![1; rank];
    shape[1] = v.elem_count();
    Ok(v.reshape(shape)?)
}

fn batch_norm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    if node.attr_int("training_mode", 0) != 0 {
        bail!("training-mode BatchNormalization is not supported (export the model in eval mode)");
    }
    let x = arg(&args, 0)?;
    let r = x.rank();
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    let scale = per_channel(arg(&args, 1)?, r)?;
    let bias = per_channel(arg(&args, 2)?, r)?;
    let mean = per_channel(arg(&args, 3)?, r)?;
    let var = per_channel(arg(&args, 4)?, r)?;
    let mut out = x.dims().to_vec();
    for v in [&scale, &bias, &mean, &var] {
        out = broadcast_shape(&out, v.dims())?;
    }
    cx.fits("its output", &out, x.dtype())?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_mul(&(inv * scale)?)?
        .broadcast_add(&bias)?;
    Ok(vec![y])
}

fn pool(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if x.rank() != 4 {
        bail!(
            "{}-D pooling is not supported (2-D is)",
            x.rank().saturating_sub(2)
        );
    }
    if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        bail!("MaxPool's Indices output is not supported");
    }
    let kernel = node
        .attr_ints("kernel_shape")
        .filter(|k| k.len() == 2)
        .map(|k| k.iter().map(|&v| v.max(1) as usize).collect::<Vec<_>>())
        .ok_or_else(|| candle_core::Error::Msg("kernel_shape must hold 2 values".into()))?;
    let strides = usizes(node, "strides", 2, 1)?;
    let dil = usizes(node, "dilations", 2, 1)?;
    if dil.iter().any(|&d| d != 1) {
        bail!("dilated pooling is not supported");
    }
    let (h, w) = (x.dims()[2], x.dims()[3]);
    let explicit = pads(node, &[h, w], &kernel, &strides, &dil)?;
    // ceil_mode: extra end padding so the last partial window counts; it never counts as
    // input (nor, for AveragePool, as padding).
    let mut full = explicit.clone();
    if node.attr_int("ceil_mode", 0) != 0 {
        for (i, q) in full.iter_mut().enumerate() {
            let rem = (padded(x.dims()[2 + i], *q)? - kernel[i]) % strides[i];
            if rem != 0 {
                q.1 = q.1.saturating_add(strides[i] - rem);
            }
        }
    }
    let k = (kernel[0], kernel[1]);
    let s = (strides[0], strides[1]);
    if node.op_type == "MaxPool" {
        return Ok(vec![
            pad_spatial(cx, x, &full, f64::from(f32::MIN))?.max_pool2d_with_stride(k, s)?
        ]);
    }
    let mean = pad_spatial(cx, x, &full, 0.0)?.avg_pool2d_with_stride(k, s)?;
    if full.iter().all(|&(l, r)| l == 0 && r == 0) {
        return Ok(vec![mean]);
    }
    // Divide by the number of elements each window really covers: the input, plus the
    // explicit padding when count_include_pad is set.
    let include = node.attr_int("count_include_pad", 0) != 0;
    let (mask, around) = if include {
        let grown = (
            h + explicit[0].0 + explicit[0].1,
            w + explicit[1].0 + explicit[1].1,
        );
        let extra: Vec<(usize, usize)> = (0..2)
            .map(|i| (full[i].0 - explicit[i].0, full[i].1 - explicit[i].1))
            .collect();
        (
            Tensor::ones((1, 1, grown.0, grown.1), x.dtype(), x.device())?,
            extra,
        )
    } else {
        (
            Tensor::ones((1, 1, h, w), x.dtype(), x.device())?,
            full.clone(),
        )
    };
    let covered = pad_spatial(cx, &mask, &around, 0.0)?.avg_pool2d_with_stride(k, s)?;
    Ok(vec![mean.broadcast_div(&covered)?])
}

fn global_pool(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let mut y = x.clone();
    for d in (2..x.rank()).rev() {
        y = if node.op_type == "GlobalAveragePool" {
            y.mean_keepdim(d)?
        } else {
            y.max_keepdim(d)?
        };
    }
    Ok(vec![y])
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
    if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        bail!("LayerNormalization's Mean and InvStdDev outputs are not supported");
    }
    let (scale, bias) = (arg(&args, 1)?, opt(&args, 2));
    let mut out = broadcast_shape(x.dims(), scale.dims())?;
    if let Some(b) = bias {
        out = broadcast_shape(&out, b.dims())?;
    }
    cx.fits("its output", &out, x.dtype())?;
    let y = layer_norm(x, scale, bias, axis, node.attr_float("epsilon", 1e-5))?;
    Ok(vec![y])
}
