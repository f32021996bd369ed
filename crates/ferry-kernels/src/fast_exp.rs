//! `exp` for f32 without a libm call, so loops over it vectorize: range reduction to
//! 2^n * e^f with |f| <= ln2/2 (Cody-Waite) and a degree-7 Taylor polynomial (relative error below 1e-7,
//! about one f32 ulp). Inputs below -87 give 0 as far as softmax is concerned (~1e-38).

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody-Waite) so `x - n ln2` stays exact for large `n`.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer (no SSE4.1 needed).
const ROUND: f32 = 12_582_912.0;

/// `a * b + c`, fused when `FMA` (only where the caller is compiled with the `fma` target
/// feature: elsewhere `mul_add` is a library call) and as two operations otherwise.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^x, with fused multiply-adds (half the instructions) when `FMA`, for code compiled with
/// the `fma` target feature.
#[inline(always)]
pub(crate) fn exp_with<const FMA: bool>(x: f32) -> f32 {
    // max/min (not clamp) so NaN becomes -87 instead of reaching the integer conversion.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let t = x * LOG2E;
    let n = (t + ROUND) - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    // e^f, |f| <= ln2 / 2.
    let mut p = madd::<FMA>(f, 1.0 / 5040.0, 1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<FMA>(f, p, c);
    }
    // n is integral and within [-126, 127] after the clamp: build 2^n from its exponent bits.
    // SAFETY: n is an integer in [-126, 127] (x was clamped), so the conversion is exact;
    // `as` would add a saturation check that stops the loop from vectorizing.
    let bits = ((unsafe { n.to_int_unchecked::<i32>() } + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// Softmax of one row in place: max, exponentials, sum and scaling as separate passes, each
/// one vectorizable (the max and the sum in 8 lanes).
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) {
    softmax_row_with::<false>(row)
}

/// [`softmax_row`] with fused multiply-adds in the exponential: only in functions compiled
/// with the `fma` target feature (AVX-512F implies it).
#[inline(always)]
pub(crate) fn softmax_row_fma(row: &mut [f32]) {
    softmax_row_with::<true>(row)
}

#[inline(always)]
fn softmax_row_with<const FMA: bool>(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let max = rest
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for x in row.iter_mut() {
        *x = exp_with::<FMA>(*x - max);
    }
    let mut sums = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            sums[i] += c[i];
        }
    }
    let inv = 1.0 / (sums.iter().sum::<f32>() + rest.iter().sum::<f32>());
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let b = x.exp();
            for a in [super::exp_with::<false>(x), super::exp_with::<true>(x)] {
                worst = worst.max(((a - b) / b).abs());
            }
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(super::exp_with::<false>(0.0), 1.0);
        assert!((0.0..1e-37).contains(&super::exp_with::<false>(-1e30)));
        assert!(super::exp_with::<false>(f32::NAN).is_finite());
    }
}
