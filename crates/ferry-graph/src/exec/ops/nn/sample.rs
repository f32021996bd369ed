//! Resampling and geometry on the host: Resize (and Upsample), GridSample, AffineGrid,
//! RoiAlign and Col2Im.

use candle_core::{DType, Tensor};

use super::super::OpCx;
use super::{effective_kernel, unravel, usizes};
use crate::exec::util::{arg, bail, norm_axis, opt, R};
use crate::ir::Node;

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

pub(super) fn resize(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
pub(super) fn grid_sample(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
pub(super) fn affine_grid(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
pub(super) fn col2im(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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

/// RoiAlign: each region of interest `[x1, y1, x2, y2]` (times `spatial_scale`) of its batch
/// image `[C, H, W]` pooled to `output_height x output_width` bins, each the average (or max)
/// of bilinear samples on a regular grid, as ONNX's reference implementation computes.
pub(super) fn roi_align(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
