//! Reductions and normalized exponentials: ReduceMean/Sum/SumSquare/Max/Min/Prod/L1/L2/
//! LogSum/LogSumExp, Softmax, LogSoftmax, Hardmax, ArgMax/ArgMin.

use candle_core::{DType, Tensor, D};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, axes, bail, norm_axis, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2"
        | "ReduceSumSquare" | "ReduceL1" | "ReduceLogSum" | "ReduceLogSumExp" => reduce,
        "Softmax" | "LogSoftmax" => softmax,
        "ArgMax" | "ArgMin" => argmax,
        "Hardmax" => hardmax,
        _ => return None,
    })
}

fn reduce(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let keep = node.attr_int("keepdims", 1) != 0;
    let rank = x.rank();
    let mut dims: Vec<usize> = match axes(node, &args, 1)? {
        Some(a) if !a.is_empty() => a.iter().map(|&v| norm_axis(v, rank)).collect::<R<_>>()?,
        _ if node.attr_int("noop_with_empty_axes", 0) != 0 => return Ok(vec![x.clone()]),
        _ => (0..rank).collect(),
    };
    dims.sort_unstable();
    dims.dedup();
    let op = node.op_type.as_str();
    if op != "ReduceProd" && x.elem_count() == 0 {
        return Ok(vec![empty_reduce(x, op, &dims, keep, cx)?]);
    }
    let in_f64 = || -> R<Tensor> {
        cx.fits("its input as f64", x.dims(), DType::F64)?;
        Ok(x.to_dtype(DType::F64)?)
    };
    if op == "ReduceProd" {
        cx.fits("its input as f64", x.dims(), DType::F64)?;
        return Ok(vec![prod(x, &dims, keep)?]);
    }
    let mut y = match node.op_type.as_str() {
        "ReduceMean" => x.mean_keepdim(dims.as_slice())?,
        "ReduceSum" => x.sum_keepdim(dims.as_slice())?,
        "ReduceSumSquare" => (x * x)?.sum_keepdim(dims.as_slice())?,
        "ReduceL2" => in_f64()?
            .sqr()?
            .sum_keepdim(dims.as_slice())?
            .sqrt()?
            .to_dtype(x.dtype())?,
        "ReduceL1" => in_f64()?
            .abs()?
            .sum_keepdim(dims.as_slice())?
            .to_dtype(x.dtype())?,
        "ReduceLogSum" => in_f64()?
            .sum_keepdim(dims.as_slice())?
            .log()?
            .to_dtype(x.dtype())?,
        "ReduceLogSumExp" => log_sum_exp(&in_f64()?, &dims)?.to_dtype(x.dtype())?,
        op => {
            let mut y = x.clone();
            for &d in &dims {
                y = if op == "ReduceMax" {
                    y.max_keepdim(d)?
                } else {
                    y.min_keepdim(d)?
                };
            }
            y
        }
    };
    if !keep {
        for &d in dims.iter().rev() {
            y = y.squeeze(d)?;
        }
    }
    Ok(vec![y])
}

/// `log(sum(exp(x)))` over `dims` (kept), shifted by the finite maxima so that large values
/// do not overflow.
fn log_sum_exp(x: &Tensor, dims: &[usize]) -> R<Tensor> {
    let mut m = x.clone();
    for &d in dims {
        m = m.max_keepdim(d)?;
    }
    let finite = m.abs()?.lt(f64::INFINITY)?;
    let m = finite.where_cond(&m, &m.zeros_like()?)?;
    let s = x.broadcast_sub(&m)?.exp()?.sum_keepdim(dims)?.log()?;
    Ok((s + m)?)
}

/// A reduction over no elements, as NumPy gives it: 0 for sums and norms, NaN for the mean,
/// -inf for the log-sums, and the type's lowest (Max) or highest (Min) value.
fn empty_reduce(x: &Tensor, op: &str, dims: &[usize], keep: bool, cx: &OpCx) -> R<Tensor> {
    let shape: Vec<usize> = (0..x.rank())
        .filter_map(|d| match dims.contains(&d) {
            true if keep => Some(1),
            true => None,
            false => Some(x.dims()[d]),
        })
        .collect();
    cx.fits("its output", &shape, DType::F64)?;
    let dt = x.dtype();
    let (lo, hi) = match dt {
        DType::U8 => (0.0, 255.0),
        DType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        DType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        DType::U32 => (0.0, f64::from(u32::MAX)),
        DType::I64 => (i64::MIN as f64, i64::MAX as f64),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    };
    let v = match op {
        "ReduceMax" => lo,
        "ReduceMin" => hi,
        "ReduceMean" => f64::NAN,
        "ReduceLogSum" | "ReduceLogSumExp" => f64::NEG_INFINITY,
        _ => 0.0,
    };
    let t = Tensor::full(v, shape, x.device())?;
    Ok(if dt == DType::I64 {
        // f64 cannot hold i64::MAX exactly: build the i64 extremes directly.
        let v = match op {
            "ReduceMax" => i64::MIN,
            "ReduceMin" => i64::MAX,
            _ => 0,
        };
        Tensor::full(v, t.shape(), x.device())?
    } else {
        t.to_dtype(dt)?
    })
}

/// The product over `dims` (sorted, distinct), in f64 on the host: the reduced dims are moved
/// last and each row of what they span is multiplied out (an empty row gives 1).
fn prod(x: &Tensor, dims: &[usize], keep: bool) -> R<Tensor> {
    let kept: Vec<usize> = (0..x.rank()).filter(|d| !dims.contains(d)).collect();
    let perm: Vec<usize> = kept.iter().chain(dims).copied().collect();
    let row: usize = dims.iter().map(|&d| x.dims()[d]).product();
    let v = x
        .to_dtype(DType::F64)?
        .permute(perm)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let out: Vec<f64> = if row == 0 {
        vec![1.0; kept.iter().map(|&d| x.dims()[d]).product()]
    } else {
        v.chunks_exact(row).map(|r| r.iter().product()).collect()
    };
    let shape: Vec<usize> = if keep {
        (0..x.rank())
            .map(|d| if dims.contains(&d) { 1 } else { x.dims()[d] })
            .collect()
    } else {
        kept.iter().map(|&d| x.dims()[d]).collect()
    };
    Ok(Tensor::from_vec(out, shape, x.device())?.to_dtype(x.dtype())?)
}

/// Softmax over `axis` (opset 13+ semantics; older opsets flatten from `axis`).
pub(crate) fn softmax_axis(x: &Tensor, axis: usize) -> candle_core::Result<Tensor> {
    if axis + 1 == x.rank() && x.dtype() == DType::F32 && x.device().is_cpu() {
        return ferry_kernels::softmax_last_dim(x);
    }
    let m = x.max_keepdim(axis)?;
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(axis)?)
}

fn softmax(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let default = if cx.opset >= 13 { -1 } else { 1 };
    let axis = norm_axis(node.attr_int("axis", default), x.rank())?;
    let log = node.op_type == "LogSoftmax";
    if cx.opset < 13 && axis + 1 != x.rank() {
        // Opsets before 13 treat the input as 2-D: [prod(dims[..axis]), prod(dims[axis..])].
        let outer: usize = x.dims()[..axis].iter().product();
        let flat = x.reshape((outer, ()))?;
        let y = if log {
            log_softmax_last(&flat)?
        } else {
            softmax_axis(&flat, 1)?
        };
        return Ok(vec![y.reshape(x.dims())?]);
    }
    let y = if log {
        let m = x.max_keepdim(axis)?;
        let s = x.broadcast_sub(&m)?;
        s.broadcast_sub(&s.exp()?.sum_keepdim(axis)?.log()?)?
    } else {
        softmax_axis(x, axis)?
    };
    Ok(vec![y])
}

fn log_softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?;
    let s = x.broadcast_sub(&m)?;
    s.broadcast_sub(&s.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

fn argmax(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = norm_axis(node.attr_int("axis", 0), x.rank())?;
    let n = x.dims()[axis];
    if n == 0 {
        bail!("{} over an empty axis {axis}", node.op_type);
    }
    let last = node.attr_int("select_last_index", 0) != 0;
    // The last index: the first one along the axis reversed.
    let x = if last {
        let rev: Vec<i64> = (0..n as i64).rev().collect();
        let rev = Tensor::from_vec(rev, n, x.device())?;
        x.contiguous()?.index_select(&rev, axis)?
    } else {
        x.clone()
    };
    let mut y = if node.op_type == "ArgMax" {
        x.argmax_keepdim(axis)?
    } else {
        x.argmin_keepdim(axis)?
    }
    .to_dtype(DType::I64)?;
    if last {
        y = Tensor::full(n as i64 - 1, y.shape(), y.device())?.sub(&y)?;
    }
    if node.attr_int("keepdims", 1) == 0 {
        y = y.squeeze(axis)?;
    }
    Ok(vec![y])
}

/// 1 at the first largest value along the axis, 0 elsewhere (opsets before 13 flatten the
/// input to 2-D at the axis, as Softmax does).
fn hardmax(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let default = if cx.opset >= 13 { -1 } else { 1 };
    let axis = norm_axis(node.attr_int("axis", default), x.rank())?;
    if x.elem_count() == 0 {
        return Ok(vec![x.clone()]);
    }
    let (flat, axis) = if cx.opset < 13 {
        let outer: usize = x.dims()[..axis].iter().product();
        (x.reshape((outer, ()))?, 1)
    } else {
        (x.clone(), axis)
    };
    let n = flat.dims()[axis];
    let idx = flat.argmax_keepdim(axis)?.to_dtype(DType::I64)?;
    let mut line = vec![1; flat.rank()];
    line[axis] = n;
    let ar = Tensor::arange(0i64, n as i64, x.device())?.reshape(line)?;
    let y = ar.broadcast_eq(&idx)?.to_dtype(x.dtype())?;
    Ok(vec![y.reshape(x.dims())?])
}
