//! Element-type conversion on raw little-endian bytes, and loading bytes into candle.

use candle_core::{Device, Tensor};
use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Float types ferry converts between with `--dtype`.
pub fn is_castable_float(d: DType) -> bool {
    d.is_float()
}

/// Converts `src` (elements of `from`) to elements of `to`. Both must be float types; a
/// same-type cast returns the bytes unchanged.
pub fn cast_bytes(src: &[u8], from: DType, to: DType) -> Result<Vec<u8>> {
    if from == to {
        return Ok(src.to_vec());
    }
    if !from.is_float() || !to.is_float() {
        return Err(Error::Invalid(format!(
            "ferry casts between float types only (f64, f32, f16, bf16, f8e4m3), not {from} -> {to}"
        )));
    }
    if !src.len().is_multiple_of(from.block_bytes()) {
        return Err(Error::Invalid(format!(
            "{} bytes is not a whole number of {from} elements",
            src.len()
        )));
    }
    // f64 needs a wide path so that f64 -> f64-ish conversions do not go through f32.
    if from == DType::F64 || to == DType::F64 {
        let wide = decode_f64(src, from);
        return Ok(encode_f64(&wide, to));
    }
    let narrow = decode_f32(src, from);
    Ok(encode_f32(&narrow, to))
}

/// Decodes float elements to f32.
pub fn decode_f32(src: &[u8], from: DType) -> Vec<f32> {
    match from {
        DType::F32 => src
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => {
            let mut out = vec![0f32; src.len() / 2];
            let halves: Vec<f16> = src
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(halves.as_slice(), &mut out);
            out
        }
        DType::BF16 => src
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        DType::F8E4M3 => src
            .iter()
            .map(|&b| float8::F8E4M3::from_bits(b).to_f32())
            .collect(),
        DType::F64 => decode_f64(src, from)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => unreachable!("decode_f32 is only called for float types"),
    }
}

fn encode_f32(v: &[f32], to: DType) -> Vec<u8> {
    match to {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => {
            let mut halves = vec![f16::ZERO; v.len()];
            half::slice::HalfFloatSliceExt::convert_from_f32_slice(halves.as_mut_slice(), v);
            halves
                .iter()
                .flat_map(|h| h.to_bits().to_le_bytes())
                .collect()
        }
        DType::BF16 => v
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        DType::F8E4M3 => v
            .iter()
            .map(|&x| float8::F8E4M3::from_f32(x).to_bits())
            .collect(),
        DType::F64 => v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect(),
        _ => unreachable!("encode_f32 is only called for float types"),
    }
}

fn decode_f64(src: &[u8], from: DType) -> Vec<f64> {
    match from {
        DType::F64 => src
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect(),
        other => decode_f32(src, other).into_iter().map(f64::from).collect(),
    }
}

fn encode_f64(v: &[f64], to: DType) -> Vec<u8> {
    match to {
        DType::F64 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => v
            .iter()
            .flat_map(|&x| f16::from_f64(x).to_bits().to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|&x| bf16::from_f64(x).to_bits().to_le_bytes())
            .collect(),
        DType::F8E4M3 => v
            .iter()
            .map(|&x| float8::F8E4M3::from_f64(x).to_bits())
            .collect(),
        _ => {
            let narrow: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            encode_f32(&narrow, to)
        }
    }
}

/// Decodes any non-quantized element type to f64 (for comparisons in `diff` and `verify`).
pub fn decode_to_f64(src: &[u8], dtype: DType) -> Result<Vec<f64>> {
    macro_rules! ints {
        ($t:ty, $n:expr) => {
            src.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")) as f64)
                .collect()
        };
    }
    Ok(match dtype {
        DType::Bool | DType::U8 => src.iter().map(|&b| b as f64).collect(),
        DType::I8 => src.iter().map(|&b| b as i8 as f64).collect(),
        DType::I16 => ints!(i16, 2),
        DType::U16 => ints!(u16, 2),
        DType::I32 => ints!(i32, 4),
        DType::U32 => ints!(u32, 4),
        DType::I64 => ints!(i64, 8),
        DType::U64 => ints!(u64, 8),
        d if d.is_float() => decode_f64(src, d),
        d => {
            let n = src.len() / d.block_bytes() * d.block_elems();
            crate::quant::dequantize(src, d, n)?
                .into_iter()
                .map(f64::from)
                .collect()
        }
    })
}

/// Builds a candle tensor from row-major little-endian bytes. `bool` becomes `u8`, `i8`
/// widens to `i16`, `u16` to `i32`, `u64` to `i64` (an error if a value does not fit), and
/// quantized data is dequantized to f32.
pub fn bytes_to_candle(
    data: &[u8],
    dtype: DType,
    shape: &[usize],
    device: &Device,
) -> Result<Tensor> {
    if let Some(c) = dtype.to_candle() {
        return Ok(Tensor::from_raw_buffer(data, c, shape, device)?);
    }
    Ok(match dtype {
        DType::Bool => Tensor::from_raw_buffer(data, candle_core::DType::U8, shape, device)?,
        DType::I8 => {
            let v: Vec<i16> = data.iter().map(|&b| b as i8 as i16).collect();
            Tensor::from_vec(v, shape, device)?
        }
        DType::U16 => {
            let v: Vec<i32> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32)
                .collect();
            Tensor::from_vec(v, shape, device)?
        }
        DType::U64 => {
            let v = data
                .chunks_exact(8)
                .map(|c| i64::try_from(u64::from_le_bytes(c.try_into().expect("chunk of 8"))))
                .collect::<std::result::Result<Vec<i64>, _>>()
                .map_err(|_| Error::Invalid("a u64 value does not fit in candle's i64".into()))?;
            Tensor::from_vec(v, shape, device)?
        }
        q => {
            let n: usize = shape.iter().product();
            Tensor::from_vec(crate::quant::dequantize(data, q, n)?, shape, device)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_f16_bf16_round_trip_exact_values() {
        let v = [1.0f32, -2.5, 0.0, 65504.0];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        for mid in [DType::F16, DType::BF16, DType::F64] {
            let there = cast_bytes(&bytes, DType::F32, mid).unwrap();
            let back = cast_bytes(&there, mid, DType::F32).unwrap();
            if mid == DType::BF16 {
                // 65504 is not representable in bf16; the others are.
                assert_eq!(&back[..12], &bytes[..12]);
            } else {
                assert_eq!(back, bytes, "via {mid}");
            }
        }
    }

    #[test]
    fn integer_cast_is_refused() {
        assert!(cast_bytes(&[0; 8], DType::I64, DType::F32).is_err());
    }
}
