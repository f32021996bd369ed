//! MatMul (NumPy semantics, batched and broadcast) and Gemm.

use candle_core::Tensor;

use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, broadcast_shape, opt, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "MatMul" => matmul_op,
        "Gemm" => gemm,
        _ => return None,
    })
}

/// `a @ b` with NumPy rules: 1-D operands are promoted, batch dimensions broadcast, and a
/// 2-D right operand is applied to all rows of `a` at once (one large GEMM). The output, and
/// the operands where they must be broadcast, are checked against the budget first.
fn matmul(cx: &OpCx, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let (a1, b1) = (a.rank() == 1, b.rank() == 1);
    if a.rank() == 0 || b.rank() == 0 {
        bail!("MatMul of a scalar ({:?} @ {:?})", a.dims(), b.dims());
    }
    let a = if a1 { a.unsqueeze(0)? } else { a.clone() };
    let b = if b1 { b.unsqueeze(1)? } else { b.clone() };
    let (ad, bd) = (a.dims(), b.dims());
    let (m, k, k2, n) = (
        ad[ad.len() - 2],
        ad[ad.len() - 1],
        bd[bd.len() - 2],
        bd[bd.len() - 1],
    );
    if k != k2 {
        bail!("MatMul of {ad:?} and {bd:?}: the inner dimensions differ");
    }
    let batch = broadcast_shape(&ad[..ad.len() - 2], &bd[..bd.len() - 2])?;
    let with = |last: [usize; 2]| [batch.as_slice(), &last].concat();
    cx.fits("its output", &with([m, n]), a.dtype())?;
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
        // Both operands are broadcast to the full batch and written out.
        cx.fits("its left operand broadcast", &with([m, k]), a.dtype())?;
        cx.fits("its right operand broadcast", &with([k, n]), b.dtype())?;
        let (a, b) = (a.contiguous()?, b.contiguous()?);
        a.broadcast_matmul(&b)?
    };
    let out = if a1 {
        out.squeeze(out.rank() - 2)?
    } else {
        out
    };
    Ok(if b1 {
        out.squeeze(out.rank() - 1)?
    } else {
        out
    })
}

/// candle's matmul, making operands contiguous when their strides are not ones it takes.
fn mm(a: &Tensor, b: &Tensor) -> R<Tensor> {
    match a.matmul(b) {
        Ok(t) => Ok(t),
        Err(_) => Ok(a.contiguous()?.matmul(&b.contiguous()?)?),
    }
}

fn matmul_op(_: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    Ok(vec![matmul(cx, arg(&args, 0)?, arg(&args, 1)?)?])
}

fn gemm(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
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
    let ((m, k), (k2, n)) = (a.dims2()?, b.dims2()?);
    if k != k2 {
        bail!(
            "Gemm of {:?} and {:?}: the inner dimensions differ",
            a.dims(),
            b.dims()
        );
    }
    let out = match opt(&args, 2) {
        Some(c) => broadcast_shape(&[m, n], c.dims())?,
        None => vec![m, n],
    };
    cx.fits("its output", &out, a.dtype())?;
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
