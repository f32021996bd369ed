//! GGML block quantization: float -> q4_0 ... q6_k and back, using candle's kernels.

use std::borrow::Cow;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Dequantizes `numel` elements of quantized `data` to f32.
pub fn dequantize(data: &[u8], dtype: DType, numel: usize) -> Result<Vec<f32>> {
    let ggml = dtype
        .to_ggml()
        .ok_or_else(|| Error::Invalid(format!("{dtype} is not a GGML type")))?;
    let expected = dtype.storage_bytes(numel as u64);
    if expected != Some(data.len() as u64) {
        return Err(Error::Invalid(format!(
            "{} bytes do not hold {numel} {dtype} elements",
            data.len()
        )));
    }
    // candle reinterprets the bytes as block structs and asserts their alignment: hand it an
    // aligned copy when the bytes sit at an odd place (inside a mapped file, say).
    let aligned;
    let data = if (data.as_ptr() as usize) % 8 == 0 {
        data
    } else {
        aligned = aligned_copy(data);
        &bytemuck::cast_slice::<u64, u8>(&aligned)[..data.len()]
    };
    let q = ggml.from_data(Cow::Borrowed(data));
    match q.dequantize(numel)? {
        candle_core::CpuStorage::F32(v) => Ok(v),
        _ => Err(Error::Invalid(format!(
            "candle dequantized {dtype} to a non-f32 storage"
        ))),
    }
}

/// Copies `data` into a buffer aligned to 8 bytes (padded at the end with zeros).
pub(crate) fn aligned_copy(data: &[u8]) -> Vec<u64> {
    let mut buf = vec![0u64; data.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..data.len()].copy_from_slice(data);
    buf
}
