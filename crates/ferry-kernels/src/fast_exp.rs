//! `exp` for f32 without a libm call, so loops over it vectorize: range reduction to
//! 2^n * e^f with |f| <= ln2/2 (Cody-Waite) and a degree-7 Taylor polynomial (relative error below 1e-7,
//! about one f32 ulp). Inputs below -87 give 0 as far as softmax is concerned (~1e-38).

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody-Waite) so `x - n ln2` stays exact for large `n`.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer (no SSE4.1 needed).
const ROUND: f32 = 12_582_912.0;

/// e^x.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // max/min (not clamp) so NaN becomes -87 instead of reaching the integer conversion.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let t = x * LOG2E;
    let n = (t + ROUND) - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    // e^f, |f| <= ln2 / 2.
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
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
        *x = exp(*x - max);
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
            let (a, b) = (super::exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(super::exp(0.0), 1.0);
        assert!(super::exp(-1e30) < 1e-37 && super::exp(-1e30) >= 0.0);
        assert!(super::exp(f32::NAN).is_finite());
    }
}
