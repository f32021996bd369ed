//! MatMul (NumPy semantics, batched and broadcast) and Gemm.

use candle_core::Tensor;

use super::{OpCx, OpFn};
use crate::exec::util::{arg, opt, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "MatMul" => matmul_op,
        "Gemm" => gemm,
        _ => return None,
    })
}

/// `a @ b` with NumPy rules: 1-D operands are promoted, batch dimensions broadcast, and a
/// 2-D right operand is applied to all rows of `a` at once (one large GEMM).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> R<Tensor> {
    let (a1, b1) = (a.rank() == 1, b.rank() == 1);
    let a = if a1 { a.unsqueeze(0)? } else { a.clone() };
    let b = if b1 { b.unsqueeze(1)? } else { b.clone() };
    let out = if b.rank() == 2 && a.rank() > 2 {
        let dims = a.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = mm(&a.reshape((rows, k))?, &b)?;
        let mut out_dims = dims[..dims.len() - 1].to_vec();
        out_dims.push(b.dims()[1]);
        y.reshape(out_dims)?
    } else if a.rank() == b.rank() && a.dims()[..a.rank() - 2] == b.dims()[..b.rank() - 2] {
        mm(&a, &b)?
    } else {
        let (a, b) = (a.contiguous()?, b.contiguous()?);
        a.broadcast_matmul(&b)?
    };
    let out = if a1 {
        out.squeeze(out.rank() - 2)?
    } else {
        out
    };
    if b1 {
        out.squeeze(out.rank() - 1)
    } else {
        Ok(out)
    }
}

/// candle's matmul, making operands contiguous when their strides are not ones it takes.
fn mm(a: &Tensor, b: &Tensor) -> R<Tensor> {
    match a.matmul(b) {
        Ok(t) => Ok(t),
        Err(_) => a.contiguous()?.matmul(&b.contiguous()?),
    }
}

fn matmul_op(_: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    Ok(vec![matmul(arg(&args, 0)?, arg(&args, 1)?)?])
}

fn gemm(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let mut a = arg(&args, 0)?.clone();
    let mut b = arg(&args, 1)?.clone();
    if node.attr_int("transA", 0) != 0 {
        a = a.t()?;
    }
    if node.attr_int("transB", 0) != 0 {
        b = b.t()?;
    }
    let alpha = node.attr_float("alpha", 1.0) as f64;
    let beta = node.attr_float("beta", 1.0) as f64;
    let mut y = mm(&a, &b)?;
    if alpha != 1.0 {
        y = (y * alpha)?;
    }
    if let Some(c) = opt(&args, 2) {
        let c = if beta != 1.0 { (c * beta)? } else { c.clone() };
        y = y.broadcast_add(&c)?;
    }
    Ok(vec![y])
}
