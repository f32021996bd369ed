//! Activations quantized to 8 bits per call, as llama.cpp's CPU dot products take them:
//! `q8_0`/`q8_1` blocks of 32 for the classic GGML types, `q8_K` blocks of 256 for the
//! k-quants; vectorized on CPUs with AVX-512 or AVX2 (tested equal to the scalar form).

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

/// How activations are quantized for a weight type, as llama.cpp's CPU dot products take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActQuant {
    /// `q8_0`/`q8_1` (for q4_0, q4_1, q5_0, q5_1, q8_0): per block of 32, `d = max|x| / 127`,
    /// `q = round(x * (1 / d))`, `d` (and `d * sum(q)`) kept in f16.
    Q8_0,
    /// `q8_K` (for the k-quants): per block of 256, `iscale = -127 / x_maxabs` (the signed value
    /// of largest magnitude), `q = min(127, round_even(iscale * x))`, `d = 1 / iscale` in f32.
    Q8K,
}

impl ActQuant {
    /// What llama.cpp's dot product for weights of `dtype` quantizes activations to.
    pub fn for_weights(dtype: GgmlDType) -> ActQuant {
        match dtype {
            GgmlDType::Q4K | GgmlDType::Q5K => ActQuant::Q8K,
            _ => ActQuant::Q8_0,
        }
    }
}

/// Quantized activations: `q + 128` with, per block of 32, the scale `d` and `d * sum(q)`.
pub struct QuantizedRows {
    /// `q + 128`, row-major `m x k`.
    pub(crate) q: Vec<u8>,
    /// `d` per row and block of 32.
    pub(crate) d: Vec<f32>,
    /// `d * sum(q)` per row and block of 32.
    pub(crate) dsum: Vec<f32>,
}

/// Quantizes the `m x k` row-major `x` (k a multiple of 32, of 256 for [`ActQuant::Q8K`]).
pub fn quantize_rows(x: &[f32], m: usize, k: usize, how: ActQuant) -> QuantizedRows {
    let nb = k / 32;
    let mut out = QuantizedRows {
        q: vec![0; m * k],
        d: vec![0.0; m * nb],
        dsum: vec![0.0; m * nb],
    };
    out.q
        .par_chunks_mut(k)
        .zip(out.d.par_chunks_mut(nb))
        .zip(out.dsum.par_chunks_mut(nb))
        .zip(x.par_chunks(k))
        .for_each(|(((q, d), dsum), x)| {
            #[cfg(target_arch = "x86_64")]
            if super::vnni() {
                // SAFETY: the CPU has AVX-512F and BW (checked); the slices have the lengths
                // the row functions expect (k, k / 32, k / 32).
                unsafe {
                    match how {
                        ActQuant::Q8_0 => avx512::q8_0_row(x, q, d, dsum),
                        ActQuant::Q8K => avx512::q8k_row(x, q, d, dsum),
                    }
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::features().avx2 {
                // SAFETY: the CPU has AVX2 (checked); lengths as above.
                unsafe {
                    match how {
                        ActQuant::Q8_0 => avx2::q8_0_row(x, q, d, dsum),
                        ActQuant::Q8K => avx2::q8k_row(x, q, d, dsum),
                    }
                }
                return;
            }
            match how {
                ActQuant::Q8_0 => q8_0_row(x, q, d, dsum),
                ActQuant::Q8K => q8k_row(x, q, d, dsum),
            }
        });
    out
}

/// [`quantize_rows`] without the vector code (for tests).
pub fn quantize_rows_scalar(x: &[f32], m: usize, k: usize, how: ActQuant) -> QuantizedRows {
    let nb = k / 32;
    let mut out = QuantizedRows {
        q: vec![0; m * k],
        d: vec![0.0; m * nb],
        dsum: vec![0.0; m * nb],
    };
    for r in 0..m {
        let (q, d, dsum) = (
            &mut out.q[r * k..(r + 1) * k],
            &mut out.d[r * nb..(r + 1) * nb],
            &mut out.dsum[r * nb..(r + 1) * nb],
        );
        match how {
            ActQuant::Q8_0 => q8_0_row(&x[r * k..(r + 1) * k], q, d, dsum),
            ActQuant::Q8K => q8k_row(&x[r * k..(r + 1) * k], q, d, dsum),
        }
    }
    out
}

/// One row, `q8_0`: the scalar form [`avx512::q8_0_row`] is tested against.
fn q8_0_row(x: &[f32], q: &mut [u8], d: &mut [f32], dsum: &mut [f32]) {
    for b in 0..d.len() {
        let xs = &x[b * 32..(b + 1) * 32];
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (dst, &v) in q[b * 32..(b + 1) * 32].iter_mut().zip(xs) {
            // Nearest, ties to even: llama.cpp's x86 path (`_mm256_round_ps`); its scalar
            // reference rounds ties away from zero.
            let qi = (v * inv).round_ties_even() as i32;
            sum += qi;
            *dst = (qi + 128) as u8;
        }
        // ggml keeps both in f16 (`block_q8_0.d`, `block_q8_1.s`).
        d[b] = half::f16::from_f32(scale).to_f32();
        dsum[b] = half::f16::from_f32(scale * sum as f32).to_f32();
    }
}

/// One row, `q8_K`: the scalar form [`avx512::q8k_row`] is tested against.
fn q8k_row(x: &[f32], q: &mut [u8], d: &mut [f32], dsum: &mut [f32]) {
    for sb in 0..x.len() / 256 {
        let xs = &x[sb * 256..(sb + 1) * 256];
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let qs = &mut q[sb * 256..(sb + 1) * 256];
        if amax == 0.0 {
            qs.fill(128);
            d[sb * 8..(sb + 1) * 8].fill(0.0);
            dsum[sb * 8..(sb + 1) * 8].fill(0.0);
            continue;
        }
        let iscale = -127.0 / max;
        let scale = 1.0 / iscale;
        for j in 0..8 {
            let mut sum = 0i32;
            for (dst, &v) in qs[j * 32..(j + 1) * 32]
                .iter_mut()
                .zip(&xs[j * 32..(j + 1) * 32])
            {
                let qi = ((iscale * v).round_ties_even() as i32).min(127);
                sum += qi;
                *dst = (qi + 128) as u8;
            }
            d[sb * 8 + j] = scale;
            dsum[sb * 8 + j] = scale * sum as f32;
        }
    }
}

/// The vector forms' q8_K scales of super-block `sb` (`xs`, largest magnitude `amax`):
/// `(iscale, scale)` from the first value of that magnitude, with its sign (llama.cpp's
/// `-127 / max`), or `None` for an all-zero super-block, after writing its bytes (128: q = 0)
/// and scales (0). The scalar form finds them on its own, as the reference they are tested
/// against.
#[cfg(target_arch = "x86_64")]
fn q8k_scales(
    xs: &[f32],
    amax: f32,
    sb: usize,
    q: &mut [u8],
    d: &mut [f32],
    dsum: &mut [f32],
) -> Option<(f32, f32)> {
    if amax == 0.0 {
        q[sb * 256..(sb + 1) * 256].fill(128);
        d[sb * 8..(sb + 1) * 8].fill(0.0);
        dsum[sb * 8..(sb + 1) * 8].fill(0.0);
        return None;
    }
    let max = xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    Some((iscale, 1.0 / iscale))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Stores `q + 128` of 16 lanes (each in -127..=127) as 16 bytes at `dst`.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn store_u8(dst: *mut u8, q: __m512i) {
        // SAFETY: the caller gives 16 writable bytes at `dst`.
        unsafe {
            let u = _mm512_add_epi32(q, _mm512_set1_epi32(128));
            _mm_storeu_si128(dst as *mut __m128i, _mm512_cvtepi32_epi8(u));
        }
    }

    /// As [`super::q8_0_row`], 32 values at a time.
    ///
    /// # Safety
    /// AVX-512F and BW; `x.len() == q.len() == 32 * d.len() == 32 * dsum.len()`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn q8_0_row(x: &[f32], q: &mut [u8], d: &mut [f32], dsum: &mut [f32]) {
        for b in 0..d.len() {
            // SAFETY: block b's 32 values and bytes are inside `x` and `q` (lengths above).
            unsafe {
                let (xa, xb) = (x.as_ptr().add(b * 32), q.as_mut_ptr().add(b * 32));
                let (va, vb) = (_mm512_loadu_ps(xa), _mm512_loadu_ps(xa.add(16)));
                let amax =
                    _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(va), _mm512_abs_ps(vb)));
                let scale = amax / 127.0;
                let inv = _mm512_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
                // Round to nearest even (the default rounding mode).
                let qa = _mm512_cvtps_epi32(_mm512_mul_ps(va, inv));
                let qb = _mm512_cvtps_epi32(_mm512_mul_ps(vb, inv));
                let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
                store_u8(xb, qa);
                store_u8(xb.add(16), qb);
                d[b] = half::f16::from_f32(scale).to_f32();
                dsum[b] = half::f16::from_f32(scale * sum as f32).to_f32();
            }
        }
    }

    /// As [`super::q8k_row`], 16 values at a time.
    ///
    /// # Safety
    /// AVX-512F and BW; `x.len() == q.len() == 32 * d.len() == 32 * dsum.len()`, a multiple
    /// of 256.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn q8k_row(x: &[f32], q: &mut [u8], d: &mut [f32], dsum: &mut [f32]) {
        for sb in 0..x.len() / 256 {
            let xs = &x[sb * 256..(sb + 1) * 256];
            // SAFETY: the 256 values of the super-block and its 256 bytes (lengths above).
            unsafe {
                let mut m = _mm512_setzero_ps();
                for c in 0..16 {
                    m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xs.as_ptr().add(16 * c))));
                }
                let amax = _mm512_reduce_max_ps(m);
                let Some((iscale, scale)) = super::q8k_scales(xs, amax, sb, q, d, dsum) else {
                    continue;
                };
                let qs = q.as_mut_ptr().add(sb * 256);
                let vi = _mm512_set1_ps(iscale);
                let cap = _mm512_set1_epi32(127);
                for j in 0..8 {
                    let p = xs.as_ptr().add(32 * j);
                    let qa = _mm512_min_epi32(
                        _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p), vi)),
                        cap,
                    );
                    let qb = _mm512_min_epi32(
                        _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p.add(16)), vi)),
                        cap,
                    );
                    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
                    store_u8(qs.add(32 * j), qa);
                    store_u8(qs.add(32 * j + 16), qb);
                    d[sb * 8 + j] = scale;
                    dsum[sb * 8 + j] = scale * sum as f32;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// The largest lane of `v`.
    #[target_feature(enable = "avx2")]
    fn reduce_max(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// The sum of the eight lanes of `v`.
    #[target_feature(enable = "avx2")]
    fn reduce_add(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// `|v|` per lane.
    #[target_feature(enable = "avx2")]
    fn abs(v: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
    }

    /// Stores `q + 128` of four vectors of eight lanes as 32 bytes at `dst`, in lane order,
    /// each the low byte of its 32-bit lane (as the AVX-512 build's truncating store, so a
    /// lane out of range, from a NaN, is stored as it is there).
    #[target_feature(enable = "avx2")]
    unsafe fn store_u8(dst: *mut u8, q: [__m256i; 4]) {
        let low = |v: __m256i| {
            _mm256_and_si256(
                _mm256_add_epi32(v, _mm256_set1_epi32(128)),
                _mm256_set1_epi32(0xFF),
            )
        };
        // Every lane in 0..=255, so the saturating packs keep it; they work within 128-bit
        // halves, and the permutation puts the dwords back in order.
        let ab = _mm256_packus_epi32(low(q[0]), low(q[1]));
        let cd = _mm256_packus_epi32(low(q[2]), low(q[3]));
        let bytes = _mm256_packus_epi16(ab, cd);
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: the caller gives 32 writable bytes at `dst`.
        unsafe { _mm256_storeu_si256(dst as *mut __m256i, bytes) };
    }

    /// As [`super::q8_0_row`], 32 values at a time.
    ///
    /// # Safety
    /// AVX2; `x.len() == q.len() == 32 * d.len() == 32 * dsum.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q8_0_row(x: &[f32], q: &mut [u8], d: &mut [f32], dsum: &mut [f32]) {
        for b in 0..d.len() {
            // SAFETY: block b's 32 values and bytes are inside `x` and `q` (lengths above).
            unsafe {
                let xa = x.as_ptr().add(b * 32);
                let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xa.add(8 * i)));
                let m = _mm256_max_ps(
                    _mm256_max_ps(abs(v[0]), abs(v[1])),
                    _mm256_max_ps(abs(v[2]), abs(v[3])),
                );
                let scale = reduce_max(m) / 127.0;
                let inv = _mm256_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
                // Round to nearest even (the default rounding mode).
                let qi: [__m256i; 4] =
                    std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv)));
                let sum = reduce_add(_mm256_add_epi32(
                    _mm256_add_epi32(qi[0], qi[1]),
                    _mm256_add_epi32(qi[2], qi[3]),
                ));
                store_u8(q.as_mut_ptr().add(b * 32), qi);
                d[b] = half::f16::from_f32(scale).to_f32();
                dsum[b] = half::f16::from_f32(scale * sum as f32).to_f32();
            }
        }
    }

    /// As [`super::q8k_row`], 32 values at a time.
    ///
    /// # Safety
    /// AVX2; `x.len() == q.len() == 32 * d.len() == 32 * dsum.len()`, a multiple of 256.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn q8k_row(x: &[f32], q: &mut [u8], d: &mut [f32], dsum: &mut [f32]) {
        for sb in 0..x.len() / 256 {
            let xs = &x[sb * 256..(sb + 1) * 256];
            // SAFETY: the 256 values of the super-block and its 256 bytes (lengths above).
            unsafe {
                let mut m = _mm256_setzero_ps();
                for c in 0..32 {
                    m = _mm256_max_ps(m, abs(_mm256_loadu_ps(xs.as_ptr().add(8 * c))));
                }
                let amax = reduce_max(m);
                let Some((iscale, scale)) = super::q8k_scales(xs, amax, sb, q, d, dsum) else {
                    continue;
                };
                let qs = q.as_mut_ptr().add(sb * 256);
                let vi = _mm256_set1_ps(iscale);
                let cap = _mm256_set1_epi32(127);
                for j in 0..8 {
                    let p = xs.as_ptr().add(32 * j);
                    let qi: [__m256i; 4] = std::array::from_fn(|i| {
                        _mm256_min_epi32(
                            _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(8 * i)), vi)),
                            cap,
                        )
                    });
                    let sum = reduce_add(_mm256_add_epi32(
                        _mm256_add_epi32(qi[0], qi[1]),
                        _mm256_add_epi32(qi[2], qi[3]),
                    ));
                    store_u8(qs.add(32 * j), qi);
                    d[sb * 8 + j] = scale;
                    dsum[sb * 8 + j] = scale * sum as f32;
                }
            }
        }
    }
}
