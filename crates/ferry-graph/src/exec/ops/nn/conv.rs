//! Convolutions: Conv (1-D, 2-D), ConvInteger and QLinearConv (on Conv), ConvTranspose (any
//! spatial rank, on the host), CausalConvWithState and DeformConv (2-D, on the host).

use candle_core::{DType, Tensor};

use super::super::quant::centered;
use super::super::OpCx;
use super::{
    effective_kernel, ints_per_dim, pad_spatial, padded_shape, pads, uniform, unravel, usizes,
};
use crate::exec::util::{arg, bail, broadcast_shape, opt, per_channel, R};
use crate::ir::Node;

pub(super) fn conv(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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

/// Transposed convolution as ONNX's reference implementation computes it: each input value
/// scatters `x * w` into the output at `i * stride + k * dilation - pad_begin`.
pub(super) fn conv_transpose(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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

/// ConvInteger (`(x - x_zero) * (w - w_zero)`, as i32) and QLinearConv (that plus the i32
/// bias, rescaled by `x_scale * w_scale / y_scale` and saturated around `y_zero_point`).
pub(super) fn conv_integer(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
    if let Some(z) = xz.filter(|z| z.elem_count() != 1) {
        bail!("the input's zero point {:?} is not one value", z.dims());
    }
    let ins = vec![
        Some(centered(x, xz, None)?),
        // One zero point per output channel.
        Some(centered(w, wz, Some(0))?),
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
pub(super) fn causal_conv(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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

/// 2-D deformable convolution: each kernel tap samples the input bilinearly (zeros outside)
/// at its position moved by `offset`, weighted by the optional `mask`.
pub(super) fn deform_conv(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
