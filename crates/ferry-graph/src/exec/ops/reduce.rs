//! Reductions and normalized exponentials: ReduceMean/Sum/Max/Min/Prod/L2, Softmax,
//! LogSoftmax, ArgMax/ArgMin.

use candle_core::{DType, Tensor, D};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, axes, bail, norm_axis, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL2"
        | "ReduceSumSquare" => reduce,
        "Softmax" | "LogSoftmax" => softmax,
        "ArgMax" | "ArgMin" => argmax,
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
    if matches!(node.op_type.as_str(), "ReduceProd" | "ReduceL2") {
        cx.fits("its input as f64", x.dims(), DType::F64)?;
    }
    if node.op_type == "ReduceProd" {
        return Ok(vec![prod(x, &dims, keep)?]);
    }
    let mut y = match node.op_type.as_str() {
        "ReduceMean" => x.mean_keepdim(dims.as_slice())?,
        "ReduceSum" => x.sum_keepdim(dims.as_slice())?,
        "ReduceSumSquare" => (x * x)?.sum_keepdim(dims.as_slice())?,
        "ReduceL2" => x
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_keepdim(dims.as_slice())?
            .sqrt()?
            .to_dtype(x.dtype())?,
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
    if node.attr_int("select_last_index", 0) != 0 {
        bail!("select_last_index=1 is not supported");
    }
    let mut y = if node.op_type == "ArgMax" {
        x.argmax_keepdim(axis)?
    } else {
        x.argmin_keepdim(axis)?
    };
    if node.attr_int("keepdims", 1) == 0 {
        y = y.squeeze(axis)?;
    }
    Ok(vec![y.to_dtype(DType::I64)?])
}
