//! Small helpers shared by the op implementations.

use candle_core::{DType, Tensor};

use crate::ir::Node;

pub(crate) type R<T> = candle_core::Result<T>;

/// The required input `i`.
pub(crate) fn arg(args: &[Option<Tensor>], i: usize) -> R<&Tensor> {
    args.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| candle_core::Error::Msg(format!("input {i} is required but missing")))
}

/// The optional input `i`.
pub(crate) fn opt(args: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    args.get(i).and_then(Option::as_ref)
}

/// A tensor's values as i64 (shape and index inputs).
pub(crate) fn ints_of(t: &Tensor) -> R<Vec<i64>> {
    t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()
}

/// A tensor's values as f64 (scalar constants).
pub(crate) fn floats_of(t: &Tensor) -> R<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// A possibly negative axis as an index into `rank` dimensions.
pub(crate) fn norm_axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        candle_core::bail!("axis {a} is out of range for rank {rank}");
    }
    Ok(v as usize)
}

/// Axes from input `idx` when present (newer opsets), else from the `axes` attribute.
pub(crate) fn axes(node: &Node, args: &[Option<Tensor>], idx: usize) -> R<Option<Vec<i64>>> {
    if let Some(t) = opt(args, idx) {
        return Ok(Some(ints_of(t)?));
    }
    Ok(node.attr_ints("axes").map(<[i64]>::to_vec))
}

/// NumPy broadcasting of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => candle_core::bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

/// candle dtype for an ONNX element type code (bool as u8, narrow ints widened).
pub(crate) fn candle_dtype(code: i64) -> R<DType> {
    use ferry_io::DType as F;
    let d = crate::onnx::dtype_from_onnx(code as i32)
        .ok_or_else(|| candle_core::Error::Msg(format!("element type {code} is not supported")))?;
    Ok(match d {
        F::Bool | F::U8 => DType::U8,
        F::I8 | F::I16 => DType::I16,
        F::U16 | F::I32 => DType::I32,
        F::U32 => DType::U32,
        F::I64 | F::U64 => DType::I64,
        F::F16 => DType::F16,
        F::BF16 => DType::BF16,
        F::F64 => DType::F64,
        _ => DType::F32,
    })
}
