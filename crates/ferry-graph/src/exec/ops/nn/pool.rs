//! Pooling: MaxPool (with Indices), AveragePool and LpPool (any spatial rank, dilations,
//! ceil_mode) on the host, MaxUnpool, GlobalAveragePool and GlobalMaxPool.

use candle_core::{DType, Tensor};

use super::super::OpCx;
use super::{effective_kernel, pad_spatial, padded, pads, unravel, usizes};
use crate::exec::util::{arg, bail, opt, R};
use crate::ir::Node;

pub(super) fn pool(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let spatial = x.rank().saturating_sub(2);
    if spatial == 0 {
        bail!("input {:?} has no spatial dimensions", x.dims());
    }
    let kernel = node
        .attr_ints("kernel_shape")
        .filter(|k| k.len() == spatial && k.iter().all(|&v| v >= 1))
        .map(|k| k.iter().map(|&v| v as usize).collect::<Vec<_>>())
        .ok_or_else(|| {
            candle_core::Error::Msg(format!("kernel_shape must hold {spatial} positive values"))
        })?;
    let strides = usizes(node, "strides", spatial, 1)?;
    let dil = usizes(node, "dilations", spatial, 1)?;
    let indices = node.outputs.iter().skip(1).any(|o| !o.is_empty());
    let ceil = node.attr_int("ceil_mode", 0) != 0;
    let p = pads(node, &x.dims()[2..], &kernel, &strides, &dil)?;
    if spatial != 2 || indices || ceil || node.op_type == "LpPool" || dil.iter().any(|&d| d != 1) {
        return host_pool(node, cx, x, &kernel, &strides, &dil, &p, ceil);
    }
    let k = (kernel[0], kernel[1]);
    let s = (strides[0], strides[1]);
    if node.op_type == "MaxPool" {
        return Ok(vec![
            pad_spatial(cx, x, &p, f64::from(f32::MIN))?.max_pool2d_with_stride(k, s)?
        ]);
    }
    let mean = pad_spatial(cx, x, &p, 0.0)?.avg_pool2d_with_stride(k, s)?;
    if p.iter().all(|&(l, r)| l == 0 && r == 0) || node.attr_int("count_include_pad", 0) != 0 {
        return Ok(vec![mean]);
    }
    // Divide by the number of input elements each window really covers.
    let (h, w) = (x.dims()[2], x.dims()[3]);
    let mask = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
    let covered = pad_spatial(cx, &mask, &p, 0.0)?.avg_pool2d_with_stride(k, s)?;
    Ok(vec![mean.broadcast_div(&covered)?])
}

/// Pooling of any spatial rank on the host, as ONNX's reference implementation does it:
/// dilations, `ceil_mode` (a last window must start inside the input or its begin padding),
/// MaxPool's Indices output (`storage_order`), AveragePool's `count_include_pad` and LpPool
/// (`(sum of |x|^p over the window)^(1/p)`, padding counting as zeros).
#[allow(clippy::too_many_arguments)]
fn host_pool(
    node: &Node,
    cx: &OpCx,
    x: &Tensor,
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
    p: &[(usize, usize)],
    ceil: bool,
) -> R<Vec<Tensor>> {
    let n = kernel.len();
    let input = &x.dims()[2..];
    let eff = effective_kernel(kernel, dil)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let span = padded(input[i], p[i])? - eff[i];
        let mut o = if ceil {
            span.div_ceil(strides[i]) + 1
        } else {
            span / strides[i] + 1
        };
        if ceil && (o - 1).saturating_mul(strides[i]) >= input[i] + p[i].0 {
            o -= 1;
        }
        out.push(o);
    }
    let (batch, channels) = (x.dims()[0], x.dims()[1]);
    let mut shape = vec![batch, channels];
    shape.extend(&out);
    cx.fits("its output", &shape, DType::F64)?;
    let op = node.op_type.as_str();
    let include = node.attr_int("count_include_pad", 0) != 0;
    let lp = node.attr_int("p", 2);
    if op == "LpPool" && lp < 1 {
        bail!("LpPool's p must be positive, not {lp}");
    }
    let column_major = node.attr_int("storage_order", 0) != 0;
    let xs = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let in_size: usize = input.iter().product();
    let out_size: usize = out.iter().product();
    let window: usize = kernel.iter().product();
    let mut ys = Vec::with_capacity(batch * channels * out_size);
    let mut idx = Vec::with_capacity(if op == "MaxPool" { ys.capacity() } else { 0 });
    let mut o = vec![0usize; n];
    let mut k = vec![0usize; n];
    for plane in 0..batch * channels {
        let base = plane * in_size;
        for flat in 0..out_size {
            unravel(flat, &out, &mut o);
            let (mut best, mut best_at) = (f64::NEG_INFINITY, None);
            let (mut sum, mut count) = (0f64, 0usize);
            for kflat in 0..window {
                unravel(kflat, kernel, &mut k);
                // Position in the padded input; past its end (ceil_mode) counts for nothing.
                let mut real = true;
                let mut at = 0usize;
                let mut at_cm = 0usize;
                let mut stride_cm = 1usize;
                let mut beyond = false;
                for i in 0..n {
                    let q = o[i] * strides[i] + k[i] * dil[i];
                    if q >= input[i] + p[i].0 + p[i].1 {
                        beyond = true;
                    }
                    if q < p[i].0 || q >= p[i].0 + input[i] {
                        real = false;
                    } else {
                        let v = q - p[i].0;
                        at = at * input[i] + v;
                        at_cm += v * stride_cm;
                        stride_cm *= input[i];
                    }
                }
                if beyond {
                    continue;
                }
                if !real {
                    if include {
                        count += 1;
                    }
                    continue;
                }
                let v = xs[base + at];
                count += 1;
                match op {
                    "MaxPool" => {
                        if best_at.is_none() || v > best {
                            best = v;
                            best_at = Some(if column_major { at_cm } else { at });
                        }
                    }
                    "LpPool" => sum += v.abs().powi(lp as i32),
                    _ => sum += v,
                }
            }
            match op {
                "MaxPool" => {
                    ys.push(if best_at.is_some() { best } else { 0.0 });
                    idx.push(best_at.map_or(-1, |a| (base + a) as i64));
                }
                "LpPool" => ys.push(sum.powf(1.0 / lp as f64)),
                _ => ys.push(sum / count as f64),
            }
        }
    }
    let y = Tensor::from_vec(ys, shape.as_slice(), x.device())?.to_dtype(x.dtype())?;
    if op == "MaxPool" {
        let i = Tensor::from_vec(idx, shape.as_slice(), x.device())?;
        return Ok(vec![y, i]);
    }
    Ok(vec![y])
}

/// Scatters each value to its flat `indices` position in the shape MaxPool took it from,
/// placed at the start of `output_shape` when that is given.
pub(super) fn max_unpool(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let indices = arg(&args, 1)?;
    let n = x.rank().saturating_sub(2);
    if n == 0 || indices.dims() != x.dims() {
        bail!(
            "values {:?} and indices {:?} do not match",
            x.dims(),
            indices.dims()
        );
    }
    let kernel = usizes(node, "kernel_shape", n, 0)?;
    if kernel.contains(&0) {
        bail!("kernel_shape must hold {n} positive values");
    }
    let strides = usizes(node, "strides", n, 1)?;
    let p = match node.attr_ints("pads") {
        Some(p) if p.len() == 2 * n => p.to_vec(),
        Some(p) => bail!("pads {p:?} do not match {n} spatial dimensions"),
        None => vec![0; 2 * n],
    };
    let mut inferred = x.dims()[..2].to_vec();
    for i in 0..n {
        let v =
            (x.dims()[i + 2] as i64 - 1) * strides[i] as i64 - (p[i] + p[i + n]) + kernel[i] as i64;
        if v < 1 {
            bail!("the unpooled size {v} of dimension {i} is not positive");
        }
        inferred.push(v as usize);
    }
    let shape: Vec<usize> = match opt(&args, 2) {
        Some(s) => {
            let s = crate::exec::util::ints_of(s)?;
            if s.len() != inferred.len() || s.iter().zip(&inferred).any(|(&a, &b)| a < b as i64) {
                bail!("output_shape {s:?} is smaller than the unpooled {inferred:?}");
            }
            s.iter().map(|&v| v as usize).collect()
        }
        None => inferred.clone(),
    };
    cx.fits("its output", &shape, DType::F64)?;
    let total: usize = inferred.iter().product();
    let mut y = vec![0f64; total];
    let xs = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    for (&v, &i) in xs.iter().zip(&crate::exec::util::ints_of(indices)?) {
        if i < 0 || i as usize >= total {
            bail!("index {i} is outside the {total} unpooled values");
        }
        y[i as usize] = v;
    }
    let mut out = Tensor::from_vec(y, inferred.as_slice(), x.device())?;
    for (d, (&want, &have)) in shape.iter().zip(&inferred).enumerate() {
        if want > have {
            out = out.pad_with_zeros(d, 0, want - have)?;
        }
    }
    Ok(vec![out.to_dtype(x.dtype())?])
}

pub(super) fn global_pool(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
