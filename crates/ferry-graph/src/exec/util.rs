//! Small helpers shared by the op implementations.

use candle_core::{DType, Tensor};

use crate::error::BudgetExceeded;
use crate::ir::Node;

/// Why an op failed: a candle error (or one of the op's own checks), or a tensor it would have
/// made over the memory budget (kept whole, so the executor reports it as
/// [`crate::Error::NodeOverBudget`]).
#[derive(Debug)]
pub(crate) enum OpError {
    Candle(candle_core::Error),
    OverBudget(Box<BudgetExceeded>),
}

impl From<candle_core::Error> for OpError {
    fn from(e: candle_core::Error) -> Self {
        OpError::Candle(e)
    }
}

impl From<BudgetExceeded> for OpError {
    fn from(e: BudgetExceeded) -> Self {
        OpError::OverBudget(Box::new(e))
    }
}

pub(crate) type R<T> = std::result::Result<T, OpError>;

/// Returns an op error built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(candle_core::Error::Msg(format!($($arg)*)).into())
    };
}
pub(crate) use bail;

/// The required input `i`.
pub(crate) fn arg(args: &[Option<Tensor>], i: usize) -> R<&Tensor> {
    args.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| candle_core::Error::Msg(format!("input {i} is required but missing")).into())
}

/// The optional input `i`.
pub(crate) fn opt(args: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    args.get(i).and_then(Option::as_ref)
}

/// A tensor's values as i64 (shape and index inputs).
pub(crate) fn ints_of(t: &Tensor) -> candle_core::Result<Vec<i64>> {
    t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()
}

/// A possibly negative axis as an index into `rank` dimensions.
pub(crate) fn norm_axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        bail!("axis {a} is out of range for rank {rank}");
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
            _ => bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

/// candle dtype for an ONNX element type code (bool as u8, narrow ints widened, the
/// [`crate::ir::Narrow`] types as the dtype that holds them).
pub(crate) fn candle_dtype(code: i64) -> R<DType> {
    use ferry_io::DType as F;
    let d = crate::onnx::dtype_from_onnx(code as i32)
        .or(crate::ir::Narrow::from_onnx(code as i32).map(crate::ir::Narrow::held))
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

/// Reshapes a per-channel vector to broadcast over `[N, C, ...]` (`rank` at least 2).
pub(crate) fn per_channel(v: &Tensor, rank: usize) -> R<Tensor> {
    if rank < 2 {
        bail!("an input of rank {rank} has no channel dimension");
    }
    let mut shape = vec![1; rank];
    shape[1] = v.elem_count();
    Ok(v.reshape(shape)?)
}
