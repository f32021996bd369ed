//! Eight f32 lanes for the k-quant kernels, with two builds of the same operations: AVX2
//! intrinsics ([`Avx2`], used only inside functions compiled with the `avx2` target feature,
//! alone or with AVX-512F and VL, after the CPU was checked) and plain arrays ([`Portable`],
//! any CPU). Each operation is one IEEE operation per lane (no fused multiply-add, no
//! reassociation), so both builds give the same bits, and an expression such as `w * v * l` is
//! evaluated in the order written, as in candle's scalar code.

use std::ops::{Add, BitAnd, BitOr, Div, Mul, Not, Sub};

/// Eight f32 lanes.
pub(super) trait Lane:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// Eight lane conditions.
    type Mask: Copy
        + BitAnd<Output = Self::Mask>
        + BitOr<Output = Self::Mask>
        + Not<Output = Self::Mask>;
    /// `v` in every lane.
    fn splat(v: f32) -> Self;
    /// Lanes from an array.
    fn load(a: &[f32; 8]) -> Self;
    /// Lanes to an array.
    fn to_array(self) -> [f32; 8];
    /// `|x|`.
    fn abs(self) -> Self;
    /// `self < o` (false where either is NaN).
    fn lt(self, o: Self) -> Self::Mask;
    /// `self > o` (false where either is NaN).
    fn gt(self, o: Self) -> Self::Mask;
    /// `self <= o` (false where either is NaN).
    fn le(self, o: Self) -> Self::Mask;
    /// `self == o` (false where either is NaN).
    fn eq(self, o: Self) -> Self::Mask;
    /// `self != o` (true where either is NaN).
    fn ne(self, o: Self) -> Self::Mask;
    /// Whether the sign bit is set.
    fn sign_negative(self) -> Self::Mask;
    /// `a` where `m`, else `b`.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// Whether any lane of `m` is set.
    fn any(m: Self::Mask) -> bool;
    /// `round(x) as i32` clamped to `[lo, hi]` (whole numbers containing 0), as f32: rounding
    /// half away from zero, NaN giving 0, as candle's `nearest_int(x).clamp(lo, hi)`.
    fn round_clamp(self, lo: f32, hi: f32) -> Self;
    /// [`Lane::round_clamp`] with `lo == 0`, in fewer steps: a negative value rounds to a
    /// non-positive whole number, which the clamp makes 0 anyway.
    fn round_clamp_pos(self, hi: f32) -> Self;
    /// Whether `self.round_clamp(lo, hi)` may differ from `l`, a whole number in `[lo, hi]`:
    /// false only where it certainly equals `l` (`self` clamped to `[lo, hi]` lies strictly
    /// within 0.5 of `l`), true elsewhere (at a tie, or NaN). Cheaper than rounding and
    /// comparing, for loops where most levels stay; callers round where this is true.
    fn far(self, l: Self, lo: f32, hi: f32) -> Self::Mask;
    /// The 8 x 8 transpose: lane `j` of result `i` is lane `i` of `rows[j]`.
    fn transpose8(rows: [Self; 8]) -> [Self; 8];
}

/// [`Lane`] on plain arrays: any CPU.
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; 8]);

/// [`Portable`]'s lane conditions.
#[derive(Clone, Copy)]
pub(super) struct PortableMask([bool; 8]);

macro_rules! portable_op {
    ($tr:ident, $f:ident, $op:tt) => {
        impl $tr for Portable {
            type Output = Portable;
            #[inline(always)]
            fn $f(self, o: Portable) -> Portable {
                Portable(std::array::from_fn(|j| self.0[j] $op o.0[j]))
            }
        }
    };
}
portable_op!(Add, add, +);
portable_op!(Sub, sub, -);
portable_op!(Mul, mul, *);
portable_op!(Div, div, /);

impl BitAnd for PortableMask {
    type Output = PortableMask;
    #[inline(always)]
    fn bitand(self, o: PortableMask) -> PortableMask {
        PortableMask(std::array::from_fn(|j| self.0[j] & o.0[j]))
    }
}

impl BitOr for PortableMask {
    type Output = PortableMask;
    #[inline(always)]
    fn bitor(self, o: PortableMask) -> PortableMask {
        PortableMask(std::array::from_fn(|j| self.0[j] | o.0[j]))
    }
}

impl Not for PortableMask {
    type Output = PortableMask;
    #[inline(always)]
    fn not(self) -> PortableMask {
        PortableMask(self.0.map(|b| !b))
    }
}

impl Lane for Portable {
    type Mask = PortableMask;
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    #[inline(always)]
    fn load(a: &[f32; 8]) -> Self {
        Portable(*a)
    }
    #[inline(always)]
    fn to_array(self) -> [f32; 8] {
        self.0
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Portable(self.0.map(f32::abs))
    }
    #[inline(always)]
    fn lt(self, o: Self) -> PortableMask {
        PortableMask(std::array::from_fn(|j| self.0[j] < o.0[j]))
    }
    #[inline(always)]
    fn gt(self, o: Self) -> PortableMask {
        PortableMask(std::array::from_fn(|j| self.0[j] > o.0[j]))
    }
    #[inline(always)]
    fn le(self, o: Self) -> PortableMask {
        PortableMask(std::array::from_fn(|j| self.0[j] <= o.0[j]))
    }
    #[inline(always)]
    fn eq(self, o: Self) -> PortableMask {
        PortableMask(std::array::from_fn(|j| self.0[j] == o.0[j]))
    }
    #[inline(always)]
    fn ne(self, o: Self) -> PortableMask {
        PortableMask(std::array::from_fn(|j| self.0[j] != o.0[j]))
    }
    #[inline(always)]
    fn sign_negative(self) -> PortableMask {
        PortableMask(self.0.map(f32::is_sign_negative))
    }
    #[inline(always)]
    fn select(m: PortableMask, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(
            |j| if m.0[j] { a.0[j] } else { b.0[j] },
        ))
    }
    #[inline(always)]
    fn any(m: PortableMask) -> bool {
        m.0.iter().any(|&b| b)
    }
    #[inline(always)]
    fn round_clamp(self, lo: f32, hi: f32) -> Self {
        Portable(
            self.0
                .map(|v| super::clamped_int(super::round_half_away(v), lo, hi) as f32),
        )
    }
    #[inline(always)]
    fn round_clamp_pos(self, hi: f32) -> Self {
        self.round_clamp(0.0, hi)
    }
    #[inline(always)]
    fn far(self, l: Self, lo: f32, hi: f32) -> PortableMask {
        // `clamp` keeps a NaN, whose distance is unordered: far.
        PortableMask(std::array::from_fn(|j| {
            let d = (self.0[j].clamp(lo, hi) - l.0[j]).abs();
            d.partial_cmp(&0.5) != Some(std::cmp::Ordering::Less)
        }))
    }
    #[inline(always)]
    fn transpose8(rows: [Self; 8]) -> [Self; 8] {
        let mut t = [[0f32; 8]; 8];
        for (i, row) in t.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = rows[j].0[i];
            }
        }
        t.map(Portable)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! [`Lane`] on AVX2 registers. Every method is `#[inline(always)]` and calls intrinsics that
    //! need AVX2; the type is only used inside functions compiled with
    //! `#[target_feature(enable = "avx2")]` (or `"avx2,avx512f,avx512vl"`: the same intrinsics,
    //! which the compiler may then encode with AVX-512's 32 registers and mask compares), which
    //! callers enter after `ferry_kernels::cpu::features()` says the CPU has those features, so
    //! the intrinsics are inlined there and never run on a CPU without them.
    use std::arch::x86_64::*;
    use std::ops::{Add, BitAnd, BitOr, Div, Mul, Not, Sub};

    use super::Lane;

    /// Eight f32 lanes in an AVX register.
    #[derive(Clone, Copy)]
    pub(in crate::quant) struct Avx2(__m256);

    /// Lane conditions: all ones or all zeros per lane.
    #[derive(Clone, Copy)]
    pub(in crate::quant) struct Avx2Mask(__m256);

    macro_rules! avx_op {
        ($tr:ident, $f:ident, $intr:ident) => {
            impl $tr for Avx2 {
                type Output = Avx2;
                #[inline(always)]
                fn $f(self, o: Avx2) -> Avx2 {
                    // SAFETY: see the module comment: only run where AVX2 is present.
                    Avx2(unsafe { $intr(self.0, o.0) })
                }
            }
        };
    }
    avx_op!(Add, add, _mm256_add_ps);
    avx_op!(Sub, sub, _mm256_sub_ps);
    avx_op!(Mul, mul, _mm256_mul_ps);
    avx_op!(Div, div, _mm256_div_ps);

    impl BitAnd for Avx2Mask {
        type Output = Avx2Mask;
        #[inline(always)]
        fn bitand(self, o: Avx2Mask) -> Avx2Mask {
            // SAFETY: see the module comment.
            Avx2Mask(unsafe { _mm256_and_ps(self.0, o.0) })
        }
    }

    impl BitOr for Avx2Mask {
        type Output = Avx2Mask;
        #[inline(always)]
        fn bitor(self, o: Avx2Mask) -> Avx2Mask {
            // SAFETY: see the module comment.
            Avx2Mask(unsafe { _mm256_or_ps(self.0, o.0) })
        }
    }

    impl Not for Avx2Mask {
        type Output = Avx2Mask;
        #[inline(always)]
        fn not(self) -> Avx2Mask {
            // SAFETY: see the module comment.
            Avx2Mask(unsafe { _mm256_xor_ps(self.0, _mm256_castsi256_ps(_mm256_set1_epi32(-1))) })
        }
    }

    impl Avx2 {
        #[inline(always)]
        fn cmp<const P: i32>(self, o: Avx2) -> Avx2Mask {
            // SAFETY: see the module comment.
            Avx2Mask(unsafe { _mm256_cmp_ps::<P>(self.0, o.0) })
        }
    }

    impl Lane for Avx2 {
        type Mask = Avx2Mask;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY: see the module comment.
            Avx2(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        fn load(a: &[f32; 8]) -> Self {
            // SAFETY: `a` is 8 readable f32; AVX2 as in the module comment.
            Avx2(unsafe { _mm256_loadu_ps(a.as_ptr()) })
        }
        #[inline(always)]
        fn to_array(self) -> [f32; 8] {
            let mut a = [0f32; 8];
            // SAFETY: `a` is 8 writable f32; AVX2 as in the module comment.
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), self.0) };
            a
        }
        #[inline(always)]
        fn abs(self) -> Self {
            // SAFETY: see the module comment.
            Avx2(unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0) })
        }
        #[inline(always)]
        fn lt(self, o: Self) -> Avx2Mask {
            self.cmp::<_CMP_LT_OQ>(o)
        }
        #[inline(always)]
        fn gt(self, o: Self) -> Avx2Mask {
            self.cmp::<_CMP_GT_OQ>(o)
        }
        #[inline(always)]
        fn le(self, o: Self) -> Avx2Mask {
            self.cmp::<_CMP_LE_OQ>(o)
        }
        #[inline(always)]
        fn eq(self, o: Self) -> Avx2Mask {
            self.cmp::<_CMP_EQ_OQ>(o)
        }
        #[inline(always)]
        fn ne(self, o: Self) -> Avx2Mask {
            self.cmp::<_CMP_NEQ_UQ>(o)
        }
        #[inline(always)]
        fn sign_negative(self) -> Avx2Mask {
            // SAFETY: see the module comment.
            Avx2Mask(unsafe {
                _mm256_castsi256_ps(_mm256_srai_epi32::<31>(_mm256_castps_si256(self.0)))
            })
        }
        #[inline(always)]
        fn select(m: Avx2Mask, a: Self, b: Self) -> Self {
            // SAFETY: see the module comment.
            Avx2(unsafe { _mm256_blendv_ps(b.0, a.0, m.0) })
        }
        #[inline(always)]
        fn any(m: Avx2Mask) -> bool {
            // SAFETY: see the module comment.
            unsafe { _mm256_movemask_ps(m.0) != 0 }
        }
        #[inline(always)]
        fn round_clamp(self, lo: f32, hi: f32) -> Self {
            // SAFETY: see the module comment.
            unsafe {
                // x + copysign(pred(0.5), x), clamped, truncated: exactly `round` then the clamp
                // (see `round_half_away`); the integer round trip gives +0.0, never -0.0. A NaN
                // goes through as `lo` (`max` returns its second operand then) and becomes 0
                // at the end, off the dependency chain.
                let x = self.0;
                let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
                let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
                let r = _mm256_add_ps(x, _mm256_or_ps(sign, _mm256_set1_ps(0.499_999_97)));
                let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
                let r = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(r));
                Avx2(_mm256_andnot_ps(nan, r))
            }
        }
        #[inline(always)]
        fn round_clamp_pos(self, hi: f32) -> Self {
            // SAFETY: see the module comment.
            unsafe {
                // For x >= 0 this is `round_clamp`'s x + pred(0.5); for x < 0 (and -0.0) the
                // sum is below 0.5 and the clamp gives 0, as rounding then clamping does. NaN
                // also gives 0: `max` returns its second operand when the first is NaN.
                let r = _mm256_add_ps(self.0, _mm256_set1_ps(0.499_999_97));
                let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), _mm256_set1_ps(hi));
                Avx2(_mm256_cvtepi32_ps(_mm256_cvttps_epi32(r)))
            }
        }
        #[inline(always)]
        fn far(self, l: Self, lo: f32, hi: f32) -> Avx2Mask {
            // SAFETY: see the module comment.
            unsafe {
                // `max` and `min` return their second operand where either is NaN: `self` goes
                // last, so a NaN stays NaN, and `NLT_UQ` (not less than, true if unordered)
                // marks it. Rounding is monotone and 0.5 exact, so a computed distance below
                // 0.5 means a true one below 0.5.
                let c = _mm256_min_ps(
                    _mm256_set1_ps(hi),
                    _mm256_max_ps(_mm256_set1_ps(lo), self.0),
                );
                let d = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(c, l.0));
                Avx2Mask(_mm256_cmp_ps::<_CMP_NLT_UQ>(d, _mm256_set1_ps(0.5)))
            }
        }
        #[inline(always)]
        fn transpose8(r: [Self; 8]) -> [Self; 8] {
            // SAFETY: see the module comment.
            unsafe {
                let t0 = _mm256_unpacklo_ps(r[0].0, r[1].0);
                let t1 = _mm256_unpackhi_ps(r[0].0, r[1].0);
                let t2 = _mm256_unpacklo_ps(r[2].0, r[3].0);
                let t3 = _mm256_unpackhi_ps(r[2].0, r[3].0);
                let t4 = _mm256_unpacklo_ps(r[4].0, r[5].0);
                let t5 = _mm256_unpackhi_ps(r[4].0, r[5].0);
                let t6 = _mm256_unpacklo_ps(r[6].0, r[7].0);
                let t7 = _mm256_unpackhi_ps(r[6].0, r[7].0);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                [
                    Avx2(_mm256_permute2f128_ps::<0x20>(u0, u4)),
                    Avx2(_mm256_permute2f128_ps::<0x20>(u1, u5)),
                    Avx2(_mm256_permute2f128_ps::<0x20>(u2, u6)),
                    Avx2(_mm256_permute2f128_ps::<0x20>(u3, u7)),
                    Avx2(_mm256_permute2f128_ps::<0x31>(u0, u4)),
                    Avx2(_mm256_permute2f128_ps::<0x31>(u1, u5)),
                    Avx2(_mm256_permute2f128_ps::<0x31>(u2, u6)),
                    Avx2(_mm256_permute2f128_ps::<0x31>(u3, u7)),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(value, level)` pairs around every level of `-32..=31`: ties, one float either side of
    /// them, points inside, values past the clamp, NaN and infinities.
    fn probes() -> (Vec<f32>, Vec<f32>) {
        let (mut q, mut l) = (Vec::new(), Vec::new());
        for level in -32..=31 {
            let lf = level as f32;
            for t in [-0.5f32, 0.5] {
                let tie = lf + t;
                for v in [tie, tie.next_down(), tie.next_up()] {
                    q.push(v);
                    l.push(lf);
                }
            }
            for v in [lf, lf + 0.25, lf - 0.49, lf + 3.0, -40.0, 40.0, 1e30, -1e30]
                .into_iter()
                .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY])
            {
                q.push(v);
                l.push(lf);
            }
        }
        while !q.len().is_multiple_of(8) {
            q.push(0.0);
            l.push(0.0);
        }
        (q, l)
    }

    /// Per probe, whether [`Lane::far`] marked it; asserts that every unmarked one rounds to
    /// its level.
    fn far_marks<S: Lane>() -> Vec<bool> {
        let (q, l) = probes();
        let mut marks = Vec::new();
        for at in (0..q.len()).step_by(8) {
            let (vq, vl) = (
                S::load(q[at..at + 8].try_into().unwrap()),
                S::load(l[at..at + 8].try_into().unwrap()),
            );
            let far = S::select(vq.far(vl, -32.0, 31.0), S::splat(1.0), S::splat(0.0)).to_array();
            let rounded = vq.round_clamp(-32.0, 31.0).to_array();
            for j in 0..8 {
                let far = far[j] == 1.0;
                assert!(
                    far || rounded[j] == l[at + j],
                    "{} near {} rounds to {}",
                    q[at + j],
                    l[at + j],
                    rounded[j]
                );
                marks.push(far);
            }
        }
        marks
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn far_marks_avx2() -> Vec<bool> {
        far_marks::<Avx2>()
    }

    #[test]
    fn far_is_false_only_where_the_level_stays() {
        let marks = far_marks::<Portable>();
        // Not a test that cannot fail the other way: the five probes strictly inside each of
        // the 64 levels' intervals are recognized as staying (and the clamped ones past the ends).
        let near = marks.iter().filter(|&&m| !m).count();
        assert!(near >= 5 * 64, "only {near} of {} probes near", marks.len());
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            assert_eq!(unsafe { far_marks_avx2() }, marks);
        }
    }
}
