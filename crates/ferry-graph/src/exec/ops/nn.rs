//! Convolutional-network and normalization ops: Conv (1-D, 2-D), ConvInteger and
//! QLinearConv (on Conv), ConvTranspose (any spatial rank, on the host), CausalConvWithState,
//! DeformConv (2-D, on the host), BatchNormalization
//! (inference and training mode), MaxPool (with Indices), AveragePool and LpPool (any
//! spatial rank, dilations, ceil_mode), MaxUnpool, GlobalAveragePool, GlobalMaxPool,
//! LayerNormalization (with its Mean and InvStdDev outputs), and Resize (and Upsample),
//! GridSample, AffineGrid, RoiAlign and Col2Im on the host; the recurrent RNN, LSTM and GRU (default
//! activations) on the host.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, broadcast_shape, norm_axis, opt, R};
use crate::ir::{Attr, Node};

/// The row-major multi-index of `flat` in `dims`, written to `out` (same length).
fn unravel(mut flat: usize, dims: &[usize], out: &mut [usize]) {
    for (o, &d) in out.iter_mut().zip(dims).rev() {
        *o = flat % d;
        flat /= d;
    }
}

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Conv" => conv,
        "ConvInteger" | "QLinearConv" => conv_integer,
        "ConvTranspose" => conv_transpose,
        "CausalConvWithState" => causal_conv,
        "DeformConv" => deform_conv,
        "Resize" | "Upsample" => resize,
        "GridSample" => grid_sample,
        "RoiAlign" => roi_align,
        "AffineGrid" => affine_grid,
        "Col2Im" => col2im,
        "RNN" | "LSTM" | "GRU" => recurrent,
        "BatchNormalization" => batch_norm,
        "MaxPool" | "AveragePool" | "LpPool" => pool,
        "GlobalAveragePool" | "GlobalMaxPool" => global_pool,
        "MaxUnpool" => max_unpool,
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

/// An optional attribute of one integer per spatial dimension (`default` for each when absent).
fn ints_per_dim(node: &Node, name: &str, n: usize, default: i64) -> R<Vec<i64>> {
    match node.attr_ints(name) {
        Some(v) if v.len() == n => Ok(v.to_vec()),
        Some(v) => bail!("`{name}` {v:?} does not have one value per spatial dimension ({n})"),
        None => Ok(vec![default; n]),
    }
}

/// Transposed convolution as ONNX's reference implementation computes it: each input value
/// scatters `x * w` into the output at `i * stride + k * dilation - pad_begin`.
fn conv_transpose(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let w = arg(&args, 1)?;
    let n = x.rank().saturating_sub(2);
    if n == 0 || w.rank() != x.rank() {
        bail!(
            "input {:?} and weights {:?} do not match",
            x.dims(),
            w.dims()
        );
    }
    let (batch, c) = (x.dims()[0], x.dims()[1]);
    let groups = node.attr_int("group", 1);
    if groups < 1 || c % groups as usize != 0 || w.dims()[0] != c {
        bail!(
            "{groups} groups of weights {:?} do not fit input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let groups = groups as usize;
    let (cg, mg) = (c / groups, w.dims()[1]);
    let m = mg * groups;
    let input = &x.dims()[2..];
    let kernel = &w.dims()[2..];
    let strides = usizes(node, "strides", n, 1)?;
    let dil = usizes(node, "dilations", n, 1)?;
    let out_pad = ints_per_dim(node, "output_padding", n, 0)?;
    let eff = effective_kernel(kernel, &dil)?;
    // The full (unpadded) output extent of each dimension.
    let full: Vec<i64> = (0..n)
        .map(|i| {
            (strides[i] as i64)
                .saturating_mul(input[i] as i64 - 1)
                .saturating_add(out_pad[i])
                .saturating_add(eff[i] as i64)
        })
        .collect();
    let auto = node.attr_str("auto_pad").unwrap_or("NOTSET");
    let given = node.attr_ints("output_shape").map(<[i64]>::to_vec);
    let (begin, out): (Vec<i64>, Vec<i64>) = match (node.attr_ints("pads"), auto) {
        (None, "SAME_UPPER" | "SAME_LOWER") => {
            let out = match &given {
                Some(o) if o.len() == n => o.clone(),
                Some(o) => bail!("output_shape {o:?} does not match {n} spatial dimensions"),
                None => (0..n).map(|i| (input[i] * strides[i]) as i64).collect(),
            };
            let begin = (0..n)
                .map(|i| {
                    let total = full[i] - out[i];
                    if auto == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    }
                })
                .collect();
            (begin, out)
        }
        (pads, _) => {
            let p = match pads {
                Some(p) if p.len() == 2 * n => p.to_vec(),
                Some(p) => bail!("pads {p:?} do not match {n} spatial dimensions"),
                None => vec![0; 2 * n],
            };
            let out = match &given {
                Some(o) if o.len() == n => o.clone(),
                Some(o) => bail!("output_shape {o:?} does not match {n} spatial dimensions"),
                None => (0..n).map(|i| full[i] - p[i] - p[i + n]).collect(),
            };
            (p[..n].to_vec(), out)
        }
    };
    if out.iter().any(|&o| o < 1) {
        bail!("the output size {out:?} is not positive");
    }
    let out: Vec<usize> = out.iter().map(|&o| o as usize).collect();
    let mut shape = vec![batch, m];
    shape.extend(&out);
    cx.fits("its output", &shape, DType::F64)?;
    let xs = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let ws = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let (in_size, k_size): (usize, usize) = (input.iter().product(), kernel.iter().product());
    let out_size: usize = out.iter().product();
    let mut ys = vec![0f64; batch * m * out_size];
    if let Some(b) = opt(&args, 2) {
        let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        if b.len() != m {
            bail!("{} biases for {m} output channels", b.len());
        }
        for (i, y) in ys.iter_mut().enumerate() {
            *y = b[(i / out_size) % m];
        }
    }
    let (mut at, mut kat) = (vec![0usize; n], vec![0usize; n]);
    for ni in 0..batch {
        for ci in 0..c {
            let g = ci / cg;
            for iflat in 0..in_size {
                let v = xs[(ni * c + ci) * in_size + iflat];
                unravel(iflat, input, &mut at);
                'kernel: for kflat in 0..k_size {
                    unravel(kflat, kernel, &mut kat);
                    let mut o = 0usize;
                    for d in 0..n {
                        let pos = (at[d] * strides[d] + kat[d] * dil[d]) as i64 - begin[d];
                        if pos < 0 || pos >= out[d] as i64 {
                            continue 'kernel;
                        }
                        o = o * out[d] + pos as usize;
                    }
                    for mi in 0..mg {
                        let wv = ws[(ci * mg + mi) * k_size + kflat];
                        ys[(ni * m + g * mg + mi) * out_size + o] += v * wv;
                    }
                }
            }
        }
    }
    Ok(vec![
        Tensor::from_vec(ys, shape.as_slice(), x.device())?.to_dtype(x.dtype())?
    ])
}

/// `t - zero_point` as f64; a 1-D zero point of weights is per output channel.
fn centered(t: &Tensor, zp: Option<&Tensor>, per_channel: bool) -> R<Tensor> {
    let t = t.to_dtype(DType::F64)?;
    let Some(z) = zp else {
        return Ok(t);
    };
    let z = z.to_dtype(DType::F64)?;
    let z = if z.elem_count() == 1 {
        z.reshape(())?
    } else if per_channel && z.rank() == 1 {
        let mut shape = vec![1; t.rank()];
        shape[0] = z.elem_count();
        z.reshape(shape)?
    } else {
        bail!(
            "zero point {:?} is neither one value nor one per channel",
            z.dims()
        );
    };
    Ok(t.broadcast_sub(&z)?)
}

/// ConvInteger (`(x - x_zero) * (w - w_zero)`, as i32) and QLinearConv (that plus the i32
/// bias, rescaled by `x_scale * w_scale / y_scale` and saturated around `y_zero_point`).
fn conv_integer(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let q = node.op_type == "QLinearConv";
    let (x, xz, w, wz) = if q {
        (arg(&args, 0)?, opt(&args, 2), arg(&args, 3)?, opt(&args, 5))
    } else {
        (arg(&args, 0)?, opt(&args, 2), arg(&args, 1)?, opt(&args, 3))
    };
    if x.dtype().is_float() || w.dtype().is_float() {
        bail!("{} needs integer operands", node.op_type);
    }
    let bias = if q { opt(&args, 8).cloned() } else { None };
    let ins = vec![
        Some(centered(x, xz, false)?),
        Some(centered(w, wz, true)?),
        bias.map(|b| b.to_dtype(DType::F64)).transpose()?,
    ];
    let acc = conv(node, cx, ins)?.remove(0);
    if !q {
        return Ok(vec![acc.round()?.to_dtype(DType::I32)?]);
    }
    let (xs, ws, ys, yz) = (
        arg(&args, 1)?,
        arg(&args, 4)?,
        arg(&args, 6)?,
        arg(&args, 7)?,
    );
    let ws = ws.to_dtype(DType::F64)?;
    let ws = if ws.elem_count() > 1 {
        per_channel(&ws, acc.rank())?
    } else {
        ws.reshape(())?
    };
    let factor = ws
        .broadcast_mul(&xs.to_dtype(DType::F64)?.reshape(())?)?
        .broadcast_div(&ys.to_dtype(DType::F64)?.reshape(())?)?;
    let (lo, hi) = match yz.dtype() {
        DType::U8 => (0.0, 255.0),
        DType::I16 => (-128.0, 127.0),
        d => bail!("a {d:?} y_zero_point is not supported"),
    };
    let y = acc
        .round()?
        .broadcast_mul(&factor)?
        .broadcast_add(&yz.to_dtype(DType::F64)?.reshape(())?)?
        .clamp(lo, hi)?;
    let dims = y.dims().to_vec();
    let v: Vec<f64> = y
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(f64::round_ties_even)
        .collect();
    Ok(vec![
        Tensor::from_vec(v, dims, x.device())?.to_dtype(yz.dtype())?
    ])
}

/// Depthwise causal 1-D convolution over `[past_state, input]` with an optional SiLU; also
/// returns the last `k - 1` positions as the next state.
fn causal_conv(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let w = arg(&args, 1)?;
    let (b, c, l) = x.dims3()?;
    let (wc, one, k) = w.dims3()?;
    if wc != c || one != 1 || k == 0 {
        bail!(
            "weights {:?} are not [{c}, 1, k] for input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let silu = match node.attr_str("activation").unwrap_or("none") {
        "none" => false,
        "silu" | "swish" => true,
        a => bail!("activation `{a}` is not one of none, silu, swish"),
    };
    let past = match opt(&args, 3) {
        Some(p) => {
            if p.dims() != [b, c, k - 1] {
                bail!("past_state {:?} is not [{b}, {c}, {}]", p.dims(), k - 1);
            }
            p.to_dtype(x.dtype())?
        }
        None => Tensor::zeros((b, c, k - 1), x.dtype(), x.device())?,
    };
    let padded = Tensor::cat(&[&past, x], 2)?;
    let host = |t: &Tensor| -> R<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    let (ps, ws) = (host(&padded)?, host(w)?);
    let bias = match opt(&args, 2) {
        Some(t) if t.elem_count() == c => host(t)?,
        Some(t) => bail!("bias {:?} does not hold {c} values", t.dims()),
        None => vec![0.0; c],
    };
    let width = l + k - 1;
    let mut y = Vec::with_capacity(b * c * l);
    for bi in 0..b {
        for ci in 0..c {
            let row = &ps[(bi * c + ci) * width..][..width];
            let wr = &ws[ci * k..][..k];
            for t in 0..l {
                let v: f64 = bias[ci]
                    + wr.iter()
                        .zip(&row[t..t + k])
                        .map(|(a, b)| a * b)
                        .sum::<f64>();
                y.push(if silu { v / (1.0 + (-v).exp()) } else { v });
            }
        }
    }
    let y = Tensor::from_vec(y, (b, c, l), x.device())?.to_dtype(x.dtype())?;
    let present = padded.narrow(2, l, k - 1)?.contiguous()?;
    Ok(vec![y, present])
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

fn pool(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
fn max_unpool(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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

/// Interpolation weights for one output position from the fraction `ratio` of its source
/// coordinate past the floor (1 when it falls on a sample), as ONNX's reference computes.
fn resize_coeffs(
    node: &Node,
    (mode, nearest): (&str, &str),
    antialias: bool,
    ratio: f64,
    scale: f64,
) -> R<Vec<f64>> {
    let a = node.attr_float("cubic_coeff_a", -0.75) as f64;
    Ok(match (mode, antialias) {
        ("nearest", _) => {
            if ratio.fract() == 0.0 {
                vec![0.0, 1.0]
            } else {
                let up = match nearest {
                    "round_prefer_floor" => ratio > 0.5,
                    "round_prefer_ceil" => ratio >= 0.5,
                    "floor" => false,
                    "ceil" => true,
                    m => bail!("nearest_mode `{m}` is not supported"),
                };
                if up {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                }
            }
        }
        ("linear", false) => vec![1.0 - ratio, ratio],
        ("linear", true) => {
            let scale = scale.min(1.0);
            let start = (-1.0 / scale).floor() as i64 + 1;
            let c: Vec<f64> = (start..start + 2 - 2 * start)
                .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                .collect();
            let sum: f64 = c.iter().sum();
            c.iter().map(|v| v / sum).collect()
        }
        ("cubic", false) => {
            let (r, q) = (ratio, 1.0 - ratio);
            vec![
                ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
            ]
        }
        ("cubic", true) => {
            let scale = scale.min(1.0);
            let start = (-2.0 / scale).floor() as i64 + 1;
            let c: Vec<f64> = (start..2 - start)
                .map(|i| {
                    let x = (scale * (i as f64 - ratio)).abs();
                    let (x2, x3) = (x * x, x * x * x);
                    if x <= 1.0 {
                        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                    } else if x < 2.0 {
                        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = c.iter().sum();
            c.iter().map(|v| v / sum).collect()
        }
        (m, _) => bail!("resize mode `{m}` is not supported"),
    })
}

fn resize(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let r = x.rank();
    let legacy = node.op_type == "Upsample" || cx.opset < 11;
    let nonempty = |i: usize| opt(&args, i).filter(|t| t.elem_count() > 0);
    let (roi, scales, sizes) = if legacy {
        (None, nonempty(1), None)
    } else {
        (nonempty(1), nonempty(2), nonempty(3))
    };
    let axes: Vec<usize> = match node.attr_ints("axes") {
        Some(a) => a.iter().map(|&v| norm_axis(v, r)).collect::<R<_>>()?,
        None => (0..r).collect(),
    };
    let dims = x.dims();
    let mut scale = vec![1f64; r];
    let mut out: Vec<usize> = dims.to_vec();
    match (scales, sizes) {
        (_, Some(sz)) => {
            let sz = crate::exec::util::ints_of(sz)?;
            if sz.len() != axes.len() || sz.iter().any(|&v| v < 0) {
                bail!("sizes {sz:?} do not give one size per axis {axes:?}");
            }
            for (&a, &v) in axes.iter().zip(&sz) {
                out[a] = v as usize;
                scale[a] = v as f64 / dims[a] as f64;
            }
            let policy = node
                .attr_str("keep_aspect_ratio_policy")
                .unwrap_or("stretch");
            if policy != "stretch" {
                let picked = axes.iter().map(|&a| scale[a]);
                let s = match policy {
                    "not_larger" => picked.fold(f64::INFINITY, f64::min),
                    "not_smaller" => picked.fold(f64::NEG_INFINITY, f64::max),
                    p => bail!("keep_aspect_ratio_policy `{p}` is not supported"),
                };
                for &a in &axes {
                    scale[a] = s;
                    out[a] = (s * dims[a] as f64 + 0.5) as usize;
                }
            }
        }
        (Some(sc), None) => {
            let sc = sc.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            if sc.len() != axes.len() || sc.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
                bail!("scales {sc:?} do not give one positive scale per axis {axes:?}");
            }
            for (&a, &v) in axes.iter().zip(&sc) {
                scale[a] = v;
                let o = v * dims[a] as f64;
                if o >= usize::MAX as f64 {
                    bail!("scale {v} makes dimension {a} too large");
                }
                out[a] = o as usize;
            }
        }
        (None, None) => bail!("Resize needs scales or sizes"),
    }
    cx.fits("its output", &out, DType::F64)?;
    let mode = node.attr_str("mode").unwrap_or("nearest");
    let ctm = if legacy {
        "asymmetric"
    } else {
        node.attr_str("coordinate_transformation_mode")
            .unwrap_or("half_pixel")
    };
    // Upsample and Resize-10 take the nearest sample at or below.
    let nearest = if legacy {
        "floor"
    } else {
        node.attr_str("nearest_mode")
            .unwrap_or("round_prefer_floor")
    };
    let antialias = node.attr_int("antialias", 0) != 0;
    let exclude = node.attr_int("exclude_outside", 0) != 0;
    let extrapolation = node.attr_float("extrapolation_value", 0.0) as f64;
    // roi as [starts..., ends...] over all dims.
    let roi: Option<Vec<f64>> = match roi {
        Some(t) => {
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            if v.len() != 2 * axes.len() {
                bail!("roi {v:?} does not give a start and end per axis {axes:?}");
            }
            let mut full: Vec<f64> = [vec![0.0; r], vec![1.0; r]].concat();
            for (i, &a) in axes.iter().enumerate() {
                full[a] = v[i];
                full[r + a] = v[axes.len() + i];
            }
            Some(full)
        }
        None => None,
    };
    let mut data = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mut cur = dims.to_vec();
    for &axis in &axes {
        let (sf, ow, iw) = (scale[axis], out[axis], cur[axis]);
        let trivial_roi = roi
            .as_ref()
            .is_none_or(|v| (v[axis] - 0.0).abs() < 1e-9 && (v[axis + r] - 1.0).abs() < 1e-9);
        if (sf - 1.0).abs() < 1e-9 && ow == iw && trivial_roi {
            continue;
        }
        if iw == 0 {
            bail!("cannot resize an empty dimension {axis} to {ow}");
        }
        let owf = sf * iw as f64;
        // Per output position: its neighbour weights and first neighbour index, or the
        // extrapolation value (tf_crop_and_resize outside the input).
        let mut plan: Vec<Option<(i64, Vec<f64>)>> = Vec::with_capacity(ow);
        for y in 0..ow {
            let yf = y as f64;
            let xo = match ctm {
                "align_corners" if owf == 1.0 => 0.0,
                "align_corners" => yf * (iw as f64 - 1.0) / (owf - 1.0),
                "asymmetric" => yf / sf,
                "tf_crop_and_resize" => {
                    let Some(v) = &roi else {
                        bail!("tf_crop_and_resize needs roi");
                    };
                    let (r0, r1) = (v[axis], v[axis + r]);
                    let base = if owf == 1.0 {
                        (r1 - r0) * (iw as f64 - 1.0) / 2.0
                    } else {
                        yf * (r1 - r0) * (iw as f64 - 1.0) / (owf - 1.0)
                    };
                    base + r0 * (iw as f64 - 1.0)
                }
                "pytorch_half_pixel" if owf == 1.0 => -0.5,
                "pytorch_half_pixel" | "half_pixel" => (yf + 0.5) / sf - 0.5,
                "half_pixel_symmetric" => {
                    let adjustment = ow as f64 / owf;
                    let center = iw as f64 / 2.0;
                    center * (1.0 - adjustment) + (yf + 0.5) / sf - 0.5
                }
                m => bail!("coordinate_transformation_mode `{m}` is not supported"),
            };
            if ctm == "tf_crop_and_resize" && (xo < 0.0 || xo > iw as f64 - 1.0) {
                plan.push(None);
                continue;
            }
            let ratio = if xo.fract() == 0.0 {
                1.0
            } else {
                xo - xo.floor()
            };
            let mut c = resize_coeffs(node, (mode, nearest), antialias, ratio, sf)?;
            let n = c.len() as i64;
            let pad = (n + 1) / 2;
            let xp = xo + pad as f64;
            let p = xp.floor();
            let frac = xp - p;
            let off = if n % 2 == 0 {
                if frac == 0.0 {
                    -(n / 2)
                } else {
                    -(n / 2) + 1
                }
            } else {
                let base = -((n - 1) / 2);
                if frac <= 0.5 {
                    base
                } else {
                    base + 1
                }
            };
            let start = p as i64 + off - pad;
            if exclude {
                for (k, w) in c.iter_mut().enumerate() {
                    let i = start + k as i64;
                    if i < 0 || i >= iw as i64 {
                        *w = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                let sum = if sum == 0.0 { 1.0 } else { sum };
                c.iter_mut().for_each(|w| *w /= sum);
            }
            plan.push(Some((start, c)));
        }
        let mut step_shape = cur.clone();
        step_shape[axis] = ow;
        cx.fits("its intermediate result", &step_shape, DType::F64)?;
        let outer: usize = cur[..axis].iter().product();
        let inner: usize = cur[axis + 1..].iter().product();
        let mut next = vec![0f64; outer * ow * inner];
        for o in 0..outer {
            for (y, step) in plan.iter().enumerate() {
                let dst = &mut next[(o * ow + y) * inner..][..inner];
                let Some((start, c)) = step else {
                    dst.fill(extrapolation);
                    continue;
                };
                for (k, &w) in c.iter().enumerate() {
                    let i = (start + k as i64).clamp(0, iw as i64 - 1) as usize;
                    let src = &data[(o * iw + i) * inner..][..inner];
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d += w * s;
                    }
                }
            }
        }
        data = next;
        cur[axis] = ow;
    }
    if !x.dtype().is_float() {
        let hi = if x.dtype() == DType::U8 {
            255.0
        } else {
            f64::MAX
        };
        let lo = if x.dtype() == DType::U8 {
            0.0
        } else {
            f64::MIN
        };
        data.iter_mut()
            .for_each(|v| *v = v.round_ties_even().clamp(lo, hi));
    }
    Ok(vec![
        Tensor::from_vec(data, cur, x.device())?.to_dtype(x.dtype())?
    ])
}

/// Reflects `x` into `[lo, hi]`, as ONNX's reference GridSample does.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if x < lo {
        let dx = lo - x;
        let n = (dx / range) as i64;
        let r = dx - n as f64 * range;
        if n % 2 == 0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / range) as i64;
        let r = dx - n as f64 * range;
        if n % 2 == 0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

/// Samples `X` `[N, C, D...]` at the normalized `grid` `[N, O..., rank]` points (the last
/// grid value indexes the first spatial dim reversed: x, y, z), with nearest, linear or cubic
/// interpolation and zeros, border or reflection padding.
fn grid_sample(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let grid = arg(&args, 1)?;
    let n = x.rank().saturating_sub(2);
    if n == 0 || grid.rank() != n + 2 || grid.dims()[0] != x.dims()[0] || grid.dims()[n + 1] != n {
        bail!("grid {:?} does not fit input {:?}", grid.dims(), x.dims());
    }
    let mode = match node.attr_str("mode").unwrap_or("linear") {
        "linear" | "bilinear" => 1,
        "nearest" => 0,
        "cubic" | "bicubic" => 2,
        m => bail!("mode `{m}` is not one of nearest, linear, cubic"),
    };
    let padding = node.attr_str("padding_mode").unwrap_or("zeros");
    if !matches!(padding, "zeros" | "border" | "reflection") {
        bail!("padding_mode `{padding}` is not one of zeros, border, reflection");
    }
    let align = node.attr_int("align_corners", 0) != 0;
    let (batch, c) = (x.dims()[0], x.dims()[1]);
    let dims = &x.dims()[2..];
    if dims.contains(&0) {
        bail!("input {:?} has an empty spatial dimension", x.dims());
    }
    let outs = &grid.dims()[1..n + 1];
    let mut shape = vec![batch, c];
    shape.extend(outs);
    cx.fits("its output", &shape, DType::F64)?;
    let xs = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let gs = grid.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let (in_size, out_size) = (
        dims.iter().product::<usize>(),
        outs.iter().product::<usize>(),
    );
    let border: Vec<(f64, f64)> = dims
        .iter()
        .map(|&d| {
            if align {
                (0.0, d as f64 - 1.0)
            } else {
                (-0.5, d as f64 - 0.5)
            }
        })
        .collect();
    // An integer position along dim `i` as an index, or None for a zero (outside) sample.
    let index = |i: usize, p: i64| -> Option<usize> {
        let d = dims[i] as i64;
        match padding {
            "zeros" => (0..d).contains(&p).then_some(p as usize),
            "border" => Some(p.clamp(0, d - 1) as usize),
            _ => {
                Some((reflect(p as f64, border[i].0, border[i].1) as i64).clamp(0, d - 1) as usize)
            }
        }
    };
    let cubic = |t: f64| -> [f64; 4] {
        let a = -0.75;
        let t = t.abs();
        [
            ((a * (t + 1.0) - 5.0 * a) * (t + 1.0) + 8.0 * a) * (t + 1.0) - 4.0 * a,
            ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0,
            ((a + 2.0) * (1.0 - t) - (a + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0,
            ((a * (2.0 - t) - 5.0 * a) * (2.0 - t) + 8.0 * a) * (2.0 - t) - 4.0 * a,
        ]
    };
    let mut y = vec![0f64; batch * c * out_size];
    // Per output point and dim: the (index, weight) taps.
    let mut taps: Vec<Vec<(Option<usize>, f64)>> = vec![Vec::new(); n];
    for bi in 0..batch {
        for o in 0..out_size {
            let g = &gs[(bi * out_size + o) * n..][..n];
            for i in 0..n {
                let norm = g[n - 1 - i];
                let len = dims[i] as f64;
                let mut v = if align {
                    (norm + 1.0) / 2.0 * (len - 1.0)
                } else {
                    ((norm + 1.0) * len - 1.0) / 2.0
                };
                if mode == 0 {
                    v = v.round_ties_even();
                }
                let (lo, hi) = border[i];
                if v < lo || v > hi {
                    if padding == "border" {
                        v = v.clamp(0.0, len - 1.0);
                    } else if padding == "reflection" {
                        v = reflect(v, lo, hi);
                    }
                }
                let t = &mut taps[i];
                t.clear();
                match mode {
                    0 => t.push((index(i, v as i64), 1.0)),
                    1 => {
                        let x0 = v.floor();
                        let f = v - x0;
                        t.push((index(i, x0 as i64), 1.0 - f));
                        t.push((index(i, x0 as i64 + 1), f));
                    }
                    _ => {
                        let x0 = v.floor();
                        for (k, w) in cubic(v - x0).into_iter().enumerate() {
                            t.push((index(i, x0 as i64 - 1 + k as i64), w));
                        }
                    }
                }
            }
            let combos: usize = taps.iter().map(Vec::len).product();
            for ci in 0..c {
                let plane = &xs[(bi * c + ci) * in_size..][..in_size];
                let mut acc = 0.0;
                'combo: for combo in 0..combos {
                    let (mut rest, mut at, mut w) = (combo, 0usize, 1.0);
                    for i in (0..n).rev() {
                        let (idx, wt) = taps[i][rest % taps[i].len()];
                        rest /= taps[i].len();
                        let Some(idx) = idx else {
                            continue 'combo;
                        };
                        w *= wt;
                        at += idx * dims[i + 1..].iter().product::<usize>();
                    }
                    acc += w * plane[at];
                }
                y[(bi * c + ci) * out_size + o] = acc;
            }
        }
    }
    Ok(vec![
        Tensor::from_vec(y, shape.as_slice(), x.device())?.to_dtype(x.dtype())?
    ])
}

/// The sampling grid `[N, (D,) H, W, rank]` of `theta` `[N, rank, rank + 1]` applied to the
/// normalized coordinates of an image of `size` `[N, C, (D,) H, W]`.
fn affine_grid(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let theta = arg(&args, 0)?;
    let size = crate::exec::util::ints_of(arg(&args, 1)?)?;
    let n = size.len().saturating_sub(2);
    if !(n == 2 || n == 3) || size.iter().any(|&v| v < 1) {
        bail!("size {size:?} is not a positive [N, C, (D,) H, W]");
    }
    let batch = size[0] as usize;
    if theta.dims() != [batch, n, n + 1] {
        bail!("theta {:?} is not [{batch}, {n}, {}]", theta.dims(), n + 1);
    }
    let dims: Vec<usize> = size[2..].iter().map(|&v| v as usize).collect();
    let mut shape = vec![batch];
    shape.extend(&dims);
    shape.push(n);
    cx.fits("its output", &shape, DType::F64)?;
    let align = node.attr_int("align_corners", 0) != 0;
    let coord = |i: usize, d: usize| -> f64 {
        if align {
            if d == 1 {
                -1.0
            } else {
                -1.0 + i as f64 * 2.0 / (d as f64 - 1.0)
            }
        } else {
            let step = 2.0 / d as f64;
            -1.0 + step / 2.0 + i as f64 * step
        }
    };
    let th = theta
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let points: usize = dims.iter().product();
    let mut out: Vec<f64> = Vec::with_capacity(batch * points * n);
    let mut at = vec![0usize; n];
    for b in 0..batch {
        let t = &th[b * n * (n + 1)..][..n * (n + 1)];
        for p in 0..points {
            unravel(p, &dims, &mut at);
            // Homogeneous point: x (last dim) first, then y, (z,) 1.
            let mut h: Vec<f64> = (0..n).rev().map(|i| coord(at[i], dims[i])).collect();
            h.push(1.0);
            for r in 0..n {
                out.push((0..=n).map(|k| t[r * (n + 1) + k] * h[k]).sum());
            }
        }
    }
    Ok(vec![Tensor::from_vec(
        out,
        shape.as_slice(),
        theta.device(),
    )?
    .to_dtype(theta.dtype())?])
}

/// Sums the sliding blocks of `[N, C * prod(block), L]` back into an image
/// `[N, C, image_shape...]` (the inverse of im2col).
fn col2im(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let image = crate::exec::util::ints_of(arg(&args, 1)?)?;
    let block = crate::exec::util::ints_of(arg(&args, 2)?)?;
    let n = image.len();
    if n == 0 || block.len() != n || image.iter().chain(&block).any(|&v| v < 1) {
        bail!("image_shape {image:?} and block_shape {block:?} must be positive and match");
    }
    let (batch, cb, l) = x.dims3()?;
    let image: Vec<usize> = image.iter().map(|&v| v as usize).collect();
    let block: Vec<usize> = block.iter().map(|&v| v as usize).collect();
    let k_size: usize = block.iter().product();
    if cb % k_size != 0 {
        bail!("{cb} rows do not split into blocks of {k_size}");
    }
    let c = cb / k_size;
    let strides = usizes(node, "strides", n, 1)?;
    let dil = usizes(node, "dilations", n, 1)?;
    let p = match node.attr_ints("pads") {
        Some(p) if p.len() == 2 * n && p.iter().all(|&v| v >= 0) => p.to_vec(),
        Some(p) => bail!("pads {p:?} do not match {n} spatial dimensions"),
        None => vec![0; 2 * n],
    };
    let eff = effective_kernel(&block, &dil)?;
    let mut cols = Vec::with_capacity(n);
    for i in 0..n {
        let span = (image[i] as i64 + p[i] + p[i + n]) - eff[i] as i64;
        if span < 0 {
            bail!("block {block:?} does not fit image {image:?}");
        }
        cols.push(span as usize / strides[i] + 1);
    }
    if cols.iter().product::<usize>() != l {
        bail!("{l} blocks do not tile image {image:?} ({cols:?})");
    }
    let mut shape = vec![batch, c];
    shape.extend(&image);
    cx.fits("its output", &shape, DType::F64)?;
    let xs = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let img_size: usize = image.iter().product();
    let mut y = vec![0f64; batch * c * img_size];
    let (mut kat, mut cat) = (vec![0usize; n], vec![0usize; n]);
    for b in 0..batch {
        for ci in 0..c {
            for k in 0..k_size {
                unravel(k, &block, &mut kat);
                'col: for col in 0..l {
                    unravel(col, &cols, &mut cat);
                    let mut at = 0usize;
                    for i in 0..n {
                        let pos = (cat[i] * strides[i] + kat[i] * dil[i]) as i64 - p[i];
                        if pos < 0 || pos >= image[i] as i64 {
                            continue 'col;
                        }
                        at = at * image[i] + pos as usize;
                    }
                    y[(b * c + ci) * img_size + at] += xs[(b * cb + ci * k_size + k) * l + col];
                }
            }
        }
    }
    Ok(vec![
        Tensor::from_vec(y, shape.as_slice(), x.device())?.to_dtype(x.dtype())?
    ])
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// RNN, LSTM and GRU over the whole sequence, forward, reverse or bidirectional, with the
/// default activations, in f64. Outputs `Y`, `Y_h` (and LSTM's `Y_c`).
fn recurrent(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let op = node.op_type.as_str();
    let (x, w, r) = (arg(&args, 0)?, arg(&args, 1)?, arg(&args, 2)?);
    let gates = match op {
        "RNN" => 1,
        "LSTM" => 4,
        _ => 3,
    };
    let batch_first = node.attr_int("layout", 0) != 0;
    let x3 = if batch_first {
        x.transpose(0, 1)?.contiguous()?
    } else {
        x.clone()
    };
    let (seq, batch, input) = x3.dims3()?;
    let (dirs, gh, wi) = w.dims3()?;
    let hidden = gh / gates;
    if gh % gates != 0 || wi != input || r.dims() != [dirs, gh, hidden] {
        bail!(
            "weights {:?} and {:?} do not fit input {:?}",
            w.dims(),
            r.dims(),
            x.dims()
        );
    }
    let direction = node.attr_str("direction").unwrap_or("forward");
    let want = if direction == "bidirectional" { 2 } else { 1 };
    if !matches!(direction, "forward" | "reverse" | "bidirectional") || dirs != want {
        bail!("direction `{direction}` does not match {dirs} weight directions");
    }
    let defaults: &[&str] = match op {
        "RNN" => &["Tanh"],
        "LSTM" => &["Sigmoid", "Tanh", "Tanh"],
        _ => &["Sigmoid", "Tanh"],
    };
    if let Some(Attr::Strings(acts)) = node.attrs.get("activations") {
        let per = defaults.len();
        if acts.len() != per * dirs
            || acts
                .iter()
                .enumerate()
                .any(|(i, a)| !a.eq_ignore_ascii_case(defaults[i % per]))
        {
            bail!("activations {acts:?} are not supported (only {defaults:?})");
        }
    }
    if node.attr_int("input_forget", 0) != 0 {
        bail!("input_forget is not supported");
    }
    let clip = match node.attrs.get("clip") {
        Some(Attr::Float(c)) => Some(*c as f64),
        _ => None,
    };
    if let Some(lens) = opt(&args, 4) {
        if crate::exec::util::ints_of(lens)?
            .iter()
            .any(|&l| l != seq as i64)
        {
            bail!("sequence_lens shorter than the sequence are not supported");
        }
    }
    let (h_at, c_at, p_at) = if op == "LSTM" { (5, 6, 7) } else { (5, 6, 6) };
    cx.fits("its output", &[seq, dirs, batch, hidden], DType::F64)?;
    let host = |t: &Tensor| -> R<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    // An optional [dirs, batch, hidden] state (batch first with layout 1), else zeros.
    let state = |i: usize| -> R<Vec<f64>> {
        match opt(&args, i) {
            Some(t) => {
                let t = if batch_first {
                    t.transpose(0, 1)?.contiguous()?
                } else {
                    t.clone()
                };
                if t.dims() != [dirs, batch, hidden] {
                    bail!(
                        "initial state {:?} is not [{dirs}, {batch}, {hidden}]",
                        t.dims()
                    );
                }
                host(&t)
            }
            None => Ok(vec![0.0; dirs * batch * hidden]),
        }
    };
    let xs = host(&x3)?;
    let (ws, rs) = (host(w)?, host(r)?);
    let bias = match opt(&args, 3) {
        Some(b) if b.dims() == [dirs, 2 * gh] => host(b)?,
        Some(b) => bail!("bias {:?} is not [{dirs}, {}]", b.dims(), 2 * gh),
        None => vec![0.0; dirs * 2 * gh],
    };
    let peep = match opt(&args, p_at).filter(|_| op == "LSTM") {
        Some(p) if p.dims() == [dirs, 3 * hidden] => host(p)?,
        Some(p) => bail!("peepholes {:?} are not [{dirs}, {}]", p.dims(), 3 * hidden),
        None => vec![0.0; dirs * 3 * hidden],
    };
    let (mut hs, mut cs) = (
        state(h_at)?,
        if op == "LSTM" {
            state(c_at)?
        } else {
            Vec::new()
        },
    );
    let linear_before_reset = node.attr_int("linear_before_reset", 0) != 0;
    let clip = |v: f64| clip.map_or(v, |c| v.clamp(-c, c));
    let mut y = vec![0f64; seq * dirs * batch * hidden];
    let mut g = vec![0f64; gh];
    let mut rh = vec![0f64; hidden];
    for d in 0..dirs {
        let (wd, rd) = (
            &ws[d * gh * input..][..gh * input],
            &rs[d * gh * hidden..][..gh * hidden],
        );
        let (wb, rb) = (&bias[d * 2 * gh..][..gh], &bias[d * 2 * gh + gh..][..gh]);
        let pd = &peep[d * 3 * hidden..][..3 * hidden];
        let reverse = direction == "reverse" || d == 1;
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            for b in 0..batch {
                let xt = &xs[(t * batch + b) * input..][..input];
                let h = &mut hs[(d * batch + b) * hidden..][..hidden];
                let dot = |m: &[f64], row: usize, v: &[f64]| -> f64 {
                    m[row * v.len()..][..v.len()]
                        .iter()
                        .zip(v)
                        .map(|(a, b)| a * b)
                        .sum()
                };
                for (j, gj) in g.iter_mut().enumerate() {
                    *gj = dot(wd, j, xt) + wb[j];
                }
                match op {
                    "RNN" => {
                        let prev = h.to_vec();
                        for j in 0..hidden {
                            h[j] = clip(g[j] + dot(rd, j, &prev) + rb[j]).tanh();
                        }
                    }
                    "LSTM" => {
                        let c = &mut cs[(d * batch + b) * hidden..][..hidden];
                        let prev = h.to_vec();
                        for j in 0..gh {
                            g[j] += dot(rd, j, &prev) + rb[j];
                        }
                        for j in 0..hidden {
                            let i = sigmoid(clip(g[j] + pd[j] * c[j]));
                            let f = sigmoid(clip(g[2 * hidden + j] + pd[2 * hidden + j] * c[j]));
                            let cc = clip(g[3 * hidden + j]).tanh();
                            c[j] = f * c[j] + i * cc;
                            let o = sigmoid(clip(g[hidden + j] + pd[hidden + j] * c[j]));
                            h[j] = o * c[j].tanh();
                        }
                    }
                    _ => {
                        let prev = h.to_vec();
                        for j in 0..2 * hidden {
                            g[j] = sigmoid(clip(g[j] + dot(rd, j, &prev) + rb[j]));
                        }
                        for j in 0..hidden {
                            let row = 2 * hidden + j;
                            let (z, rg) = (g[j], g[hidden + j]);
                            let cand = if linear_before_reset {
                                g[row] + rg * (dot(rd, row, &prev) + rb[row])
                            } else {
                                for (k, v) in rh.iter_mut().enumerate() {
                                    *v = g[hidden + k] * prev[k];
                                }
                                g[row] + dot(rd, row, &rh) + rb[row]
                            };
                            h[j] = (1.0 - z) * clip(cand).tanh() + z * prev[j];
                        }
                    }
                }
                y[((t * dirs + d) * batch + b) * hidden..][..hidden].copy_from_slice(h);
            }
        }
    }
    let dev = x.device();
    let mut yt = Tensor::from_vec(y, (seq, dirs, batch, hidden), dev)?;
    let mut ht = Tensor::from_vec(hs, (dirs, batch, hidden), dev)?;
    let mut outs = Vec::new();
    if batch_first {
        yt = yt.permute((2, 0, 1, 3))?.contiguous()?;
        ht = ht.transpose(0, 1)?.contiguous()?;
    }
    outs.push(yt.to_dtype(x.dtype())?);
    outs.push(ht.to_dtype(x.dtype())?);
    if op == "LSTM" {
        let mut ct = Tensor::from_vec(cs, (dirs, batch, hidden), dev)?;
        if batch_first {
            ct = ct.transpose(0, 1)?.contiguous()?;
        }
        outs.push(ct.to_dtype(x.dtype())?);
    }
    Ok(outs)
}

/// 2-D deformable convolution: each kernel tap samples the input bilinearly (zeros outside)
/// at its position moved by `offset`, weighted by the optional `mask`.
fn deform_conv(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let w = arg(&args, 1)?;
    let offset = arg(&args, 2)?;
    let (n, ic, ih, iw) = x.dims4()?;
    let (oc, icg, kh, kw) = w.dims4()?;
    let (on, oc2, oh, ow) = offset.dims4()?;
    let group = node.attr_int("group", 1);
    let og = node.attr_int("offset_group", 1);
    if group < 1 || og < 1 || icg * group as usize != ic || oc % group as usize != 0 {
        bail!(
            "{group} groups of weights {:?} do not fit input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let (group, og) = (group as usize, og as usize);
    if ic % og != 0 || on != n || oc2 != og * kh * kw * 2 {
        bail!(
            "offset {:?} does not fit {og} offset groups of a {kh}x{kw} kernel",
            offset.dims()
        );
    }
    let strides = usizes(node, "strides", 2, 1)?;
    let dil = usizes(node, "dilations", 2, 1)?;
    let p = ints_per_dim(node, "pads", 4, 0)?;
    let expect = |len: usize, k: usize, i: usize| {
        (len as i64 + p[i] + p[i + 2] - ((k as i64 - 1) * dil[i] as i64 + 1)) / strides[i] as i64
            + 1
    };
    if expect(ih, kh, 0) != oh as i64 || expect(iw, kw, 1) != ow as i64 {
        bail!(
            "offset {:?} does not match the convolution's output size",
            offset.dims()
        );
    }
    cx.fits("its output", &[n, oc, oh, ow], DType::F64)?;
    let host = |t: &Tensor| -> R<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    let (xs, ws, offs) = (host(x)?, host(w)?, host(offset)?);
    let mask = match opt(&args, 4) {
        Some(m) if m.dims() == [n, og * kh * kw, oh, ow] => host(m)?,
        Some(m) => bail!(
            "mask {:?} is not [{n}, {}, {oh}, {ow}]",
            m.dims(),
            og * kh * kw
        ),
        None => vec![1.0; n * og * kh * kw * oh * ow],
    };
    let bias = match opt(&args, 3) {
        Some(b) if b.elem_count() == oc => host(b)?,
        Some(b) => bail!("bias {:?} does not hold {oc} values", b.dims()),
        None => vec![0.0; oc],
    };
    let (icpg, ocpg) = (icg, oc / group);
    let per_og = ic / og;
    let sample = |plane: &[f64], h: f64, wv: f64| -> f64 {
        let (h0, w0) = (h.floor(), wv.floor());
        let (fh, fw) = (h - h0, wv - w0);
        let mut acc = 0.0;
        for (dh, wh) in [(0.0, 1.0 - fh), (1.0, fh)] {
            for (dw, ww) in [(0.0, 1.0 - fw), (1.0, fw)] {
                let (r, c) = (h0 + dh, w0 + dw);
                if r >= 0.0 && r < ih as f64 && c >= 0.0 && c < iw as f64 {
                    acc += wh * ww * plane[r as usize * iw + c as usize];
                }
            }
        }
        acc
    };
    let mut y = vec![0f64; n * oc * oh * ow];
    for b in 0..n {
        for o in 0..oc {
            let g = o / ocpg;
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = bias[o];
                    for cg in 0..icpg {
                        let c = g * icpg + cg;
                        let ogi = c / per_og;
                        let plane = &xs[(b * ic + c) * ih * iw..][..ih * iw];
                        for a in 0..kh {
                            for e in 0..kw {
                                let k = a * kw + e;
                                let at = |t: usize| {
                                    ((((b * og + ogi) * kh * kw + k) * 2 + t) * oh + i) * ow + j
                                };
                                let h = -(p[0] as f64)
                                    + (strides[0] * i + a * dil[0]) as f64
                                    + offs[at(0)];
                                let wv = -(p[1] as f64)
                                    + (strides[1] * j + e * dil[1]) as f64
                                    + offs[at(1)];
                                let m = mask[(((b * og + ogi) * kh * kw + k) * oh + i) * ow + j];
                                acc += ws[((o * icpg + cg) * kh + a) * kw + e]
                                    * m
                                    * sample(plane, h, wv);
                            }
                        }
                    }
                    y[((b * oc + o) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    Ok(vec![
        Tensor::from_vec(y, (n, oc, oh, ow), x.device())?.to_dtype(x.dtype())?
    ])
}

/// RoiAlign: each region of interest `[x1, y1, x2, y2]` (times `spatial_scale`) of its batch
/// image `[C, H, W]` pooled to `output_height x output_width` bins, each the average (or max)
/// of bilinear samples on a regular grid, as ONNX's reference implementation computes.
fn roi_align(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let rois = arg(&args, 1)?;
    let batch_idx = crate::exec::util::ints_of(arg(&args, 2)?)?;
    let (n, c, h, w) = x.dims4()?;
    let (nr, cols) = rois.dims2()?;
    if h == 0 || w == 0 {
        bail!("input {:?} has an empty image", x.dims());
    }
    if cols != 4 || batch_idx.len() != nr {
        bail!(
            "rois {:?} and {} batch indices do not match",
            rois.dims(),
            batch_idx.len()
        );
    }
    if let Some(&b) = batch_idx.iter().find(|&&b| b < 0 || b as usize >= n) {
        bail!("batch index {b} is outside the batch of {n}");
    }
    let (ph, pw) = (
        node.attr_int("output_height", 1),
        node.attr_int("output_width", 1),
    );
    if ph < 1 || pw < 1 {
        bail!("output size {ph}x{pw} is not positive");
    }
    let (ph, pw) = (ph as usize, pw as usize);
    let ratio = node.attr_int("sampling_ratio", 0);
    let scale = node.attr_float("spatial_scale", 1.0) as f64;
    let max = match node.attr_str("mode").unwrap_or("avg") {
        "avg" => false,
        "max" => true,
        m => bail!("mode `{m}` is not one of avg, max"),
    };
    let default_ctm = if cx.opset < 16 {
        "output_half_pixel"
    } else {
        "half_pixel"
    };
    let half_pixel = match node
        .attr_str("coordinate_transformation_mode")
        .unwrap_or(default_ctm)
    {
        "half_pixel" => true,
        "output_half_pixel" => false,
        m => bail!("coordinate_transformation_mode `{m}` is not supported"),
    };
    cx.fits("its output", &[nr, c, ph, pw], DType::F64)?;
    let xs = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let rs = rois.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mut y = vec![0f64; nr * c * ph * pw];
    // Bilinear taps (flat position, weight) at (yy, xx); none outside [-1, size].
    let taps = |yy: f64, xx: f64| -> Option<[(usize, f64); 4]> {
        if yy < -1.0 || yy > h as f64 || xx < -1.0 || xx > w as f64 {
            return None;
        }
        let (mut yy, mut xx) = (yy.max(0.0), xx.max(0.0));
        let (mut yl, mut xl) = (yy as usize, xx as usize);
        let yh = if yl >= h - 1 {
            yl = h - 1;
            yy = yl as f64;
            yl
        } else {
            yl + 1
        };
        let xh = if xl >= w - 1 {
            xl = w - 1;
            xx = xl as f64;
            xl
        } else {
            xl + 1
        };
        let (ly, lx) = (yy - yl as f64, xx - xl as f64);
        let (hy, hx) = (1.0 - ly, 1.0 - lx);
        Some([
            (yl * w + xl, hy * hx),
            (yl * w + xh, hy * lx),
            (yh * w + xl, ly * hx),
            (yh * w + xh, ly * lx),
        ])
    };
    for r in 0..nr {
        let off = if half_pixel { 0.5 } else { 0.0 };
        let roi = &rs[r * 4..][..4];
        let (sw, sh) = (roi[0] * scale - off, roi[1] * scale - off);
        let (mut rw, mut rh) = (roi[2] * scale - off - sw, roi[3] * scale - off - sh);
        if !half_pixel {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / ph as f64, rw / pw as f64);
        let grid = |extent: f64, bins: usize| -> usize {
            if ratio > 0 {
                ratio as usize
            } else {
                (extent / bins as f64).ceil().max(0.0) as usize
            }
        };
        let (gh, gw) = (grid(rh, ph), grid(rw, pw));
        let count = (gh * gw).max(1) as f64;
        for ci in 0..c {
            let plane = &xs[(batch_idx[r] as usize * c + ci) * h * w..][..h * w];
            for i in 0..ph {
                for j in 0..pw {
                    let mut acc: Option<f64> = None;
                    for iy in 0..gh {
                        let yy = sh + i as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                        for ix in 0..gw {
                            let xx = sw + j as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                            let v = match taps(yy, xx) {
                                Some(t) if max => t
                                    .iter()
                                    .map(|&(p, wt)| wt * plane[p])
                                    .fold(f64::NEG_INFINITY, f64::max),
                                Some(t) => t.iter().map(|&(p, wt)| wt * plane[p]).sum(),
                                None => 0.0,
                            };
                            acc = Some(match acc {
                                None => v,
                                Some(a) if max => a.max(v),
                                Some(a) => a + v,
                            });
                        }
                    }
                    let v = acc.unwrap_or(0.0);
                    y[((r * c + ci) * ph + i) * pw + j] = if max { v } else { v / count };
                }
            }
        }
    }
    Ok(vec![
        Tensor::from_vec(y, (nr, c, ph, pw), x.device())?.to_dtype(x.dtype())?
    ])
}
