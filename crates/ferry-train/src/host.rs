//! Work on the f32 data of CPU tensors in place, in fixed-size parallel chunks: what the
//! fused optimizer updates ([`crate::optim`]) and the gradient norm ([`crate::grads`]) share.
//! Splitting by a fixed chunk size, not by thread, keeps every reduction deterministic.

use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Tensor, Var};

use crate::Result;

/// Calls `f` with the contiguous f32 data of a CPU tensor, or returns `None` when the tensor
/// is elsewhere or strided (the caller falls back to tensor ops).
pub(crate) fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout): (_, &Layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Some(f(&v[a..b])),
        _ => None,
    }
}

/// Updates a parameter in place on the host: `update(param, grad)` over contiguous f32 data.
/// Returns `false` (and does nothing) when the parameter or gradient is not a CPU f32 tensor;
/// the caller then takes its tensor-op path.
pub(crate) fn update_on_host(
    var: &Var,
    grad: &Tensor,
    update: &(dyn Fn(&mut [f32], &[f32]) + Sync),
) -> Result<bool> {
    struct HostUpdate<'a> {
        grad: &'a [f32],
        update: &'a (dyn Fn(&mut [f32], &[f32]) + Sync),
    }
    impl InplaceOp1 for HostUpdate<'_> {
        fn name(&self) -> &'static str {
            "ferry-optimizer-step"
        }
        fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
            let (CpuStorage::F32(p), Some((a, b))) = (s, l.contiguous_offsets()) else {
                candle_core::bail!("optimizer: expects a contiguous f32 parameter");
            };
            (self.update)(&mut p[a..b], self.grad);
            Ok(())
        }
    }
    if !var.device().is_cpu() {
        return Ok(false);
    }
    let grad = grad.contiguous()?;
    match with_host_f32(&grad, |g| {
        var.as_tensor().inplace_op1(&HostUpdate { grad: g, update })
    }) {
        Some(r) => r.map(|()| true).map_err(Into::into),
        None => Ok(false),
    }
}

/// Elements per parallel task of the fused kernels.
pub(crate) const CHUNK: usize = 1 << 14;
