//! Reductions and normalized exponentials: ReduceMean/Sum/Max/Min/Prod/L2, Softmax,
//! LogSoftmax, ArgMax/ArgMin.

use candle_core::{DType, Tensor, D};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, axes, norm_axis, R};
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

fn reduce(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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

fn prod(x: &Tensor, dims: &[usize], keep: bool) -> R<Tensor> {
    let mut y = x.to_dtype(DType::F64)?;
    for &d in dims {
        let parts: Vec<Tensor> = (0..y.dims()[d])
            .map(|i| y.narrow(d, i, 1))
            .collect::<R<_>>()?;
        let mut acc = parts[0].clone();
        for p in &parts[1..] {
            acc = (acc * p)?;
        }
        y = acc;
    }
    if !keep {
        for &d in dims.iter().rev() {
            y = y.squeeze(d)?;
        }
    }
    y.to_dtype(x.dtype())
}

/// Softmax over `axis` (opset 13+ semantics; older opsets flatten from `axis`).
pub(crate) fn softmax_axis(x: &Tensor, axis: usize) -> R<Tensor> {
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

fn log_softmax_last(x: &Tensor) -> R<Tensor> {
    let m = x.max_keepdim(D::Minus1)?;
    let s = x.broadcast_sub(&m)?;
    s.broadcast_sub(&s.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

fn argmax(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let axis = norm_axis(node.attr_int("axis", 0), x.rank())?;
    if node.attr_int("select_last_index", 0) != 0 {
        candle_core::bail!("select_last_index=1 is not supported");
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
