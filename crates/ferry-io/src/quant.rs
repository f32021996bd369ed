//! GGML block quantization: float -> q4_0 ... q6_k and back. ferry has its own kernels,
//! bit-identical to candle's and vectorized, for q4_0, q5_0, q5_1, q8_0 and the k-quants (q2_k
//! to q6_k, q8_k: see [`k`]), which measure the error of each block in the same pass; q4_1 and
//! q8_1 use candle's kernels. Dequantization is candle's. [`weighted`] holds llama.cpp's
//! importance-weighted q4_0, q4_1, q5_0 and q5_1 (candle has none), byte-identical to it.

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
    let data = if (data.as_ptr() as usize).is_multiple_of(8) {
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
    if row == 0 || !row.is_multiple_of(block) {
        return Err(format!(
            "last dimension {row} is not a multiple of the {dtype} block size {block}"
        ));
    }
    Ok(())
}

/// llama.cpp's replacement for a k-quant whose 256-element super-blocks do not divide a
/// tensor's rows (`llama_tensor_get_type` in `src/llama-quant.cpp`): q4_k -> q5_0,
/// q5_k -> q5_1, q6_k -> q8_0; q2_k and q3_k go to iq4_nl there, a type candle lacks, so
/// ferry takes q4_0, the same 4.5 bits per weight. `None` for types without a fallback.
pub fn k_quant_fallback(dtype: DType) -> Option<DType> {
    match dtype {
        DType::Q2K | DType::Q3K => Some(DType::Q4_0),
        DType::Q4K => Some(DType::Q5_0),
        DType::Q5K => Some(DType::Q5_1),
        DType::Q6K => Some(DType::Q8_0),
        _ => None,
    }
}

/// gguf-py's `LlamaFileType` for a file whose weight matrices are mostly `dtype`
/// (`general.file_type`). A uniform k-quant is the `_S` ("small") variant.
pub fn gguf_file_type(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q5_0 => 8,
        DType::Q5_1 => 9,
        DType::Q2K => 10,
        DType::Q3K => 11,
        DType::Q4K => 14,
        DType::Q5K => 16,
        DType::Q6K => 18,
        DType::BF16 => 32,
        _ => return None,
    })
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
        .try_for_each(|(dst, src)| quantize_into(ggml, dtype, src, dst))?;
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

/// `x as i32` for `x` clamped to `[lo, hi]`, NaN giving 0: Rust's saturating float-to-int
/// cast on a range that fits, written so it vectorizes (LLVM scalarizes the saturating `as`
/// into a compare, a min, a max and a convert per element).
#[inline(always)]
fn clamped_int(x: f32, lo: f32, hi: f32) -> i32 {
    let x = if x.is_nan() { 0.0 } else { x.clamp(lo, hi) };
    // SAFETY: `x` is finite and within [lo, hi], which callers keep inside i32's range.
    unsafe { x.to_int_unchecked::<i32>() }
}

/// The largest magnitude in a block, in eight lanes so it vectorizes (a single running `max` is
/// an ordered reduction the compiler must keep scalar). The values are finite (checked before
/// quantizing), so the order of the comparisons does not change the result.
#[inline(always)]
fn block_amax(x: &[f32; 32]) -> f32 {
    let mut m = [0f32; 8];
    for (i, v) in x.iter().enumerate() {
        m[i % 8] = max_finite(m[i % 8], v.abs());
    }
    m.iter().fold(0f32, |a, &v| max_finite(a, v))
}

/// q8_0 exactly as candle's `BlockQ8_0::from_float` (llama.cpp's `quantize_row_q8_0_ref`)
/// computes it, written so the compiler vectorizes the rounding: about 3x faster. Blocks are 34
/// bytes: the f16 scale `amax / 127`, then 32 `i8` values `round(x / scale)`. With `MEASURE`,
/// the error of each block against its dequantized value (`q * scale`, as candle dequantizes
/// it) is added to the returned sums while the block is in registers.
#[inline(always)]
fn q8_0_kernel<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
    let mut sums = ErrorSums::default();
    for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
        let x: &[f32; 32] = x.try_into().expect("chunks_exact(32)");
        let amax = block_amax(x);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d16 = half::f16::from_f32(d);
        out[..2].copy_from_slice(&d16.to_bits().to_le_bytes());
        let mut q = [0i8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            // Truncating cast: `round_half_away` already moved the value past the boundary.
            *q = clamped_int(round_half_away(v * id), -128.0, 127.0) as i8;
        }
        for (o, &q) in out[2..].iter_mut().zip(&q) {
            *o = q as u8;
        }
        if MEASURE {
            let scale = d16.to_f32();
            let mut y = [0f32; 32];
            for (y, &q) in y.iter_mut().zip(&q) {
                *y = f32::from(q) * scale;
            }
            sums.add_block(x, &y);
        }
    }
    sums.n = src.len() / 32 * 32;
    sums
}

/// The signed value of largest magnitude in a block, the first one where several share it:
/// how llama.cpp's `quantize_row_q4_0_ref` picks the value that maps to -8. Written as two
/// vectorizable scans; the ordered search only runs when both `amax` and `-amax` occur.
#[inline(always)]
fn signed_max(x: &[f32; 32], amax: f32) -> f32 {
    if amax == 0.0 {
        return 0.0;
    }
    let pos = x.iter().fold(false, |a, &v| a | (v == amax));
    let neg = x.iter().fold(false, |a, &v| a | (v == -amax));
    match (pos, neg) {
        (true, false) => amax,
        (false, true) => -amax,
        _ => x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax),
    }
}

/// q4_0 exactly as candle's `BlockQ4_0::from_float` computes it, written in whole-block lanes
/// the compiler vectorizes. Blocks are 18 bytes: the f16 scale `max / -8`, then 16 bytes holding
/// `min(15, trunc(x / scale + 8.5))` for elements `j` (low nibble) and `j + 16` (high nibble).
/// With `MEASURE`, the error of each block against its dequantized value (`(q - 8) * scale`,
/// as candle dequantizes it) is added to the returned sums while the block is in registers.
#[inline(always)]
fn q4_0_kernel<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
    let mut sums = ErrorSums::default();
    for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(18)) {
        let x: &[f32; 32] = x.try_into().expect("chunks_exact(32)");
        let amax = block_amax(x);
        let d = signed_max(x, amax) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d16 = half::f16::from_f32(d);
        out[..2].copy_from_slice(&d16.to_bits().to_le_bytes());
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = clamped_int(v * id + 8.5, 0.0, 15.0) as u8;
        }
        for j in 0..16 {
            out[2 + j] = q[j] | (q[j + 16] << 4);
        }
        if MEASURE {
            let scale = d16.to_f32();
            let mut y = [0f32; 32];
            for (y, &q) in y.iter_mut().zip(&q) {
                *y = f32::from(q as i8 - 8) * scale;
            }
            sums.add_block(x, &y);
        }
    }
    sums.n = src.len() / 32 * 32;
    sums
}

/// The 5-bit levels `q` (in `0..=31`, as bytes) of a block of 32 packed as candle packs q5_0 and
/// q5_1: the low nibbles of elements `j` and `j + 16` in byte `j` of `qs`, the fifth bits in the
/// little-endian `u32` `qh` (bit `j` for element `j`).
#[inline(always)]
fn pack5(q: &[u8; 32], qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for (j, &v) in q.iter().enumerate() {
        h |= u32::from((v & 0x10) >> 4) << j;
    }
    qh.copy_from_slice(&h.to_le_bytes());
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
    }
}

/// q5_0 exactly as candle's `BlockQ5_0::from_float` computes it (llama.cpp's fallback for q4_k
/// where a row is no multiple of 256): 22-byte blocks of the f16 scale `max / -16` (`max` the
/// first value of largest magnitude), the fifth bits and the low nibbles of
/// `min(31, (x / scale + 16.5) as i8)`. With `MEASURE`, the error against the dequantized
/// `((q & 31) - 16) * scale` is added to the returned sums.
#[inline(always)]
fn q5_0_kernel<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
    let mut sums = ErrorSums::default();
    for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(22)) {
        let x: &[f32; 32] = x.try_into().expect("chunks_exact(32)");
        let amax = block_amax(x);
        let d = signed_max(x, amax) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d16 = half::f16::from_f32(d);
        out[..2].copy_from_slice(&d16.to_bits().to_le_bytes());
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            // `(v * id + 16.5) as i8` saturates (NaN -> 0), then `.min(31)`; a negative level
            // (an infinite `id`) wraps to its byte as candle's `as u8` does.
            *q = clamped_int(v * id + 16.5, -128.0, 31.0) as i8 as u8;
        }
        let (qh, qs) = out[2..].split_at_mut(4);
        pack5(&q, qh, qs);
        if MEASURE {
            let scale = d16.to_f32();
            let mut y = [0f32; 32];
            for (y, &q) in y.iter_mut().zip(&q) {
                *y = f32::from((q & 0x1F) as i8 - 16) * scale;
            }
            sums.add_block(x, &y);
        }
    }
    sums.n = src.len() / 32 * 32;
    sums
}

/// The smallest and largest value of a block exactly as candle's q4_1/q5_1 find them, with
/// `f32::min` / `f32::max` folded in element order from `+inf` / `-inf`. On finite values the
/// result is the minimum (maximum) whatever the order, except that which of -0.0 and +0.0 wins
/// is `f32::min`'s choice: so the block is scanned in eight vectorizable lanes, and only a
/// result of zero is recomputed in candle's order.
#[inline(always)]
fn block_min_max(x: &[f32; 32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    for (i, &v) in x.iter().enumerate() {
        lo[i % 8] = if v < lo[i % 8] { v } else { lo[i % 8] };
        hi[i % 8] = max_finite(hi[i % 8], v);
    }
    let mut min = lo
        .iter()
        .fold(f32::INFINITY, |a, &v| if v < a { v } else { a });
    let mut max = hi.iter().fold(f32::NEG_INFINITY, |a, &v| max_finite(a, v));
    if min == 0.0 {
        min = x.iter().fold(f32::INFINITY, |m, &v| f32::min(v, m));
    }
    if max == 0.0 {
        max = x.iter().fold(f32::NEG_INFINITY, |m, &v| f32::max(v, m));
    }
    (min, max)
}

/// q5_1 exactly as candle's `BlockQ5_1::from_float` computes it (llama.cpp's fallback for q5_k
/// where a row is no multiple of 256): 24-byte blocks of the f16 scale `(max - min) / 31`, the
/// f16 `min`, the fifth bits and the low nibbles of `((x - min) / scale + 0.5) as u8`. With
/// `MEASURE`, the error against the dequantized `(q & 31) * scale + min` is added.
#[inline(always)]
fn q5_1_kernel<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
    let mut sums = ErrorSums::default();
    for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(24)) {
        let x: &[f32; 32] = x.try_into().expect("chunks_exact(32)");
        let (min, max) = block_min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (d16, m16) = (half::f16::from_f32(d), half::f16::from_f32(min));
        out[..2].copy_from_slice(&d16.to_bits().to_le_bytes());
        out[2..4].copy_from_slice(&m16.to_bits().to_le_bytes());
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            // `((v - min) * id + 0.5) as u8`: saturating, NaN -> 0.
            *q = clamped_int((v - min) * id + 0.5, 0.0, 255.0) as u8;
        }
        let (qh, qs) = out[4..].split_at_mut(4);
        pack5(&q, qh, qs);
        if MEASURE {
            let (scale, m) = (d16.to_f32(), m16.to_f32());
            let mut y = [0f32; 32];
            for (y, &q) in y.iter_mut().zip(&q) {
                *y = f32::from(q & 0x1F) * scale + m;
            }
            sums.add_block(x, &y);
        }
    }
    sums.n = src.len() / 32 * 32;
    sums
}

/// Defines `$name`, which runs the `#[inline(always)]` kernel `$kernel` compiled for AVX2 when
/// the CPU has it (`ferry_kernels::cpu::features`; off under `FERRY_PORTABLE_KERNELS`) and for the x86-64 baseline (SSE2) otherwise. The
/// kernels use no fused multiply-add, so both builds give bit-identical results; AVX2 doubles
/// the vector width. Other architectures get the portable build.
macro_rules! dispatch_avx2 {
    ($(#[$doc:meta])* fn $name:ident / $avx2:ident => $kernel:ident) => {
        $(#[$doc])*
        fn $name<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
            #[cfg(target_arch = "x86_64")]
            if ferry_kernels::cpu::features().avx2 {
                // SAFETY: the CPU supports AVX2 (ferry_kernels::cpu::features, checked just above).
                return unsafe { $avx2::<MEASURE>(src, dst) };
            }
            $kernel::<MEASURE>(src, dst)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
            $kernel::<MEASURE>(src, dst)
        }
    };
}

dispatch_avx2!(
    /// q8_0 of whole blocks, measured with `MEASURE` (see [`q8_0_kernel`]).
    fn quantize_q8_0_into / q8_0_avx2 => q8_0_kernel
);
dispatch_avx2!(
    /// q4_0 of whole blocks, measured with `MEASURE` (see [`q4_0_kernel`]).
    fn quantize_q4_0_into / q4_0_avx2 => q4_0_kernel
);
dispatch_avx2!(
    /// q5_0 of whole blocks, measured with `MEASURE` (see [`q5_0_kernel`]).
    fn quantize_q5_0_into / q5_0_avx2 => q5_0_kernel
);
dispatch_avx2!(
    /// q5_1 of whole blocks, measured with `MEASURE` (see [`q5_1_kernel`]).
    fn quantize_q5_1_into / q5_1_avx2 => q5_1_kernel
);

mod k;
mod lanes;
pub mod weighted;

/// A kernel of ferry's own: quantizes whole blocks of `src` into `dst` (exactly their size)
/// and returns the error sums (empty unless it measures).
type Kernel = fn(&[f32], &mut [u8]) -> ErrorSums;

/// ferry's own kernels for `dtype`, plain and measuring; `None` where candle's are used.
fn own_kernels(dtype: DType) -> Option<(Kernel, Kernel)> {
    Some(match dtype {
        DType::Q8_0 => (quantize_q8_0_into::<false>, quantize_q8_0_into::<true>),
        DType::Q4_0 => (quantize_q4_0_into::<false>, quantize_q4_0_into::<true>),
        DType::Q5_0 => (quantize_q5_0_into::<false>, quantize_q5_0_into::<true>),
        DType::Q5_1 => (quantize_q5_1_into::<false>, quantize_q5_1_into::<true>),
        DType::Q2K => (k::q2_k::<false>, k::q2_k::<true>),
        DType::Q3K => (k::q3_k::<false>, k::q3_k::<true>),
        DType::Q4K => (k::q4_k::<false>, k::q4_k::<true>),
        DType::Q5K => (k::q5_k::<false>, k::q5_k::<true>),
        DType::Q6K => (k::q6_k::<false>, k::q6_k::<true>),
        DType::Q8K => (k::q8_k::<false>, k::q8_k::<true>),
        _ => return None,
    })
}

/// The candle type for `dtype`, after checking that `data` fills whole blocks of finite values
/// (candle's K-quant kernels index with unchecked pointer arithmetic on non-finite input).
fn check_input(data: &[f32], dtype: DType) -> Result<candle_core::quantized::GgmlDType> {
    let ggml = dtype
        .to_ggml()
        .filter(|_| dtype.is_quantized())
        .ok_or_else(|| Error::Invalid(format!("{dtype} is not a GGML quantized type")))?;
    let block = dtype.block_elems();
    if !data.len().is_multiple_of(block) {
        return Err(Error::Invalid(format!(
            "{} values do not fill whole {dtype} blocks of {block}",
            data.len()
        )));
    }
    // Whole chunks are checked with a vectorizable fold; only a failing chunk is searched.
    let bad_chunk = data
        .chunks(4096)
        .position(|c| !c.iter().fold(true, |ok, v| ok & v.is_finite()));
    if let Some(i) = bad_chunk.and_then(|c| {
        let start = c * 4096;
        data[start..]
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| start + i)
    }) {
        return Err(Error::Invalid(format!(
            "value {} at element {i} is not finite; {dtype} cannot encode it",
            data[i]
        )));
    }
    Ok(ggml)
}

/// Quantizes like [`quantize`] and measures the error in the same parallel pass: ferry's own
/// kernels (q4_0, q5_0, q5_1, q8_0, the k-quants) measure each block against its dequantized value as it is
/// made; the other types dequantize the blocks a task has just written while they are still in
/// cache. The result does not depend on the number of threads.
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
        .map(|(dst, src)| match own_kernels(dtype) {
            Some((_, measured)) => Ok(measured(src, dst)),
            None => {
                quantize_into(ggml, dtype, src, dst)?;
                let back = dequantize(dst, dtype, src.len())?;
                Ok(ErrorSums::of(src, &back))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let total = sums
        .into_iter()
        .fold(ErrorSums::default(), ErrorSums::merge);
    Ok((out, total.finish()))
}

/// Quantizes whole blocks `src` of `dtype` (candle's `ggml`) into `dst`, exactly their size:
/// with ferry's own kernel where there is one, else with candle's.
fn quantize_into(
    ggml: candle_core::quantized::GgmlDType,
    dtype: DType,
    src: &[f32],
    dst: &mut [u8],
) -> Result<()> {
    let block = dtype.block_elems();
    if let Some((plain, _)) = own_kernels(dtype) {
        if dst.len() != src.len() / block * dtype.block_bytes() {
            return Err(Error::Invalid(format!(
                "{} bytes cannot hold {} {dtype} values",
                dst.len(),
                src.len()
            )));
        }
        plain(src, dst);
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

/// Running sums behind a [`QuantError`], computed per chunk and merged. Each block's eight f32
/// lanes (element `i` in lane `i % 8`) are added into eight f64 lanes, so the arithmetic stays
/// in vector registers and precision is that of f64 over blocks; the lanes are summed at the end.
#[derive(Debug, Default, Clone, Copy)]
struct ErrorSums {
    sq: [f64; 8],
    dot: [f64; 8],
    na: [f64; 8],
    nb: [f64; 8],
    max_abs: [f32; 8],
    n: usize,
}

/// `a.max(b)` for values known not to be NaN: a plain compare and select, which vectorizes
/// without the NaN handling `f32::max` needs.
#[inline(always)]
fn max_finite(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

impl ErrorSums {
    fn of(original: &[f32], dequantized: &[f32]) -> Self {
        let mut s = ErrorSums::default();
        for (a, b) in original.chunks(32).zip(dequantized.chunks(32)) {
            match (<&[f32; 32]>::try_from(a), <&[f32; 32]>::try_from(b)) {
                (Ok(a), Ok(b)) => s.add_block(a, b),
                _ => {
                    let (mut a32, mut b32) = ([0f32; 32], [0f32; 32]);
                    let k = a.len().min(b.len());
                    a32[..k].copy_from_slice(&a[..k]);
                    b32[..k].copy_from_slice(&b[..k]);
                    s.add_block(&a32, &b32);
                }
            }
        }
        s.n = original.len().min(dequantized.len());
        s
    }

    /// Adds one block of 32 elements (all but `n`, which the caller sets; a short block is
    /// padded with zeros, which add nothing). Written as four rows of eight lanes that the
    /// compiler turns into vector operations.
    #[inline(always)]
    fn add_block(&mut self, a: &[f32; 32], b: &[f32; 32]) {
        let (mut sq, mut dot, mut na, mut nb) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
        for row in 0..4 {
            for l in 0..8 {
                let (x, y) = (a[row * 8 + l], b[row * 8 + l]);
                let d = x - y;
                sq[l] += d * d;
                dot[l] += x * y;
                na[l] += x * x;
                nb[l] += y * y;
                self.max_abs[l] = max_finite(self.max_abs[l], d.abs());
            }
        }
        for l in 0..8 {
            self.sq[l] += f64::from(sq[l]);
            self.dot[l] += f64::from(dot[l]);
            self.na[l] += f64::from(na[l]);
            self.nb[l] += f64::from(nb[l]);
        }
    }

    fn merge(mut self, o: Self) -> Self {
        for l in 0..8 {
            self.sq[l] += o.sq[l];
            self.dot[l] += o.dot[l];
            self.na[l] += o.na[l];
            self.nb[l] += o.nb[l];
            self.max_abs[l] = max_finite(self.max_abs[l], o.max_abs[l]);
        }
        self.n += o.n;
        self
    }

    fn finish(self) -> QuantError {
        let total = |v: [f64; 8]| v.iter().sum::<f64>();
        let (sq, dot, na, nb) = (
            total(self.sq),
            total(self.dot),
            total(self.na),
            total(self.nb),
        );
        let rmse = if self.n == 0 {
            0.0
        } else {
            (sq / self.n as f64).sqrt()
        };
        let cosine = if na == 0.0 && nb == 0.0 {
            1.0
        } else if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na.sqrt() * nb.sqrt())
        };
        QuantError {
            rmse,
            max_abs: f64::from(self.max_abs.iter().fold(0f32, |m, &v| max_finite(m, v))),
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
        let want = via_candle(candle_core::quantized::GgmlDType::Q8_0, &x);
        let mut fast = vec![0u8; x.len() / 32 * 34];
        quantize_q8_0_into::<false>(&x, &mut fast);
        assert_eq!(fast, want, "dispatched build");
        q8_0_kernel::<false>(&x, &mut fast);
        assert_eq!(fast, want, "baseline build");
    }

    #[test]
    fn fast_q4_0_is_bit_identical_to_candle() {
        let mut x: Vec<f32> = [1e-6f32, 1.0, 300.0]
            .iter()
            .flat_map(|&scale| sample(32 * 64, 13).into_iter().map(move |v| v * scale))
            .collect();
        // Blocks where the largest magnitude occurs with both signs (the first one decides the
        // sign of the scale), a block of signed zeros, and values on the x / scale + 8.5
        // truncation boundaries.
        for first in [8.0f32, -8.0] {
            let mut block: Vec<f32> = (0..32).map(|j| (j % 17) as f32 * 0.5 - 4.0).collect();
            block[3] = first;
            block[20] = -first;
            x.extend(block);
        }
        x.extend([-0.0f32; 32]);
        x.extend([0.0f32; 32]);
        x.extend((0..32).map(|j| if j == 0 { -8.0 } else { (j % 16) as f32 - 7.5 }));
        let want = via_candle(candle_core::quantized::GgmlDType::Q4_0, &x);
        let mut fast = vec![0u8; x.len() / 32 * 18];
        quantize_q4_0_into::<false>(&x, &mut fast);
        assert_eq!(fast, want, "dispatched build");
        q4_0_kernel::<false>(&x, &mut fast);
        assert_eq!(fast, want, "baseline build");
    }

    /// Super-blocks of 256 values that stress the k-quant fits: zeros of either sign,
    /// constants, one outlier, huge and tiny magnitudes, subnormals, exact ties, sub-blocks of
    /// zeros next to live ones, and values whose squares overflow f32.
    fn hostile_rows() -> Vec<f32> {
        let mut rows: Vec<Vec<f32>> = vec![
            vec![0.0; 256],
            vec![-0.0; 256],
            (0..256)
                .map(|i| if i % 3 == 0 { -0.0 } else { 0.0 })
                .collect(),
            vec![1.0; 256],
            vec![-3.5; 256],
            vec![1e-30; 256],
            vec![f32::MIN_POSITIVE / 8.0; 256],
            (0..256)
                .map(|i| if i == 77 { 1000.0 } else { 0.001 })
                .collect(),
            (0..256)
                .map(|i| if i == 200 { -1e6 } else { 1.0 })
                .collect(),
            (0..256).map(|i| (i as f32 - 128.0) * 0.5).collect(),
            (0..256).map(|i| (i % 16) as f32 - 8.0).collect(),
            (0..256).map(|i| (i % 4) as f32 * 0.25).collect(),
            (0..256).map(|i| if i < 128 { 0.0 } else { 1.5 }).collect(),
            (0..256)
                .map(|i| if (i / 16) % 2 == 0 { 0.0 } else { -2.0 })
                .collect(),
            (0..256)
                .map(|i| if (i / 32) % 2 == 0 { 0.0 } else { i as f32 })
                .collect(),
            (0..256)
                .map(|i| if i % 2 == 0 { 1e30 } else { -1e30 })
                .collect(),
            (0..256).map(|i| (i as f32).sin() * 3e38).collect(),
            (0..256).map(|i| (i as f32).cos() * 1e-40).collect(),
            (0..256)
                .map(|i| if i % 17 == 0 { 5.0 } else { -5.0 })
                .collect(),
            (0..256).map(|i| -((i % 7) as f32)).collect(),
            (0..256).map(|i| (i % 7) as f32).collect(),
        ];
        rows.push(sample(256, 21).iter().map(|v| v * 1e-20).collect());
        rows.push(sample(256, 22).iter().map(|v| v.abs()).collect());
        rows.push(sample(256, 23).iter().map(|v| -v.abs()).collect());
        rows.concat()
    }

    /// q5_0 and q5_1 (llama.cpp's fallbacks for q4_k and q5_k) against candle's, byte for
    /// byte, in the dispatched and the baseline builds: random blocks at several scales, the
    /// hostile rows, blocks of signed zeros next to each other, and values on the rounding
    /// boundaries of both.
    #[test]
    fn fast_q5_0_and_q5_1_are_bit_identical_to_candle() {
        use candle_core::quantized::GgmlDType as G;
        let mut x = hostile_rows();
        for (seed, scale) in [(51u64, 1.0f32), (52, 1e-4), (53, 3e3), (54, 1e-39)] {
            x.extend(sample(32 * 256, seed).into_iter().map(|v| v * scale));
        }
        // Ties: max -16 gives scale 1 for q5_0, levels k - 16 +- 0.5; 0..31 gives q5_1 scale 1.
        x.extend((0..32).map(|j| {
            if j == 0 {
                -16.0
            } else {
                (j % 32) as f32 * 0.5 - 8.0
            }
        }));
        x.extend((0..32).map(|j| if j == 0 { 31.0 } else { j as f32 - 0.5 }));
        x.extend((0..32).map(|j| if j % 2 == 0 { -0.0 } else { 0.0 }));
        x.extend((0..32).map(|j| if j % 2 == 0 { 0.0 } else { -0.0 }));
        type Q5 = (
            G,
            usize,
            fn(&[f32], &mut [u8]) -> ErrorSums,
            fn(&[f32], &mut [u8]) -> ErrorSums,
        );
        let kernels: [Q5; 2] = [
            (
                G::Q5_0,
                22,
                quantize_q5_0_into::<false>,
                q5_0_kernel::<false>,
            ),
            (
                G::Q5_1,
                24,
                quantize_q5_1_into::<false>,
                q5_1_kernel::<false>,
            ),
        ];
        for (g, bb, dispatched, baseline) in kernels {
            let want = via_candle(g, &x);
            let mut fast = vec![0u8; x.len() / 32 * bb];
            dispatched(&x, &mut fast);
            let bad = blocks_differing(&fast, &want, bb);
            assert!(
                bad.is_empty(),
                "{g:?}, dispatched build: blocks {bad:?} differ"
            );
            baseline(&x, &mut fast);
            let bad = blocks_differing(&fast, &want, bb);
            assert!(
                bad.is_empty(),
                "{g:?}, baseline build: blocks {bad:?} differ"
            );
        }
    }

    /// The k-quant kernels: `(type, candle's type, portable build, portable build measuring)`.
    type KKernel = (
        DType,
        candle_core::quantized::GgmlDType,
        fn(&[f32], &mut [u8]) -> ErrorSums,
        fn(&[f32], &mut [u8]) -> ErrorSums,
    );

    fn k_kernels() -> [KKernel; 6] {
        use candle_core::quantized::GgmlDType as G;
        [
            (
                DType::Q2K,
                G::Q2K,
                k::q2_k_portable::<false>,
                k::q2_k_portable::<true>,
            ),
            (
                DType::Q3K,
                G::Q3K,
                k::q3_k_portable::<false>,
                k::q3_k_portable::<true>,
            ),
            (
                DType::Q4K,
                G::Q4K,
                k::q4_k_portable::<false>,
                k::q4_k_portable::<true>,
            ),
            (
                DType::Q5K,
                G::Q5K,
                k::q5_k_portable::<false>,
                k::q5_k_portable::<true>,
            ),
            (
                DType::Q6K,
                G::Q6K,
                k::q6_k_portable::<false>,
                k::q6_k_portable::<true>,
            ),
            (
                DType::Q8K,
                G::Q8K,
                k::q8_k_portable::<false>,
                k::q8_k_portable::<true>,
            ),
        ]
    }

    /// Indices of the `bb`-byte blocks where `got` and `want` differ.
    fn blocks_differing(got: &[u8], want: &[u8], bb: usize) -> Vec<usize> {
        assert_eq!(got.len(), want.len());
        (0..want.len() / bb)
            .filter(|&b| got[b * bb..(b + 1) * bb] != want[b * bb..(b + 1) * bb])
            .collect()
    }

    /// ferry's k-quant kernels against candle's `from_float`, byte for byte: the build picked
    /// at run time (AVX2 here), the portable build, and every chunking (the q4_k, q5_k pairs
    /// of super-blocks padded at an odd end), on hostile rows and on random rows of several
    /// seeds, scales and shapes (roughly normal, heavy-tailed, sparse, all one sign).
    #[test]
    fn fast_k_quants_are_bit_identical_to_candle() {
        let mut x = hostile_rows();
        for seed in 0..6u64 {
            let scale = [1.0f32, 1e-3, 250.0, 0.02, 3e-8, 7e4][seed as usize];
            let v = sample(256 * 64, 40 + seed);
            x.extend(v.iter().map(|v| v * scale));
            x.extend(v.iter().map(|v| v * v * v * scale));
            x.extend(
                v.iter()
                    .map(|v| if v.abs() < 0.8 { 0.0 } else { v * scale }),
            );
            x.extend(v.iter().map(|v| (v.abs() + 0.01) * scale));
        }
        // An odd number of super-blocks, so the last pair is padded.
        x.extend(sample(256, 99));
        assert_eq!(x.len() / 256 % 2, 1);
        for (d, g, portable, _) in k_kernels() {
            let want = via_candle(g, &x);
            let bb = d.block_bytes();
            let bad = blocks_differing(&quantize(&x, d).unwrap(), &want, bb);
            assert!(bad.is_empty(), "{d}: blocks {bad:?} differ from candle");
            let mut base = vec![0u8; want.len()];
            portable(&x, &mut base);
            let bad = blocks_differing(&base, &want, bb);
            assert!(bad.is_empty(), "{d}, portable build: blocks {bad:?} differ");
            for per_task in [1, 3] {
                let got = quantize_chunked(&x, d, per_task).unwrap();
                assert!(got == want, "{d} in tasks of {per_task} blocks");
            }
        }
    }

    /// The f32 sum candle's `make_qkx1_quants` takes with `Iterator::sum` starts from -0.0,
    /// which `k::qkx1` copies; a change in Rust's library would show here first.
    #[test]
    fn float_sum_starts_from_negative_zero() {
        let empty: f32 = std::iter::empty::<f32>().sum();
        assert_eq!(empty.to_bits(), (-0.0f32).to_bits());
    }

    /// The error statistics measured in the quantizing pass equal those of a separate
    /// dequantization (candle's) and comparison, summed in the same order (per task of
    /// [`BLOCKS_PER_TASK`] blocks, tasks merged in order), bit for bit; and they are within
    /// rounding of [`error_stats`] over the whole tensor at once.
    #[test]
    fn measured_quantization_matches_quantize_then_compare() {
        let mut x = sample(256 * 1101, 9);
        // Without values whose f16 scales overflow (NaN statistics compare unequal).
        x.extend(hostile_rows().iter().filter(|v| v.abs() < 1e4));
        x.truncate(x.len() / 256 * 256);
        let dequantized_stats = |q: &[u8], d: DType| {
            let back = dequantize(q, d, x.len()).unwrap();
            let task = BLOCKS_PER_TASK * d.block_elems();
            x.chunks(task)
                .zip(back.chunks(task))
                .map(|(a, b)| ErrorSums::of(a, b))
                .fold(ErrorSums::default(), ErrorSums::merge)
                .finish()
        };
        for d in [DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q5_1]
            .into_iter()
            .chain(k_kernels().map(|k| k.0))
        {
            let (q, err) = quantize_measured(&x, d).unwrap();
            assert_eq!(q, quantize(&x, d).unwrap(), "{d}");
            assert_eq!(err, dequantized_stats(&q, d), "{d}");
            let whole = error_stats(&x, &dequantize(&q, d, x.len()).unwrap());
            assert!((err.rmse - whole.rmse).abs() <= 1e-12 * whole.rmse, "{d}");
            assert!((err.cosine - whole.cosine).abs() <= 1e-12, "{d}");
            assert_eq!(err.max_abs, whole.max_abs, "{d}");
        }
        // The portable builds, in one task.
        for (d, _, _, measured) in k_kernels() {
            let mut q = vec![0u8; x.len() / 256 * d.block_bytes()];
            let err = measured(&x, &mut q).finish();
            assert_eq!(q, quantize(&x, d).unwrap(), "{d}, portable build");
            let want = error_stats(&x, &dequantize(&q, d, x.len()).unwrap());
            assert_eq!(err, want, "{d}, portable build");
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
