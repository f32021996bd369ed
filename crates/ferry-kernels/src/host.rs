//! Borrowing the f32 data of CPU tensors for the fused kernels, and the test every op makes
//! before taking its fast path.

use candle_core::{CpuStorage, DType, Device, Layout, Tensor};

pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expects a contiguous f32 tensor"),
    }
}

/// Calls `f` with the f32 data of CPU tensors (made contiguous first), borrowed, not copied.
pub(crate) fn host_slices<R>(
    ts: &[&Tensor],
    f: impl FnOnce(&[&[f32]]) -> R,
) -> candle_core::Result<R> {
    let owned: Vec<Tensor> = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (s, l) in &guards {
        match (&**s, l.contiguous_offsets()) {
            (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => slices.push(&v[a..b]),
            _ => candle_core::bail!("expected contiguous f32 CPU tensors"),
        }
    }
    Ok(f(&slices))
}

pub(crate) fn fast_path(xs: &[&Tensor]) -> bool {
    xs.iter()
        .all(|x| matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32)
}
