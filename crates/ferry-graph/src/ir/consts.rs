//! Constant tensors: initializers made from candle tensors (folded values) and back.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use ferry_io::{DType, Layout, Storage, TensorEntry};

use crate::error::Result;

/// An in-memory initializer holding `t`'s values (bool tensors are stored as u8).
pub fn entry_from_candle(name: &str, t: &Tensor) -> Result<TensorEntry> {
    let t = t.to_device(&Device::Cpu)?.contiguous()?;
    let dtype = DType::from_candle(t.dtype())?;
    let bytes = tensor_bytes(&t)?;
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape: t.dims().to_vec(),
        storage: Storage::owned(bytes),
        layout: Layout::Contiguous { offset: 0 },
        storage_key: None,
        file: Arc::from(Path::new("<computed>")),
    })
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    use candle_core::DType as C;
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        C::U8 => flat.to_vec1::<u8>()?,
        C::U32 => le(flat.to_vec1::<u32>()?.iter().map(|v| v.to_le_bytes())),
        C::I16 => le(flat.to_vec1::<i16>()?.iter().map(|v| v.to_le_bytes())),
        C::I32 => le(flat.to_vec1::<i32>()?.iter().map(|v| v.to_le_bytes())),
        C::I64 => le(flat.to_vec1::<i64>()?.iter().map(|v| v.to_le_bytes())),
        C::F16 => le(flat.to_vec1::<half::f16>()?.iter().map(|v| v.to_le_bytes())),
        C::BF16 => le(flat
            .to_vec1::<half::bf16>()?
            .iter()
            .map(|v| v.to_le_bytes())),
        C::F32 => le(flat.to_vec1::<f32>()?.iter().map(|v| v.to_le_bytes())),
        C::F64 => le(flat.to_vec1::<f64>()?.iter().map(|v| v.to_le_bytes())),
        other => {
            return Err(crate::Error::Invalid(format!(
                "cannot store a {other:?} tensor as a constant"
            )))
        }
    })
}

fn le<const N: usize>(it: impl Iterator<Item = [u8; N]>) -> Vec<u8> {
    it.flatten().collect()
}

/// Loads an initializer into candle on `device` (bool as u8).
pub fn entry_to_candle(e: &TensorEntry, device: &Device) -> Result<Tensor> {
    Ok(e.to_candle(device)?)
}
