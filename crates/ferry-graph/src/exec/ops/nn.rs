//! Convolutional-network and normalization ops: Conv (1-D, 2-D), BatchNormalization
//! (inference), MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, LayerNormalization.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, norm_axis, opt, R};
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

/// Spatial padding `[begin..., end...]` for `spatial` dims, resolving `auto_pad`.
fn pads(
    node: &Node,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
) -> R<Vec<(usize, usize)>> {
    let n = kernel.len();
    let auto = node.attr_str("auto_pad").unwrap_or("NOTSET");
    Ok(match auto {
        "SAME_UPPER" | "SAME_LOWER" => (0..n)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                let eff = kernel[i].saturating_sub(1) * dil[i] + 1;
                let total = (out.saturating_sub(1) * strides[i] + eff).saturating_sub(input[i]);
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
            Some(p) => candle_core::bail!("pads {p:?} do not match {n} spatial dimensions"),
            None => vec![(0, 0); n],
        },
    })
}

/// An attribute of one positive value per spatial dimension (`default` for each when absent).
fn usizes(node: &Node, name: &str, n: usize, default: usize) -> R<Vec<usize>> {
    match node.attr_ints(name) {
        Some(v) if v.len() == n => Ok(v.iter().map(|&x| x.max(1) as usize).collect()),
        Some(v) => {
            candle_core::bail!("`{name}` {v:?} does not have one value per spatial dimension ({n})")
        }
        None => Ok(vec![default; n]),
    }
}

fn uniform(v: &[usize], what: &str) -> R<usize> {
    match v.first() {
        Some(&f) if v.iter().all(|&x| x == f) => Ok(f),
        None => Ok(1),
        _ => candle_core::bail!("different {what} per dimension ({v:?}) are not supported"),
    }
}

/// Pads spatial dims (from dim 2) with `value`.
fn pad_spatial(x: &Tensor, p: &[(usize, usize)], value: f64) -> R<Tensor> {
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

fn conv(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let w = arg(&args, 1)?;
    let spatial = x.rank().saturating_sub(2);
    if w.rank() != x.rank() {
        candle_core::bail!("weights {:?} do not match input {:?}", w.dims(), x.dims());
    }
    let kernel: Vec<usize> = w.dims()[2..].to_vec();
    let strides = usizes(node, "strides", spatial, 1)?;
    let dil = usizes(node, "dilations", spatial, 1)?;
    let groups = node.attr_int("group", 1).max(1) as usize;
    let p = pads(node, &x.dims()[2..], &kernel, &strides, &dil)?;
    let sym = p.iter().all(|&(l, r)| l == r) && p.iter().all(|&(l, _)| l == p[0].0);
    let (x, padding) = if sym {
        (x.clone(), p.first().map_or(0, |q| q.0))
    } else {
        (pad_spatial(x, &p, 0.0)?, 0)
    };
    let (stride, dilation) = (uniform(&strides, "strides")?, uniform(&dil, "dilations")?);
    let y = match spatial {
        1 => x.conv1d(w, padding, stride, dilation, groups)?,
        2 => x.conv2d(w, padding, stride, dilation, groups)?,
        n => candle_core::bail!("{n}-D convolution is not supported (1-D and 2-D are)"),
    };
    let y = match opt(&args, 2) {
        Some(b) => {
            let mut shape = vec![1; y.rank()];
            shape[1] = b.elem_count();
            y.broadcast_add(&b.reshape(shape)?)?
        }
        None => y,
    };
    Ok(vec![y])
}

/// Reshapes a per-channel vector to broadcast over `[N, C, ...]`.
fn per_channel(v: &Tensor, rank: usize) -> R<Tensor> {
    let mut shape = vec![1; rank];
    shape[1] = v.elem_count();
    v.reshape(shape)
}

fn batch_norm(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    if node.attr_int("training_mode", 0) != 0 {
        candle_core::bail!(
            "training-mode BatchNormalization is not supported (export the model in eval mode)"
        );
    }
    let x = arg(&args, 0)?;
    let r = x.rank();
    let eps = node.attr_float("epsilon", 1e-5) as f64;
    let scale = per_channel(arg(&args, 1)?, r)?;
    let bias = per_channel(arg(&args, 2)?, r)?;
    let mean = per_channel(arg(&args, 3)?, r)?;
    let var = per_channel(arg(&args, 4)?, r)?;
    let inv = (var + eps)?.sqrt()?.recip()?;
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_mul(&(inv * scale)?)?
        .broadcast_add(&bias)?;
    Ok(vec![y])
}

fn pool(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    if x.rank() != 4 {
        candle_core::bail!(
            "{}-D pooling is not supported (2-D is)",
            x.rank().saturating_sub(2)
        );
    }
    if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        candle_core::bail!("MaxPool's Indices output is not supported");
    }
    let kernel = node
        .attr_ints("kernel_shape")
        .filter(|k| k.len() == 2)
        .map(|k| k.iter().map(|&v| v.max(1) as usize).collect::<Vec<_>>())
        .ok_or_else(|| candle_core::Error::Msg("kernel_shape must hold 2 values".into()))?;
    let strides = usizes(node, "strides", 2, 1)?;
    let dil = usizes(node, "dilations", 2, 1)?;
    if dil.iter().any(|&d| d != 1) {
        candle_core::bail!("dilated pooling is not supported");
    }
    let (h, w) = (x.dims()[2], x.dims()[3]);
    let explicit = pads(node, &[h, w], &kernel, &strides, &dil)?;
    // ceil_mode: extra end padding so the last partial window counts; it never counts as
    // input (nor, for AveragePool, as padding).
    let mut full = explicit.clone();
    if node.attr_int("ceil_mode", 0) != 0 {
        for (i, q) in full.iter_mut().enumerate() {
            let len = x.dims()[2 + i] + q.0 + q.1;
            let rem = len.saturating_sub(kernel[i]) % strides[i];
            if rem != 0 {
                q.1 += strides[i] - rem;
            }
        }
    }
    let k = (kernel[0], kernel[1]);
    let s = (strides[0], strides[1]);
    if node.op_type == "MaxPool" {
        return Ok(vec![
            pad_spatial(x, &full, f64::from(f32::MIN))?.max_pool2d_with_stride(k, s)?
        ]);
    }
    let mean = pad_spatial(x, &full, 0.0)?.avg_pool2d_with_stride(k, s)?;
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
    let covered = pad_spatial(&mask, &around, 0.0)?.avg_pool2d_with_stride(k, s)?;
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
pub(crate) fn layer_norm(
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
        return ferry_kernels::layer_norm(
            x,
            &scale.flatten_all()?,
            &beta.flatten_all()?,
            eps as f64,
        );
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
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

fn layer_norm_op(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = norm_axis(node.attr_int("axis", -1), x.rank())?;
    if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        candle_core::bail!("LayerNormalization's Mean and InvStdDev outputs are not supported");
    }
    let y = layer_norm(
        x,
        arg(&args, 1)?,
        opt(&args, 2),
        axis,
        node.attr_float("epsilon", 1e-5),
    )?;
    Ok(vec![y])
}
