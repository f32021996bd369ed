//! Ops that move, select or create data without arithmetic: Reshape, Flatten, Squeeze,
//! Unsqueeze, Transpose, Concat, Split, Slice, Gather, GatherND, Expand, Tile, Pad, CenterCropPad,
//! SpaceToDepth, DepthToSpace, Shape, Size, Constant, ConstantOfShape, Range.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::scalar_f64;
use crate::exec::util::{arg, axes, bail, broadcast_shape, ints_of, norm_axis, opt, R};
use crate::ir::{Attr, Node};

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Reshape" => reshape,
        "Flatten" => flatten,
        "Squeeze" => squeeze,
        "Unsqueeze" => unsqueeze,
        "Transpose" => transpose,
        "Concat" => concat,
        "Split" => split,
        "Slice" => slice,
        "Gather" => gather,
        "GatherND" => gather_nd,
        "Expand" => expand,
        "Tile" => tile,
        "Pad" => pad,
        "CenterCropPad" => center_crop_pad,
        "SpaceToDepth" | "DepthToSpace" => space_depth,
        "Shape" => shape,
        "Size" => size,
        "Constant" => constant,
        "ConstantOfShape" => constant_of_shape,
        "Range" => range,
        _ => return None,
    })
}

/// Sizes from a shape input: negative values are errors.
fn dims_of(t: &Tensor, what: &str) -> R<Vec<usize>> {
    ints_of(t)?
        .into_iter()
        .map(|v| {
            usize::try_from(v).map_err(|_| {
                candle_core::Error::Msg(format!("{what} holds the negative size {v}")).into()
            })
        })
        .collect()
}

/// ONNX Reshape's target: `0` copies the input's dimension (unless `allowzero`), `-1` is
/// inferred. Element counts are computed with overflow checks.
pub fn reshape_dims(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> candle_core::Result<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "shape {spec:?} copies dimension {i} of {input:?}, which it lacks"
                ))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            s if s >= 0 => out.push(s as usize),
            _ => bail!("invalid target shape {spec:?}"),
        }
    }
    let count = |d: &[usize]| d.iter().try_fold(1usize, |n, &x| n.checked_mul(x));
    let Some(total) = count(input) else {
        bail!("input {input:?} has more than 2^64 elements");
    };
    if let Some(i) = infer {
        let known = count(&out).unwrap_or(0);
        if known == 0 || !total.is_multiple_of(known) {
            bail!("cannot reshape {input:?} to {spec:?}");
        }
        out[i] = total / known;
    }
    if count(&out) != Some(total) {
        bail!("cannot reshape {input:?} ({total} elements) to {spec:?}");
    }
    Ok(out)
}

fn reshape(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let spec = ints_of(arg(&args, 1)?)?;
    let dims = reshape_dims(x.dims(), &spec, node.attr_int("allowzero", 0) != 0)?;
    Ok(vec![x.reshape(dims)?])
}

fn flatten(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let rank = x.rank();
    let a = node.attr_int("axis", 1);
    let axis = if a < 0 {
        (a + rank as i64).max(0) as usize
    } else {
        (a as usize).min(rank)
    };
    let outer: usize = x.dims()[..axis].iter().product();
    let inner: usize = x.dims()[axis..].iter().product();
    Ok(vec![x.reshape((outer, inner))?])
}

fn squeeze(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let dims = x.dims();
    let drop: Vec<usize> = match axes(node, &args, 1)? {
        Some(a) => a
            .iter()
            .map(|&a| norm_axis(a, dims.len()))
            .collect::<R<_>>()?,
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
    };
    let out: Vec<usize> = dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, &d)| d)
        .collect();
    Ok(vec![x.reshape(out)?])
}

fn unsqueeze(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let a = axes(node, &args, 1)?.ok_or_else(|| candle_core::Error::Msg("no axes".into()))?;
    let rank = x.rank() + a.len();
    let mut ax: Vec<usize> = a.iter().map(|&v| norm_axis(v, rank)).collect::<R<_>>()?;
    ax.sort_unstable();
    let mut dims = x.dims().to_vec();
    for i in ax {
        dims.insert(i, 1);
    }
    Ok(vec![x.reshape(dims)?])
}

fn transpose(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let perm: Vec<usize> = match node.attr_ints("perm") {
        Some(p) => p
            .iter()
            .map(|&v| norm_axis(v, x.rank()))
            .collect::<R<_>>()?,
        None => (0..x.rank()).rev().collect(),
    };
    Ok(vec![x.permute(perm)?])
}

fn concat(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let xs: Vec<&Tensor> = args.iter().flatten().collect();
    let Some(first) = xs.first() else {
        bail!("no inputs");
    };
    let axis = norm_axis(node.attr_int("axis", 0), first.rank())?;
    let dt = first.dtype();
    let mut out = first.dims().to_vec();
    out[axis] = xs
        .iter()
        .map(|t| t.dims().get(axis).copied().unwrap_or(0))
        .try_fold(0usize, usize::checked_add)
        .unwrap_or(usize::MAX);
    cx.fits("its output", &out, dt)?;
    let xs: Vec<Tensor> = xs
        .iter()
        .filter(|t| t.elem_count() > 0 || xs.len() == 1)
        .map(|t| t.to_dtype(dt))
        .collect::<candle_core::Result<_>>()?;
    if xs.is_empty() {
        return Ok(vec![(*first).clone()]);
    }
    Ok(vec![Tensor::cat(&xs, axis)?])
}

fn split(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = norm_axis(node.attr_int("axis", 0), x.rank())?;
    let dim = x.dims()[axis];
    let size = |v: i64| {
        usize::try_from(v).map_err(|_| candle_core::Error::Msg(format!("negative split size {v}")))
    };
    let outputs = node.outputs.len().max(1);
    let sizes: Vec<usize> = match opt(&args, 1) {
        Some(s) => ints_of(s)?
            .into_iter()
            .map(size)
            .collect::<candle_core::Result<_>>()?,
        None => match node.attr_ints("split") {
            Some(s) => s
                .iter()
                .map(|&v| size(v))
                .collect::<candle_core::Result<_>>()?,
            None => {
                let n = match node.attrs.get("num_outputs") {
                    Some(_) => node.attr_int("num_outputs", 1),
                    None => outputs as i64,
                };
                if n < 1 || n > outputs as i64 {
                    bail!("num_outputs {n} for a node with {outputs} outputs");
                }
                let n = n as usize;
                let chunk = dim.div_ceil(n);
                (0..n)
                    .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                    .collect()
            }
        },
    };
    if sizes.len() > outputs {
        bail!(
            "{} split sizes for a node with {outputs} outputs",
            sizes.len()
        );
    }
    if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
        bail!("split sizes {sizes:?} do not add up to dimension {dim}");
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for s in sizes {
        out.push(x.narrow(axis, start, s)?);
        start += s;
    }
    Ok(out)
}

fn slice(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let (starts, ends, ax, steps) = if cx.opset >= 10 {
        (
            ints_of(arg(&args, 1)?)?,
            ints_of(arg(&args, 2)?)?,
            opt(&args, 3).map(ints_of).transpose()?,
            opt(&args, 4).map(ints_of).transpose()?,
        )
    } else {
        (
            node.attr_ints("starts").unwrap_or_default().to_vec(),
            node.attr_ints("ends").unwrap_or_default().to_vec(),
            node.attr_ints("axes").map(<[i64]>::to_vec),
            None,
        )
    };
    let ax = ax.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || ax.len() != starts.len() || steps.len() != starts.len() {
        bail!(
            "starts ({}), ends ({}), axes ({}) and steps ({}) differ in length",
            starts.len(),
            ends.len(),
            ax.len(),
            steps.len()
        );
    }
    let mut out = x.clone();
    for i in 0..starts.len() {
        let axis = norm_axis(ax[i], x.rank())?;
        let d = x.dims()[axis] as i64;
        // In i128: starts, ends and steps may be anywhere in i64.
        let step = i128::from(steps[i]);
        if step == 0 {
            bail!("slice step 0");
        }
        let d = i128::from(d);
        let fix = |v: i64| {
            let v = i128::from(v);
            if v < 0 {
                v + d
            } else {
                v
            }
        };
        let (s, n) = if step > 0 {
            let s = fix(starts[i]).clamp(0, d);
            let e = fix(ends[i]).clamp(0, d);
            (s, if e > s { (e - s + step - 1) / step } else { 0 })
        } else {
            let s = fix(starts[i]).clamp(0, d - 1);
            let e = fix(ends[i]).clamp(-1, d - 1);
            (s, if s > e { (s - e - step - 1) / -step } else { 0 })
        };
        // 0 <= s <= d and 0 <= n <= d: both fit in usize and i64.
        if step == 1 {
            out = out.narrow(axis, s as usize, n as usize)?;
        } else {
            let idx: Vec<i64> = (0..n).map(|k| (s + k * step) as i64).collect();
            let idx = Tensor::from_vec(idx, n as usize, out.device())?;
            out = out.contiguous()?.index_select(&idx, axis)?;
        }
    }
    Ok(vec![out])
}

fn gather(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let data = arg(&args, 0)?;
    let idx = arg(&args, 1)?;
    let axis = norm_axis(node.attr_int("axis", 0), data.rank())?;
    let d = data.dims()[axis] as i64;
    let mut dims: Vec<usize> = data.dims()[..axis].to_vec();
    dims.extend_from_slice(idx.dims());
    dims.extend_from_slice(&data.dims()[axis + 1..]);
    cx.fits("its output", &dims, data.dtype())?;
    cx.fits("its indices as i64", idx.dims(), DType::I64)?;
    let mut flat = ints_of(idx)?;
    for v in &mut flat {
        if *v < -d || *v >= d {
            bail!("index {v} is out of range for dimension {axis} of size {d}");
        }
        if *v < 0 {
            *v += d;
        }
    }
    let n = flat.len();
    let ids = Tensor::from_vec(flat, n, data.device())?;
    let picked = data.contiguous()?.index_select(&ids, axis)?;
    Ok(vec![picked.reshape(dims)?])
}

fn gather_nd(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let data = arg(&args, 0)?;
    let idx = arg(&args, 1)?;
    let (dd, id) = (data.dims().to_vec(), idx.dims().to_vec());
    let Some(&k) = id.last() else {
        bail!("indices must have rank 1 or more");
    };
    let b = node.attr_int("batch_dims", 0);
    let fits = usize::try_from(b)
        .ok()
        .filter(|&b| b + k <= dd.len() && b < id.len() && id[..b] == dd[..b]);
    let Some(b) = fits else {
        bail!("indices {id:?} with batch_dims {b} do not fit data {dd:?}");
    };
    let mut out: Vec<usize> = id[..id.len() - 1].to_vec();
    out.extend_from_slice(&dd[b + k..]);
    cx.fits("its output", &out, data.dtype())?;
    cx.fits("its indices as i64", &id, DType::I64)?;
    let inner: usize = dd[b + k..].iter().product();
    let per_batch: usize = dd[b..b + k].iter().product();
    let rows_total: usize = dd[..b + k].iter().product();
    let flat = ints_of(idx)?;
    let tuples = flat.len() / k.max(1);
    let per_batch_tuples = tuples / id[..b].iter().product::<usize>().max(1);
    let mut rows = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let mut r = 0usize;
        for (j, &v) in flat[t * k..(t + 1) * k].iter().enumerate() {
            let d = dd[b + j] as i64;
            if v < -d || v >= d {
                bail!(
                    "index {v} is out of range for dimension {} of size {d}",
                    b + j
                );
            }
            r = r * d as usize + (if v < 0 { v + d } else { v }) as usize;
        }
        rows.push(((t / per_batch_tuples.max(1)) * per_batch + r) as i64);
    }
    let n = rows.len();
    let ids = Tensor::from_vec(rows, n, data.device())?;
    let picked = data
        .contiguous()?
        .reshape((rows_total, inner))?
        .index_select(&ids, 0)?;
    Ok(vec![picked.reshape(out)?])
}

/// A broadcast view, checked at its full size: whoever reads it (a consumer, the output
/// comparison, `ferry run`'s output) writes it out.
fn expand(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let spec = dims_of(arg(&args, 1)?, "the shape")?;
    let target = broadcast_shape(x.dims(), &spec)?;
    cx.fits("its output", &target, x.dtype())?;
    Ok(vec![x.broadcast_as(target)?])
}

/// Each axis repeated as a broadcast view of the input, written out once.
fn tile(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let reps = dims_of(arg(&args, 1)?, "repeats")?;
    if reps.len() != x.rank() {
        bail!("{} repeats for an input of rank {}", reps.len(), x.rank());
    }
    let Some(out) = x
        .dims()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<Vec<usize>>>()
    else {
        bail!("repeats {reps:?} of {:?} overflow", x.dims());
    };
    cx.fits("its output", &out, x.dtype())?;
    // [d0, d1, ...] -> [1, d0, 1, d1, ...] -> [r0, d0, r1, d1, ...] -> [r0 d0, r1 d1, ...]
    let pairs: Vec<usize> = x.dims().iter().flat_map(|&d| [1, d]).collect();
    let spread: Vec<usize> = x
        .dims()
        .iter()
        .zip(&reps)
        .flat_map(|(&d, &r)| [r, d])
        .collect();
    let y = x.reshape(pairs)?.broadcast_as(spread)?.contiguous()?;
    Ok(vec![y.reshape(out)?])
}

/// Pad (opset 2+ `pads`/`value` attributes, 11+ inputs, 18+ `axes`): `constant`, `reflect`,
/// `edge` or `wrap`; negative pads crop.
fn pad(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let rank = x.rank();
    let (pads, value) = if cx.opset >= 11 {
        (ints_of(arg(&args, 1)?)?, opt(&args, 2).cloned())
    } else {
        let pads = node
            .attr_ints("pads")
            .or_else(|| node.attr_ints("paddings"));
        let v = f64::from(node.attr_float("value", 0.0));
        (
            pads.unwrap_or_default().to_vec(),
            Some(Tensor::new(v, x.device())?),
        )
    };
    let ax: Vec<usize> = match opt(&args, 3) {
        Some(a) => ints_of(a)?
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<R<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * ax.len() {
        bail!("{} pads for {} axes", pads.len(), ax.len());
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (i, &a) in ax.iter().enumerate() {
        begin[a] = pads[i];
        end[a] = pads[ax.len() + i];
    }
    pad_by(
        cx,
        x,
        &begin,
        &end,
        node.attr_str("mode").unwrap_or("constant"),
        value,
    )
}

/// CenterCropPad: each of `axes` (default all) cropped or zero-padded to the size in input 1,
/// centred (an odd difference leaves the extra element at the end).
fn center_crop_pad(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let rank = x.rank();
    let sizes = dims_of(arg(&args, 1)?, "the shape")?;
    let ax: Vec<usize> = match node.attr_ints("axes") {
        Some(a) => a.iter().map(|&a| norm_axis(a, rank)).collect::<R<_>>()?,
        None => (0..rank).collect(),
    };
    if sizes.len() != ax.len() {
        bail!("{} sizes for {} axes", sizes.len(), ax.len());
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (&a, &want) in ax.iter().zip(&sizes) {
        let (dim, want) = (x.dims()[a] as i64, want as i64);
        let diff = want - dim;
        begin[a] = diff / 2;
        end[a] = diff - diff / 2;
    }
    pad_by(cx, x, &begin, &end, "constant", None)
}

/// `x` padded by `begin[d]` and `end[d]` elements on each axis `d` (negative: cropped) in
/// `mode`, the constant (default 0) from `value`'s first element.
fn pad_by(
    cx: &OpCx,
    x: &Tensor,
    begin: &[i64],
    end: &[i64],
    mode: &str,
    value: Option<Tensor>,
) -> R<Vec<Tensor>> {
    let rank = x.rank();
    let mut shape = Vec::with_capacity(rank);
    for d in 0..rank {
        let n = x.dims()[d] as i128 + i128::from(begin[d]) + i128::from(end[d]);
        let Ok(n) = usize::try_from(n) else {
            bail!(
                "pads {begin:?}, {end:?} leave a negative size for {:?}",
                x.dims()
            );
        };
        shape.push(n);
    }
    cx.fits("its output", &shape, x.dtype())?;
    cx.fits("its positions as i64", &shape, DType::I64)?;
    // Per axis, the input coordinate each output coordinate reads (`None`: the constant).
    let mut src: Vec<Vec<Option<usize>>> = Vec::with_capacity(rank);
    for d in 0..rank {
        let n = x.dims()[d] as i64;
        let mut line = Vec::with_capacity(shape[d]);
        for o in 0..shape[d] as i64 {
            let c = o - begin[d];
            let c = if (0..n).contains(&c) {
                Some(c)
            } else if n == 0 || mode == "constant" {
                if mode != "constant" {
                    bail!("{mode} padding of an empty axis {d}");
                }
                None
            } else {
                Some(match mode {
                    "edge" => c.clamp(0, n - 1),
                    "wrap" => c.rem_euclid(n),
                    "reflect" if n == 1 => 0,
                    "reflect" => {
                        let p = c.rem_euclid(2 * (n - 1));
                        if p < n {
                            p
                        } else {
                            2 * (n - 1) - p
                        }
                    }
                    other => bail!("unknown pad mode `{other}`"),
                })
            };
            line.push(c.map(|c| c as usize));
        }
        src.push(line);
    }
    let total = x.elem_count();
    let mut st = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        st[i] = st[i + 1] * x.dims()[i + 1];
    }
    let count: usize = shape.iter().product();
    let mut map = Vec::with_capacity(count);
    let mut at = vec![0usize; rank];
    for _ in 0..count {
        let mut off = Some(0);
        for d in 0..rank {
            off = off.zip(src[d][at[d]]).map(|(o, c)| o + c * st[d]);
        }
        map.push(off.unwrap_or(total) as i64);
        for d in (0..rank).rev() {
            at[d] += 1;
            if at[d] < shape[d] {
                break;
            }
            at[d] = 0;
        }
    }
    let value = match value {
        Some(v) if v.elem_count() > 0 => v.flatten_all()?.narrow(0, 0, 1)?.to_dtype(x.dtype())?,
        _ => Tensor::zeros(1, x.dtype(), x.device())?,
    };
    let all = Tensor::cat(&[&x.flatten_all()?, &value], 0)?;
    let n = map.len();
    let ids = Tensor::from_vec(map, n, x.device())?;
    Ok(vec![all.index_select(&ids, 0)?.reshape(shape)?])
}

/// SpaceToDepth and DepthToSpace on `[N, C, H, W]` with `blocksize` and (DepthToSpace) `mode`
/// `DCR` (default) or `CRD`.
fn space_depth(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let &[b, c, h, w] = x.dims() else {
        bail!("{} needs a 4-D input, not {:?}", node.op_type, x.dims());
    };
    let bs = node.attr_int("blocksize", 0);
    let Ok(bs) = usize::try_from(bs) else {
        bail!("blocksize {bs} is negative");
    };
    let crd = match node.attr_str("mode").unwrap_or("DCR") {
        "DCR" => false,
        "CRD" => true,
        m => bail!("unknown mode `{m}`"),
    };
    if bs == 0 {
        bail!("blocksize must be positive");
    }
    let y = if node.op_type == "SpaceToDepth" {
        if h % bs != 0 || w % bs != 0 {
            bail!("blocksize {bs} does not divide {h}x{w}");
        }
        let t = x.reshape(vec![b, c, h / bs, bs, w / bs, bs])?;
        let perm = if crd {
            [0, 1, 3, 5, 2, 4]
        } else {
            [0, 3, 5, 1, 2, 4]
        };
        t.permute(perm.to_vec())?
            .contiguous()?
            .reshape((b, c * bs * bs, h / bs, w / bs))?
    } else {
        if c % (bs * bs) != 0 {
            bail!("blocksize {bs} squared does not divide {c} channels");
        }
        let c2 = c / (bs * bs);
        let (t, perm) = if crd {
            (x.reshape(vec![b, c2, bs, bs, h, w])?, [0, 1, 4, 2, 5, 3])
        } else {
            (x.reshape(vec![b, bs, bs, c2, h, w])?, [0, 3, 4, 1, 5, 2])
        };
        t.permute(perm.to_vec())?
            .contiguous()?
            .reshape((b, c2, h * bs, w * bs))?
    };
    Ok(vec![y])
}

fn shape(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let rank = x.rank() as i64;
    let clampi = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clampi(node.attr_int("start", 0));
    let end = clampi(node.attr_int("end", rank));
    let dims: Vec<i64> = x.dims()[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    let n = dims.len();
    Ok(vec![Tensor::from_vec(dims, n, cx.device)?])
}

fn size(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let n = arg(&args, 0)?.elem_count() as i64;
    Ok(vec![Tensor::new(n, cx.device)?])
}

fn constant(node: &Node, cx: &OpCx, _: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let (name, value) = node
        .attrs
        .first()
        .ok_or_else(|| candle_core::Error::Msg("Constant without a value".into()))?;
    let t = match value {
        Attr::Tensor(e) => e
            .to_candle(cx.device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
        Attr::Float(f) => Tensor::new(*f, cx.device)?,
        Attr::Int(i) => Tensor::new(*i, cx.device)?,
        Attr::Floats(v) => Tensor::new(v.as_slice(), cx.device)?,
        Attr::Ints(v) => Tensor::new(v.as_slice(), cx.device)?,
        _ => bail!("Constant attribute `{name}` is not supported"),
    };
    Ok(vec![t])
}

fn constant_of_shape(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let dims = dims_of(arg(&args, 0)?, "the shape")?;
    let value = match node.attrs.get("value") {
        Some(Attr::Tensor(e)) => e
            .to_candle(cx.device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
        _ => Tensor::new(0f32, cx.device)?,
    };
    cx.fits("its output", &dims, value.dtype())?;
    let value = value.flatten_all()?.get(0)?;
    Ok(vec![value.broadcast_as(dims)?.contiguous()?])
}

fn range(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let start = arg(&args, 0)?;
    let dt = start.dtype();
    let s = scalar_f64(start)?;
    let l = scalar_f64(arg(&args, 1)?)?;
    let d = scalar_f64(arg(&args, 2)?)?;
    if d == 0.0 {
        bail!("Range with delta 0");
    }
    // `as` saturates (and takes NaN to 0): a count past usize fails the budget below.
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    cx.fits("its values", &[n], DType::F64)?;
    cx.fits("its output", &[n], dt)?;
    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    let t = Tensor::from_vec(v, n, cx.device)?;
    Ok(vec![if dt.is_int() {
        t.round()?.to_dtype(dt)?
    } else {
        t.to_dtype(dt)?
    }])
}
