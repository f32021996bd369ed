//! Ops that move, select or create data without arithmetic: Reshape, Flatten, Squeeze,
//! Unsqueeze, Transpose, Concat, Split, Slice, Gather, Expand, Tile, Shape, Size, Constant,
//! ConstantOfShape, Range.

use candle_core::Tensor;

use super::{OpCx, OpFn};
use crate::exec::util::{arg, axes, broadcast_shape, floats_of, ints_of, norm_axis, opt, R};
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
        "Shape" => shape,
        "Size" => size,
        "Constant" => constant,
        "ConstantOfShape" => constant_of_shape,
        "Range" => range,
        _ => return None,
    })
}

/// Elements a graph may ask one op to create from its input values (ConstantOfShape, Range):
/// a hostile file must get an error, not an allocation of that size.
const MAX_CREATED_ELEMS: u128 = 1 << 32;

fn check_size(dims: &[usize]) -> R<()> {
    let n = dims
        .iter()
        .try_fold(1u128, |a, &d| a.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    if n > MAX_CREATED_ELEMS {
        candle_core::bail!(
            "it would create {n} elements ({dims:?}); the limit is {MAX_CREATED_ELEMS}"
        );
    }
    Ok(())
}

/// ONNX Reshape's target: `0` copies the input's dimension (unless `allowzero`), `-1` is
/// inferred.
pub fn reshape_dims(input: &[usize], spec: &[i64], allowzero: bool) -> R<Vec<usize>> {
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
            _ => candle_core::bail!("invalid target shape {spec:?}"),
        }
    }
    let total: usize = input.iter().product();
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            candle_core::bail!("cannot reshape {input:?} to {spec:?}");
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        candle_core::bail!("cannot reshape {input:?} ({total} elements) to {spec:?}");
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

fn concat(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let xs: Vec<&Tensor> = args.iter().flatten().collect();
    let first = xs
        .first()
        .ok_or_else(|| candle_core::Error::Msg("no inputs".into()))?;
    let axis = norm_axis(node.attr_int("axis", 0), first.rank())?;
    let dt = first.dtype();
    let xs: Vec<Tensor> = xs
        .iter()
        .filter(|t| t.elem_count() > 0 || xs.len() == 1)
        .map(|t| t.to_dtype(dt))
        .collect::<R<_>>()?;
    if xs.is_empty() {
        return Ok(vec![(*first).clone()]);
    }
    Ok(vec![Tensor::cat(&xs, axis)?])
}

fn split(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = norm_axis(node.attr_int("axis", 0), x.rank())?;
    let dim = x.dims()[axis];
    let sizes: Vec<usize> = match opt(&args, 1) {
        Some(s) => ints_of(s)?
            .into_iter()
            .map(|v| {
                usize::try_from(v)
                    .map_err(|_| candle_core::Error::Msg(format!("negative split size {v}")))
            })
            .collect::<R<_>>()?,
        None => match node.attr_ints("split") {
            Some(s) => s.iter().map(|&v| v as usize).collect(),
            None => {
                let n = node
                    .attrs
                    .get("num_outputs")
                    .map(|_| node.attr_int("num_outputs", 1) as usize)
                    .unwrap_or(node.outputs.len())
                    .max(1);
                let chunk = dim.div_ceil(n);
                (0..n)
                    .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                    .collect()
            }
        },
    };
    if sizes.iter().sum::<usize>() != dim {
        candle_core::bail!("split sizes {sizes:?} do not add up to dimension {dim}");
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
        candle_core::bail!(
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
        let step = steps[i];
        if step == 0 {
            candle_core::bail!("slice step 0");
        }
        let clampi = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
        let fix = |v: i64| if v < 0 { v + d } else { v };
        if step > 0 {
            let s = clampi(fix(starts[i]), 0, d);
            let e = clampi(fix(ends[i]), 0, d);
            let n = if e > s { (e - s + step - 1) / step } else { 0 };
            if step == 1 {
                out = out.narrow(axis, s as usize, n as usize)?;
            } else {
                let idx: Vec<i64> = (0..n).map(|k| s + k * step).collect();
                let idx = Tensor::from_vec(idx, n as usize, out.device())?;
                out = out.index_select(&idx, axis)?;
            }
        } else {
            let s = clampi(fix(starts[i]), 0, d - 1);
            let e = clampi(fix(ends[i]), -1, d - 1);
            let n = if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            };
            let idx: Vec<i64> = (0..n).map(|k| s + k * step).collect();
            let idx = Tensor::from_vec(idx, n as usize, out.device())?;
            out = out.index_select(&idx, axis)?;
        }
    }
    Ok(vec![out])
}

fn gather(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let data = arg(&args, 0)?;
    let idx = arg(&args, 1)?;
    let axis = norm_axis(node.attr_int("axis", 0), data.rank())?;
    let d = data.dims()[axis] as i64;
    let mut flat = ints_of(idx)?;
    for v in &mut flat {
        if *v < -d || *v >= d {
            candle_core::bail!("index {v} is out of range for dimension {axis} of size {d}");
        }
        if *v < 0 {
            *v += d;
        }
    }
    let n = flat.len();
    let ids = Tensor::from_vec(flat, n, data.device())?;
    let picked = data.contiguous()?.index_select(&ids, axis)?;
    let mut dims: Vec<usize> = data.dims()[..axis].to_vec();
    dims.extend_from_slice(idx.dims());
    dims.extend_from_slice(&data.dims()[axis + 1..]);
    Ok(vec![picked.reshape(dims)?])
}

fn gather_nd(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let data = arg(&args, 0)?;
    let idx = arg(&args, 1)?;
    let b = node.attr_int("batch_dims", 0).max(0) as usize;
    let (dd, id) = (data.dims().to_vec(), idx.dims().to_vec());
    let k = *id
        .last()
        .ok_or_else(|| candle_core::Error::Msg("indices must have rank 1 or more".into()))?;
    if b + k > dd.len() || b >= id.len() || id[..b] != dd[..b] {
        candle_core::bail!("indices {id:?} with batch_dims {b} do not fit data {dd:?}");
    }
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
                candle_core::bail!(
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
    let mut out: Vec<usize> = id[..id.len() - 1].to_vec();
    out.extend_from_slice(&dd[b + k..]);
    Ok(vec![picked.reshape(out)?])
}

fn expand(_: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let spec: Vec<usize> = ints_of(arg(&args, 1)?)?
        .into_iter()
        .map(|v| v.max(0) as usize)
        .collect();
    let target = broadcast_shape(x.dims(), &spec)?;
    Ok(vec![x.broadcast_as(target)?])
}

fn tile(_: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let mut x = arg(&args, 0)?.clone();
    let reps = ints_of(arg(&args, 1)?)?;
    for (axis, &r) in reps.iter().enumerate() {
        if r != 1 {
            let copies = vec![x.clone(); r.max(0) as usize];
            x = Tensor::cat(&copies, axis)?;
        }
    }
    Ok(vec![x])
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
        _ => candle_core::bail!("Constant attribute `{name}` is not supported"),
    };
    Ok(vec![t])
}

fn constant_of_shape(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let dims: Vec<usize> = ints_of(arg(&args, 0)?)?
        .into_iter()
        .map(|v| v.max(0) as usize)
        .collect();
    check_size(&dims)?;
    let value = match node.attrs.get("value") {
        Some(Attr::Tensor(e)) => e
            .to_candle(cx.device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
        _ => Tensor::new(0f32, cx.device)?,
    };
    let value = value.flatten_all()?.get(0)?;
    Ok(vec![value.broadcast_as(dims)?.contiguous()?])
}

fn range(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let start = arg(&args, 0)?;
    let dt = start.dtype();
    let s = floats_of(start)?[0];
    let l = floats_of(arg(&args, 1)?)?[0];
    let d = floats_of(arg(&args, 2)?)?[0];
    if d == 0.0 {
        candle_core::bail!("Range with delta 0");
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    check_size(&[n])?;
    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    let t = Tensor::from_vec(v, n, cx.device)?;
    Ok(vec![if dt.is_int() {
        t.round()?.to_dtype(dt)?
    } else {
        t.to_dtype(dt)?
    }])
}
