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

/// Blocks handed to one rayon task when quantizing. Quantization is block-local, so the split
/// does not change the output; it only bounds the work per task.
const BLOCKS_PER_TASK: usize = 1024;

/// How far a quantized tensor is from its float original.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantError {
    /// Root mean square of the element-wise differences.
    pub rmse: f64,
    /// Largest absolute element-wise difference.
    pub max_abs: f64,
    /// Cosine similarity of the two tensors seen as vectors (1 when both are all zeros).
    pub cosine: f64,
}

/// Whether a tensor of `shape` can be stored as quantized `dtype`, llama.cpp style: it needs
/// at least two dimensions (biases and norms stay float) and its last dimension (the row,
/// ggml's `ne[0]`) must be a whole number of blocks. `Err` holds the reason in words.
pub fn can_quantize(shape: &[usize], dtype: DType) -> std::result::Result<(), String> {
    let block = dtype.block_elems();
    if dtype.to_ggml().is_none() || !dtype.is_quantized() {
        return Err(format!("{dtype} is not a GGML quantized type"));
    }
    if shape.len() < 2 {
        return Err(format!(
            "{}-dimensional tensors stay float (biases and norms are not quantized)",
            shape.len()
        ));
    }
    let row = shape[shape.len() - 1];
    if row == 0 || row % block != 0 {
        return Err(format!(
            "last dimension {row} is not a multiple of the {dtype} block size {block}"
        ));
    }
    Ok(())
}

/// Quantizes f32 values to `dtype` (any GGML quantized type) with candle's kernels, in
/// parallel over chunks of whole blocks. The output is identical whatever the thread count.
/// `data.len()` must be a multiple of the block size and every value must be finite.
pub fn quantize(data: &[f32], dtype: DType) -> Result<Vec<u8>> {
    quantize_chunked(data, dtype, BLOCKS_PER_TASK)
}

/// [`quantize`] with an explicit number of blocks per parallel task (for tests and tuning).
pub fn quantize_chunked(data: &[f32], dtype: DType, blocks_per_task: usize) -> Result<Vec<u8>> {
    use rayon::prelude::*;
    let ggml = check_input(data, dtype)?;
    let block = dtype.block_elems();
    let per_task = blocks_per_task.clamp(1, data.len() / block + 1);
    let (chunk_elems, chunk_bytes) = (block * per_task, dtype.block_bytes() * per_task);
    let nbytes = data.len() / block * dtype.block_bytes();
    let mut out = vec![0u8; nbytes];
    out.par_chunks_mut(chunk_bytes)
        .zip(data.par_chunks(chunk_elems))
        .try_for_each(|(dst, src)| quantize_into(ggml, src, dst))?;
    Ok(out)
}

/// Quantizes whole blocks `src` into `dst` (exactly their size in bytes).
/// `round()` for the values q8_0 produces, as truncation of `x + copysign(pred(0.5), x)`: exact
/// for every finite `x` (it is how LLVM lowers `round` on CPUs without an instruction for it),
/// and unlike `f32::round` (a libm call) it vectorizes.
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    const PRED_HALF: f32 = 0.499_999_97;
    x + PRED_HALF.copysign(x)
}

/// q8_0 exactly as candle's `BlockQ8_0::from_float` (llama.cpp's `quantize_row_q8_0_ref`)
/// computes it, written so the compiler vectorizes the rounding: about 3x faster. Blocks are 34
/// bytes: the f16 scale `amax / 127`, then 32 `i8` values `round(x / scale)`.
fn quantize_q8_0_into(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        for (q, &v) in out[2..].iter_mut().zip(x) {
            // Truncating cast: `round_half_away` already moved the value past the boundary.
            *q = round_half_away(v * id) as i8 as u8;
        }
    }
}

/// The candle type for `dtype`, after checking that `data` fills whole blocks of finite values
/// (candle's K-quant kernels index with unchecked pointer arithmetic on non-finite input).
fn check_input(data: &[f32], dtype: DType) -> Result<candle_core::quantized::GgmlDType> {
    let ggml = dtype
        .to_ggml()
        .filter(|_| dtype.is_quantized())
        .ok_or_else(|| Error::Invalid(format!("{dtype} is not a GGML quantized type")))?;
    let block = dtype.block_elems();
    if data.len() % block != 0 {
        return Err(Error::Invalid(format!(
            "{} values do not fill whole {dtype} blocks of {block}",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "value {} at element {i} is not finite; {dtype} cannot encode it",
            data[i]
        )));
    }
    Ok(ggml)
}

/// Quantizes like [`quantize`] and measures the error in the same parallel pass: each task
/// dequantizes the blocks it has just written while they are still in cache. The result does
/// not depend on the number of threads.
pub fn quantize_measured(data: &[f32], dtype: DType) -> Result<(Vec<u8>, QuantError)> {
    use rayon::prelude::*;
    let ggml = check_input(data, dtype)?;
    let (chunk_elems, chunk_bytes) = (
        dtype.block_elems() * BLOCKS_PER_TASK,
        dtype.block_bytes() * BLOCKS_PER_TASK,
    );
    let mut out = vec![0u8; data.len() / dtype.block_elems() * dtype.block_bytes()];
    let sums = out
        .par_chunks_mut(chunk_bytes)
        .zip(data.par_chunks(chunk_elems))
        .map(|(dst, src)| {
            quantize_into(ggml, src, dst)?;
            let back = dequantize(dst, dtype, src.len())?;
            Ok(ErrorSums::of(src, &back))
        })
        .collect::<Result<Vec<_>>>()?;
    let total = sums
        .into_iter()
        .fold(ErrorSums::default(), ErrorSums::merge);
    Ok((out, total.finish()))
}

fn quantize_into(
    ggml: candle_core::quantized::GgmlDType,
    src: &[f32],
    dst: &mut [u8],
) -> Result<()> {
    if ggml == candle_core::quantized::GgmlDType::Q8_0 && dst.len() == src.len() / 32 * 34 {
        quantize_q8_0_into(src, dst);
        return Ok(());
    }
    let mut q = ggml.cpu_zeros(src.len());
    q.from_float(src);
    let n = q.storage_size_in_bytes();
    if n != dst.len() {
        return Err(Error::Invalid(format!(
            "candle produced {n} bytes for {} {ggml:?} values, expected {}",
            src.len(),
            dst.len()
        )));
    }
    // SAFETY: `q` is a live Vec of plain-old-data blocks; `as_ptr` points at its first byte
    // and `storage_size_in_bytes` is its exact length in bytes.
    let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr(), n) };
    dst.copy_from_slice(bytes);
    Ok(())
}

/// Error of `dequantized` against `original` (same length; extra elements are ignored).
/// Accumulates in f64.
pub fn error_stats(original: &[f32], dequantized: &[f32]) -> QuantError {
    ErrorSums::of(original, dequantized).finish()
}

/// Running sums behind a [`QuantError`], computed per chunk and merged.
#[derive(Debug, Default, Clone, Copy)]
struct ErrorSums {
    sq: f64,
    max_abs: f64,
    dot: f64,
    na: f64,
    nb: f64,
    n: usize,
}

impl ErrorSums {
    fn of(original: &[f32], dequantized: &[f32]) -> Self {
        // Eight independent f32 lanes per 32-element block vectorize; each block's lanes are
        // added into the f64 totals, so precision is that of f64 over blocks.
        let mut s = ErrorSums::default();
        for (a, b) in original.chunks(32).zip(dequantized.chunks(32)) {
            let (mut sq, mut dot, mut na, mut nb, mut mx) =
                ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
            for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
                let l = i % 8;
                let d = x - y;
                sq[l] += d * d;
                dot[l] += x * y;
                na[l] += x * x;
                nb[l] += y * y;
                mx[l] = mx[l].max(d.abs());
            }
            let total = |v: [f32; 8]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
            s.sq += total(sq);
            s.dot += total(dot);
            s.na += total(na);
            s.nb += total(nb);
            s.max_abs = s
                .max_abs
                .max(f64::from(mx.iter().fold(0f32, |m, &v| m.max(v))));
        }
        s.n = original.len().min(dequantized.len());
        s
    }

    fn merge(self, o: Self) -> Self {
        ErrorSums {
            sq: self.sq + o.sq,
            max_abs: self.max_abs.max(o.max_abs),
            dot: self.dot + o.dot,
            na: self.na + o.na,
            nb: self.nb + o.nb,
            n: self.n + o.n,
        }
    }

    fn finish(self) -> QuantError {
        let rmse = if self.n == 0 {
            0.0
        } else {
            (self.sq / self.n as f64).sqrt()
        };
        let cosine = if self.na == 0.0 && self.nb == 0.0 {
            1.0
        } else if self.na == 0.0 || self.nb == 0.0 {
            0.0
        } else {
            self.dot / (self.na.sqrt() * self.nb.sqrt())
        };
        QuantError {
            rmse,
            max_abs: self.max_abs,
            cosine,
        }
    }
}

/// Deterministic pseudo-random test values, roughly normal in [-2, 2].
#[cfg(test)]
pub(crate) fn tests_sample(n: usize) -> Vec<f32> {
    sample(n, 1)
}

#[cfg(test)]
fn sample(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            }
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_q() -> impl Iterator<Item = DType> {
        crate::dtype::ALL_DTYPES
            .into_iter()
            .filter(|d| d.is_quantized())
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let x = sample(256 * 37, 7);
        for d in all_q() {
            let whole = quantize_chunked(&x, d, usize::MAX).unwrap();
            for per_task in [1, 3, 8] {
                assert_eq!(
                    quantize_chunked(&x, d, per_task).unwrap(),
                    whole,
                    "{d} by {per_task}"
                );
            }
            assert_eq!(whole.len() as u64, d.storage_bytes(x.len() as u64).unwrap());
        }
    }

    /// candle's own quantization of `x`, the reference for the fast paths.
    fn via_candle(ggml: candle_core::quantized::GgmlDType, x: &[f32]) -> Vec<u8> {
        let mut q = ggml.cpu_zeros(x.len());
        q.from_float(x);
        // SAFETY: as in `quantize_into`: a live Vec of POD blocks of exactly this size.
        unsafe { std::slice::from_raw_parts(q.as_ptr(), q.storage_size_in_bytes()) }.to_vec()
    }

    #[test]
    fn fast_q8_0_is_bit_identical_to_candle() {
        // Random data at several scales, and blocks whose scale is exactly 1 (amax 127) so the
        // values hit the rounding boundaries k + 0.5 and just below them.
        let mut x: Vec<f32> = [1e-6f32, 1.0, 300.0]
            .iter()
            .flat_map(|&scale| sample(32 * 64, 11).into_iter().map(move |v| v * scale))
            .collect();
        for k in 0..32 {
            let mut block = vec![127.0f32];
            for j in 1..32 {
                let base = (k * 4 + j % 4) as f32 - 64.0;
                block.push(match j % 3 {
                    0 => base + 0.5,
                    1 => base - 0.5,
                    _ => base + 0.499_999_97,
                });
            }
            x.extend(block);
        }
        x.extend([0.0f32; 32]);
        let mut fast = vec![0u8; x.len() / 32 * 34];
        quantize_q8_0_into(&x, &mut fast);
        assert_eq!(
            fast,
            via_candle(candle_core::quantized::GgmlDType::Q8_0, &x)
        );
    }

    #[test]
    fn measured_quantization_matches_quantize_then_compare() {
        let x = sample(256 * 1100, 9);
        for d in [DType::Q8_0, DType::Q4K] {
            let (q, err) = quantize_measured(&x, d).unwrap();
            assert_eq!(q, quantize(&x, d).unwrap(), "{d}");
            let want = error_stats(&x, &dequantize(&q, d, x.len()).unwrap());
            assert!((err.rmse - want.rmse).abs() <= 1e-12 * want.rmse, "{d}");
            assert_eq!(err.max_abs, want.max_abs);
            assert!((err.cosine - want.cosine).abs() < 1e-12);
        }
        assert!(quantize_measured(&[f32::NAN; 32], DType::Q8_0).is_err());
    }

    #[test]
    fn round_trip_error_is_small() {
        let x = sample(256 * 16, 3);
        let std = (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        for (d, rel) in [
            (DType::Q8_0, 0.01),
            (DType::Q6K, 0.02),
            (DType::Q5_0, 0.05),
            (DType::Q4_0, 0.1),
            (DType::Q4K, 0.1),
            (DType::Q2K, 0.5),
        ] {
            let q = quantize(&x, d).unwrap();
            let back = dequantize(&q, d, x.len()).unwrap();
            let e = error_stats(&x, &back);
            assert!(e.rmse < rel * std, "{d}: rmse {} vs std {std}", e.rmse);
            assert!(e.cosine > 0.9, "{d}: {e:?}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(quantize(&[0.0; 31], DType::Q8_0).is_err());
        assert!(quantize(&[0.0; 32], DType::F16).is_err());
        let mut x = vec![1.0f32; 256];
        x[5] = f32::NAN;
        assert!(quantize(&x, DType::Q4K)
            .unwrap_err()
            .to_string()
            .contains("element 5"));
        assert!(quantize(&[], DType::Q8_0).unwrap().is_empty());
    }

    #[test]
    fn quantizable_shapes() {
        assert!(can_quantize(&[384, 1536], DType::Q8_0).is_ok());
        assert!(can_quantize(&[1536, 384], DType::Q4K)
            .unwrap_err()
            .contains("384"));
        assert!(can_quantize(&[384], DType::Q8_0)
            .unwrap_err()
            .contains("1-dimensional"));
        assert!(can_quantize(&[4, 0], DType::Q8_0).is_err());
        assert!(can_quantize(&[4, 32], DType::F16).is_err());
    }

    #[test]
    fn stats_of_identical_and_zero() {
        let e = error_stats(&[1.0, -2.0], &[1.0, -2.0]);
        assert_eq!((e.rmse, e.max_abs), (0.0, 0.0));
        assert!((e.cosine - 1.0).abs() < 1e-12);
        assert_eq!(error_stats(&[0.0; 4], &[0.0; 4]).cosine, 1.0);
    }
}
