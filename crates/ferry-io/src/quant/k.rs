//! ferry's k-quant kernels (q2_k, q3_k, q4_k, q5_k, q6_k, q8_k): the algorithms of candle
//! 0.11.1's `BlockQ*K::from_float` (`candle_core::quantized::k_quants`, with `make_qkx1_quants`,
//! `make_q3_quants` and `make_qx_quants` from its `utils.rs`), ported so they give the same bytes,
//! and measured in the same pass as the q4_0 and q8_0 kernels are.
//!
//! # Why they are bit-identical
//!
//! Every float operation of candle's scalar code happens here too, on the same operands in the
//! same order, without fused multiply-adds (see [`super::lanes`]). In particular the running
//! sums of the iterative fits (`sumlx`, `suml2`, the mean of the residuals) are accumulated
//! element by element in candle's order: they are never reassociated.
//!
//! # Why they are fast
//!
//! Those sums are sequential within one sub-block (16 or 32 elements), but sub-blocks are
//! independent, so the fits run on eight sub-blocks side by side ([`super::lanes`]): lane `j`
//! of group `k` belongs to sub-block `8 * k + j`, and element `i` of all of them is processed in
//! one step (the blocks are transposed first). Each lane keeps exactly the scalar order while a
//! step costs one vector instruction per operation and group. Data-dependent branches become
//! selects: a lane whose fit has stopped (candle's `break`) keeps its state while the others go
//! on, and the loop ends when every lane has stopped. Measured choices (2 vCPUs of an AMD EPYC,
//! AVX2 build; see `examples/quant_speed.rs`):
//!
//! - q4_k and q5_k fit two super-blocks at once (two groups: more independent work per step,
//!   about 10% faster than one); q2_k fits one super-block (two groups; two super-blocks were
//!   no faster).
//! - q3_k and q6_k refine their levels one element at a time, through a division, and the
//!   sums carry from one element to the next: a chain of about fifty cycles per step. Most
//!   steps move no level, so each step first computes only the candidate level, and the rest of
//!   the step (the improvement test and the updates) runs behind a branch, only where a lane may
//!   move: the predicted branch lets steps overlap. q3_k refines a super-block's two groups
//!   together, skipping a group once all its lanes have stopped; q6_k (which also refits three
//!   times first) one group at a time, which measured faster than two. Levels are
//!   double-buffered (`Levels`), since updating them in place compiles to masked stores, slow
//!   and stalling the next pass's loads.
//! - Rounding is the exact `trunc(x + copysign(pred(0.5), x))` (candle's `f32::round` is a libm
//!   call on the x86-64 baseline), no heap allocation (candle allocates per sub-block), no
//!   closures in the kernels (a closure is compiled on its own, without the AVX2 target
//!   feature), and the error is measured on the dequantized values of the block just made
//!   rather than by a second pass.

// The fits index several arrays of lanes (`x[i][k]`, `l[i][k]`, `sumlx[k]`...) with the same
// counters; iterator chains over all of them would hide the element order the sums must keep.
#![allow(clippy::needless_range_loop)]

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::lanes::Avx2;
use super::lanes::{Lane, Portable};
use super::{clamped_int, round_half_away, ErrorSums};

/// Elements in a k-quant super-block.
const QK: usize = 256;

/// Super-blocks q4_k and q5_k fit at once (eight sub-blocks each).
const Q45_GROUP: usize = 2;

/// Super-blocks q2_k fits at once (sixteen sub-blocks each; two measured no faster).
const Q2_GROUP: usize = 1;

/// candle's `nearest_int(v)` (`v.round() as i32`: half away from zero, saturating, NaN -> 0).
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    // Truncating (saturating) cast: `round_half_away` already moved the value past the boundary.
    round_half_away(v) as i32
}

/// A level held as a whole f32 in `0..=255` as a byte, written so it vectorizes (`as u8` on a
/// float saturates, which the compiler keeps scalar).
#[inline(always)]
fn byte(v: f32) -> u8 {
    clamped_int(v, 0.0, 255.0) as u8
}

/// [`byte`] of every level of a super-block (a loop, not `map` with a closure: a closure is
/// compiled on its own, without the AVX2 target feature of the kernel calling it).
#[inline(always)]
fn bytes(l: &[f32; QK]) -> [u8; QK] {
    let mut b = [0u8; QK];
    for (b, &v) in b.iter_mut().zip(l) {
        *b = byte(v);
    }
    b
}

/// Eight values of `x` from `at`.
#[inline(always)]
fn eight(x: &[f32], at: usize) -> &[f32; 8] {
    x[at..at + 8].try_into().expect("8 values")
}

/// The `8 * K` sub-blocks of `N` elements (`N` a multiple of 8) that make up `x`, transposed:
/// lane `j` of `rows[i][k]` is element `i` of sub-block `8 * k + j`.
#[inline(always)]
pub(super) fn transpose<S: Lane, const K: usize, const N: usize>(x: &[f32]) -> [[S; K]; N] {
    debug_assert_eq!(x.len(), 8 * K * N);
    let mut rows = [[S::splat(0.0); K]; N];
    for k in 0..K {
        for i0 in (0..N).step_by(8) {
            let mut block = [S::splat(0.0); 8];
            for (j, b) in block.iter_mut().enumerate() {
                *b = S::load(eight(x, (8 * k + j) * N + i0));
            }
            for (d, col) in S::transpose8(block).into_iter().enumerate() {
                rows[i0 + d][k] = col;
            }
        }
    }
    rows
}

/// The inverse of [`transpose`] for sub-blocks of 16: `rows` back into `x` (`128 * K` values).
#[inline(always)]
fn untranspose16<S: Lane, const K: usize>(rows: &[[S; K]; 16], x: &mut [f32]) {
    for k in 0..K {
        for i0 in (0..16).step_by(8) {
            let mut block = [S::splat(0.0); 8];
            for (d, b) in block.iter_mut().enumerate() {
                *b = rows[i0 + d][k];
            }
            for (j, sub) in S::transpose8(block).into_iter().enumerate() {
                let at = (8 * k + j) * 16 + i0;
                x[at..at + 8].copy_from_slice(&sub.to_array());
            }
        }
    }
}

/// Lanes to a flat array of `8 * K` values (`out`).
#[inline(always)]
pub(super) fn flatten<S: Lane, const K: usize>(v: &[S; K], out: &mut [f32]) {
    for (k, v) in v.iter().enumerate() {
        out[8 * k..8 * k + 8].copy_from_slice(&v.to_array());
    }
}

/// Whether any lane of any group is set.
#[inline(always)]
pub(super) fn any<S: Lane, const K: usize>(m: &[S::Mask; K]) -> bool {
    m.iter().fold(false, |a, &m| a | S::any(m))
}

/// candle's `make_qkx1_quants(nmax, 5, x)` on `8 * K` sub-blocks of `N` at once: per sub-block,
/// the `(scale, min)` that maps it to levels `0..=nmax` (`x ~ scale * l - min`), refitted up to
/// five times while the levels change. Written into `scales` and `mins` (`8 * K` each).
#[inline(always)]
fn qkx1<S: Lane, const K: usize, const N: usize>(
    x: &[[S; K]; N],
    nmax: f32,
    scales: &mut [f32],
    mins: &mut [f32],
) {
    let zero = S::splat(0.0);
    let one = S::splat(1.0);
    let never = [zero.ne(zero); K];
    // candle takes min and max with `total_cmp`: on finite values that is `<` and `>`, except
    // that -0.0 sorts below +0.0.
    let (mut lo, mut hi) = (x[0], x[0]);
    for row in &x[1..] {
        for k in 0..K {
            let v = row[k];
            let neg = v.sign_negative();
            lo[k] = S::select(v.lt(lo[k]) | (v.eq(lo[k]) & neg), v, lo[k]);
            hi[k] = S::select(v.gt(hi[k]) | (v.eq(hi[k]) & !neg), v, hi[k]);
        }
    }
    // All values equal: candle returns (0, 0) without fitting.
    let mut flat = never;
    let (mut min, mut iscale, mut scale) = ([zero; K], [zero; K], [zero; K]);
    for k in 0..K {
        flat[k] = hi[k].eq(lo[k]);
        let mut m = lo[k].to_array();
        for v in &mut m {
            *v = v.min(0.);
        }
        min[k] = S::load(&m);
        iscale[k] = S::splat(nmax) / (hi[k] - min[k]);
        scale[k] = one / iscale[k];
    }
    let mut active = flat;
    for a in &mut active {
        *a = !*a;
    }
    let mut l = [[zero; K]; N];
    for _ in 0..5 {
        if !any::<S, K>(&active) {
            break;
        }
        let (mut sumlx, mut suml2, mut changed) = ([zero; K], [zero; K], never);
        for (row, lrow) in x.iter().zip(l.iter_mut()) {
            for k in 0..K {
                let d = row[k] - min[k];
                let li = (iscale[k] * d).round_clamp_pos(nmax);
                changed[k] = changed[k] | li.ne(lrow[k]);
                // A stopped lane's levels are not read again (its scale and min are kept
                // below), so they are overwritten unconditionally.
                lrow[k] = li;
                sumlx[k] = sumlx[k] + d * li;
                // candle sums `li * li` in i32; these partial sums are whole numbers below
                // 2^24, exact in f32.
                suml2[k] = suml2[k] + li * li;
            }
        }
        let mut s = [zero; K];
        for k in 0..K {
            s[k] = sumlx[k] / suml2[k];
        }
        // `Iterator::sum` of f32 starts from -0.0.
        let mut sum = [S::splat(-0.0); K];
        for (row, lrow) in x.iter().zip(&l) {
            for k in 0..K {
                sum[k] = sum[k] + (row[k] - s[k] * lrow[k]);
            }
        }
        for k in 0..K {
            let m = sum[k] / S::splat(N as f32);
            let m = S::select(m.gt(zero), zero, m);
            scale[k] = S::select(active[k], s[k], scale[k]);
            min[k] = S::select(active[k], m, min[k]);
            iscale[k] = S::select(active[k], one / s[k], iscale[k]);
            active[k] = active[k] & changed[k];
        }
    }
    for k in 0..K {
        let (f, s, m) = (
            S::select(flat[k], one, zero).to_array(),
            scale[k].to_array(),
            min[k].to_array(),
        );
        for j in 0..8 {
            let (sc, mn) = if f[j] != 0.0 {
                (0.0, 0.0)
            } else {
                (s[j], -m[j])
            };
            scales[8 * k + j] = sc;
            mins[8 * k + j] = mn;
        }
    }
}

/// Per lane, the value of largest magnitude (the first one where several share it, as candle's
/// `if ax > amax`) and that magnitude.
#[inline(always)]
fn signed_max<S: Lane, const K: usize, const N: usize>(x: &[[S; K]; N]) -> ([S; K], [S; K]) {
    let (mut max, mut amax) = ([S::splat(0.0); K], [S::splat(0.0); K]);
    for row in x {
        for k in 0..K {
            let ax = row[k].abs();
            let take = ax.gt(amax[k]);
            amax[k] = S::select(take, ax, amax[k]);
            max[k] = S::select(take, row[k], max[k]);
        }
    }
    (max, amax)
}

/// `x * x` and `x * x * x` per element: the weights of the q3_k and q6_k fits (`w` and the
/// `w * x` of candle's `w * x * l`).
#[inline(always)]
fn weights<S: Lane, const K: usize>(x: &[[S; K]; 16]) -> ([[S; K]; 16], [[S; K]; 16]) {
    let (mut w, mut wx) = (*x, *x);
    for i in 0..16 {
        for k in 0..K {
            w[i][k] = x[i][k] * x[i][k];
            wx[i][k] = w[i][k] * x[i][k];
        }
    }
    (w, wx)
}

/// Levels of sub-blocks of 16 in two buffers: pass `p` reads `0[p % 2]` and writes
/// `0[(p + 1) % 2]`. Updating one buffer in place, `l = select(take, new, l)` is compiled into
/// masked stores, which are slow and stall the next pass's loads.
struct Levels<S, const K: usize>([[[S; K]; 16]; 2]);

impl<S, const K: usize> Levels<S, K> {
    /// The levels pass `p` reads, and those it writes.
    #[inline(always)]
    fn pass(&mut self, p: usize) -> (&[[S; K]; 16], &mut [[S; K]; 16]) {
        let [a, b] = &mut self.0;
        if p.is_multiple_of(2) {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// The levels after `passes` passes.
    #[inline(always)]
    fn last(&self, passes: usize) -> &[[S; K]; 16] {
        &self.0[passes % 2]
    }
}

/// candle's `make_q3_quants(x, 4, true)` on `8 * K` sub-blocks of 16: per sub-block, the scale
/// of a weighted (`x * x`) least-squares fit of levels `-4..=3`, refined one element at a time.
/// Written into `scales` (`8 * K`).
#[inline(always)]
fn q3_scales<S: Lane, const K: usize>(x: &[[S; K]; 16], scales: &mut [f32]) {
    const NMAX: f32 = 4.0;
    let zero = S::splat(0.0);
    let (max, amax) = signed_max(x);
    let (w, wx) = weights(x);
    let mut iscale = [zero; K];
    // All zeros: candle returns 0 before fitting.
    let mut dead = [zero.ne(zero); K];
    for k in 0..K {
        iscale[k] = S::splat(-NMAX) / max[k];
        dead[k] = amax[k].eq(zero);
    }
    // The levels of the pass before and of this one (see `Levels`); the first fit in `0[0]`.
    let mut levels = Levels([[[zero; K]; 16]; 2]);
    let (mut sumlx, mut suml2) = ([zero; K], [zero; K]);
    for i in 0..16 {
        for k in 0..K {
            let li = (iscale[k] * x[i][k]).round_clamp(-NMAX, NMAX - 1.0);
            levels.0[0][i][k] = li;
            sumlx[k] = sumlx[k] + wx[i][k] * li;
            suml2[k] = suml2[k] + w[i][k] * (li * li);
        }
    }
    let mut active = [zero.ne(zero); K];
    for k in 0..K {
        active[k] = !dead[k];
    }
    for pass in 0..5 {
        if !any::<S, K>(&active) {
            break;
        }
        let (l0, l) = levels.pass(pass);
        let mut changed = [zero.ne(zero); K];
        // Groups whose lanes have all stopped only carry their levels over.
        let mut run = [false; K];
        for k in 0..K {
            run[k] = S::any(active[k]);
        }
        for i in 0..16 {
            for k in 0..K {
                let (v, w, wx, lj) = (x[i][k], w[i][k], wx[i][k], l0[i][k]);
                if !run[k] {
                    l[i][k] = lj;
                    continue;
                }
                let slx0 = sumlx[k] - wx * lj;
                let sl20 = suml2[k] - w * (lj * lj);
                let q = v * sl20 / slx0;
                // Most levels stay: the rest of the step only runs where one may move.
                if !S::any(slx0.gt(zero) & q.far(lj, -NMAX, NMAX - 1.0)) {
                    l[i][k] = lj;
                    continue;
                }
                let new_l = q.round_clamp(-NMAX, NMAX - 1.0);
                let slx = slx0 + wx * new_l;
                let sl2 = sl20 + w * (new_l * new_l);
                // No `active` here: a lane whose last pass changed nothing (or that is all
                // zeros, where `slx0 == 0`) changes nothing again.
                let take = slx0.gt(zero)
                    & new_l.ne(lj)
                    & sl2.gt(zero)
                    & (slx * slx * suml2[k]).gt(sumlx[k] * sumlx[k] * sl2);
                l[i][k] = S::select(take, new_l, lj);
                sumlx[k] = S::select(take, slx, sumlx[k]);
                suml2[k] = S::select(take, sl2, suml2[k]);
                changed[k] = changed[k] | take;
            }
        }
        active = changed;
    }
    let mut out = [zero; K];
    for k in 0..K {
        out[k] = S::select(dead[k], zero, sumlx[k] / suml2[k]);
    }
    flatten(&out, scales);
}

/// candle's `make_qx_quants(16, 32, x, ls, 1, null)` (q6_k's fit) on `8 * K` sub-blocks of 16:
/// per sub-block the scale (into `scales`, `8 * K`), and in `ls` the levels as stored,
/// `0..=63` (`l + 32`).
#[inline(always)]
fn qx_quants<S: Lane, const K: usize>(x: &[[S; K]; 16], ls: &mut [[S; K]; 16], scales: &mut [f32]) {
    const NMAX: f32 = 32.0;
    let zero = S::splat(0.0);
    let never = [zero.ne(zero); K];
    let (max, amax) = signed_max(x);
    let (w, wx) = weights(x);
    // All zeros: candle stores zero levels and returns 0 before fitting.
    let (mut alive, mut iscale) = (never, [zero; K]);
    for k in 0..K {
        alive[k] = !amax[k].eq(zero);
        iscale[k] = S::splat(-NMAX) / max[k];
    }
    // The signed levels `l` (stored as `l + nmax`), the first fit in `levels.0[0]`.
    let mut levels = Levels([[[zero; K]; 16]; 2]);
    let (mut sumlx, mut suml2) = ([zero; K], [zero; K]);
    for i in 0..16 {
        for k in 0..K {
            let li = (iscale[k] * x[i][k]).round_clamp(-NMAX, NMAX - 1.0);
            levels.0[0][i][k] = li;
            sumlx[k] = sumlx[k] + wx[i][k] * li;
            suml2[k] = suml2[k] + w[i][k] * li * li;
        }
    }
    let (mut scale, mut best) = ([zero; K], [zero; K]);
    for k in 0..K {
        scale[k] = sumlx[k] / suml2[k];
        best[k] = scale[k] * sumlx[k];
    }
    // Up to three refits from the current scale, kept while they improve.
    let mut passes = 0;
    let mut active = alive;
    for _ in 0..3 {
        if !any::<S, K>(&active) {
            break;
        }
        let mut is = [zero; K];
        for k in 0..K {
            is[k] = S::splat(1.0) / scale[k];
        }
        let mut changed = never;
        let mut refit = [[zero; K]; 16];
        {
            let l0 = levels.last(passes);
            for i in 0..16 {
                for k in 0..K {
                    let li = (is[k] * x[i][k]).round_clamp(-NMAX, NMAX - 1.0);
                    refit[i][k] = li;
                    changed[k] = changed[k] | li.ne(l0[i][k]);
                }
            }
        }
        // A refit that moves no level of a lane still going stops them all (in 44% of the
        // tries on random data): no need for its sums.
        let mut moved = false;
        for k in 0..K {
            moved |= S::any(changed[k] & active[k]);
        }
        if !moved {
            break;
        }
        let (mut slx, mut sl2) = ([zero; K], [zero; K]);
        for i in 0..16 {
            for k in 0..K {
                let li = refit[i][k];
                slx[k] = slx[k] + wx[i][k] * li;
                sl2[k] = sl2[k] + w[i][k] * li * li;
            }
        }
        let (l0, l) = levels.pass(passes);
        passes += 1;
        let mut take = never;
        for k in 0..K {
            // candle: `if !changed || sl2 == 0.0 || slx * slx <= best * sl2 { break }`.
            let stop = !changed[k] | sl2[k].eq(zero) | (slx[k] * slx[k]).le(best[k] * sl2[k]);
            take[k] = active[k] & !stop;
            sumlx[k] = S::select(take[k], slx[k], sumlx[k]);
            suml2[k] = S::select(take[k], sl2[k], suml2[k]);
            scale[k] = S::select(take[k], sumlx[k] / suml2[k], scale[k]);
            best[k] = S::select(take[k], scale[k] * sumlx[k], best[k]);
        }
        for i in 0..16 {
            for k in 0..K {
                l[i][k] = S::select(take[k], refit[i][k], l0[i][k]);
            }
        }
        active = take;
    }
    // Up to five passes moving one level at a time.
    let mut active = alive;
    for _ in 0..5 {
        if !any::<S, K>(&active) {
            break;
        }
        let (l0, l) = levels.pass(passes);
        passes += 1;
        let mut changed = never;
        for i in 0..16 {
            for k in 0..K {
                let (v, w, wx, lj) = (x[i][k], w[i][k], wx[i][k], l0[i][k]);
                let slx0 = sumlx[k] - wx * lj;
                let sl20 = suml2[k] - w * lj * lj;
                let q = v * sl20 / slx0;
                // As in `q3_scales`: the rest only where a level may move, no `active`.
                if !S::any(slx0.gt(zero) & q.far(lj, -NMAX, NMAX - 1.0)) {
                    l[i][k] = lj;
                    continue;
                }
                let new_l = q.round_clamp(-NMAX, NMAX - 1.0);
                let slx = slx0 + wx * new_l;
                let sl2 = sl20 + w * new_l * new_l;
                let take = slx0.gt(zero)
                    & new_l.ne(lj)
                    & sl2.gt(zero)
                    & (slx * slx * suml2[k]).gt(sumlx[k] * sumlx[k] * sl2);
                l[i][k] = S::select(take, new_l, lj);
                sumlx[k] = S::select(take, slx, sumlx[k]);
                suml2[k] = S::select(take, sl2, suml2[k]);
                changed[k] = changed[k] | take;
            }
        }
        active = changed;
    }
    let l = levels.last(passes);
    let nmax = S::splat(NMAX);
    for i in 0..16 {
        for k in 0..K {
            ls[i][k] = S::select(alive[k], l[i][k] + nmax, zero);
        }
    }
    // candle's `scale` is `sumlx / suml2` of the last levels kept, recomputed whenever they
    // change: the same quotient of the same operands.
    for k in 0..K {
        scale[k] = S::select(alive[k], sumlx[k] / suml2[k], zero);
    }
    flatten(&scale, scales);
}

/// candle's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of q4_k / q5_k.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The levels of one sub-block with an offset (q2_k, q4_k, q5_k): `l = nearest_int((x + dm) /
/// d).clamp(0, nmax)`, all zero when `d == 0` (candle skips the sub-block), and the dequantized
/// values `y = d * l - dm`, as candle's `to_float` computes them.
#[inline(always)]
fn levels_min<S: Lane>(x: &[f32], d: f32, dm: f32, nmax: f32, l: &mut [f32], y: &mut [f32]) {
    let (vd, vm) = (S::splat(d), S::splat(dm));
    for at in (0..x.len()).step_by(8) {
        let q = if d != 0.0 {
            ((S::load(eight(x, at)) + vm) / vd).round_clamp_pos(nmax)
        } else {
            S::splat(0.0)
        };
        l[at..at + 8].copy_from_slice(&q.to_array());
        y[at..at + 8].copy_from_slice(&(vd * q - vm).to_array());
    }
}

/// The levels of one sub-block of q3_k or q6_k, stored with an offset `off`: `l =
/// nearest_int(x / d).clamp(-off, off - 1) + off` where `d != 0`, and `y = d * (l - off)`.
/// Where `d == 0`, candle leaves the levels it had (`l` is left as it is).
#[inline(always)]
fn levels_signed<S: Lane>(x: &[f32], d: f32, off: f32, l: &mut [f32], y: &mut [f32]) {
    let (vd, vo) = (S::splat(d), S::splat(off));
    for at in (0..x.len()).step_by(8) {
        let q = if d != 0.0 {
            (S::load(eight(x, at)) / vd).round_clamp(-off, off - 1.0) + vo
        } else {
            S::load(eight(l, at))
        };
        l[at..at + 8].copy_from_slice(&q.to_array());
        y[at..at + 8].copy_from_slice(&(vd * (q - vo)).to_array());
    }
}

/// Adds a super-block's error to `sums`, 32 elements at a time (as [`ErrorSums::of`] does).
#[inline(always)]
fn measure(sums: &mut ErrorSums, x: &[f32], y: &[f32; QK]) {
    for (a, b) in x.chunks_exact(32).zip(y.chunks_exact(32)) {
        sums.add_block(
            a.try_into().expect("chunks_exact(32)"),
            b.try_into().expect("chunks_exact(32)"),
        );
    }
}

/// The per-block part shared by q4_k and q5_k: the fits, then candle's packed 6-bit scales and
/// mins, `d` and `dmin`, the levels `l` in `0..=nmax` and the dequantized values `y`.
#[inline(always)]
fn q45_block<S: Lane>(
    x: &[f32],
    nmax: f32,
    scales: &[f32],
    mins: &[f32],
    l: &mut [f32; QK],
    y: &mut [f32; QK],
) -> (f16, f16, [u8; 12]) {
    let max_scale = scales.iter().fold(0.0, |max: f32, &val| val.max(max));
    let max_min = mins.iter().fold(0.0, |max: f32, &val| val.max(max));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..QK / 32 {
        let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
        let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    for j in 0..QK / 32 {
        let (s, m) = scale_min_k4(j, &sc);
        let dj = df * f32::from(s);
        let dm = dminf * f32::from(m);
        let r = 32 * j..32 * j + 32;
        levels_min::<S>(&x[r.clone()], dj, dm, nmax, &mut l[r.clone()], &mut y[r]);
    }
    (d, dmin, sc)
}

/// q4_k as candle's `BlockQ4K::from_float`, on the `count` real super-blocks of `xs` (fitted
/// [`Q45_GROUP`] at a time): 144-byte blocks of `d`, `dmin` (f16), 12 bytes of 6-bit scales and
/// mins for eight sub-blocks of 32, and 128 bytes of 4-bit levels. With `MEASURE`, each block's
/// error against its dequantized value is added to `sums`.
#[inline(always)]
fn q4_k_blocks<S: Lane, const MEASURE: bool>(
    xs: &[f32],
    outs: &mut [u8],
    count: usize,
    sums: &mut ErrorSums,
) {
    q45_blocks::<S, MEASURE, 144>(xs, outs, count, sums, 15.0, |l, rest| {
        for c in 0..QK / 64 {
            let (lo, hi) = (&l[64 * c..64 * c + 32], &l[64 * c + 32..64 * c + 64]);
            let q = &mut rest[32 * c..32 * c + 32];
            for ((q, &lo), &hi) in q.iter_mut().zip(lo).zip(hi) {
                *q = byte(lo + hi * 16.0);
            }
        }
    })
}

/// q5_k as candle's `BlockQ5K::from_float`, fitted as q4_k is: 176-byte blocks of `d`, `dmin`, 12 bytes of scales
/// and mins, 32 bytes of fifth bits and 128 bytes of low nibbles. `MEASURE` as for q4_k.
#[inline(always)]
fn q5_k_blocks<S: Lane, const MEASURE: bool>(
    xs: &[f32],
    outs: &mut [u8],
    count: usize,
    sums: &mut ErrorSums,
) {
    q45_blocks::<S, MEASURE, 176>(xs, outs, count, sums, 31.0, |l, rest| {
        let l = bytes(l);
        let (qh, qs) = rest.split_at_mut(32);
        qh.fill(0);
        for c in 0..QK / 64 {
            for k in 0..32 {
                let (l1, l2) = (l[64 * c + k], l[64 * c + k + 32]);
                qh[k] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                qs[32 * c + k] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
    })
}

/// What q4_k and q5_k share: scales and mins fitted [`Q45_GROUP`] blocks at a time with levels
/// up to `max_level`, then per `BYTES`-byte block the header (`d`, `dmin`, 12 bytes of scales
/// and mins) and `pack(levels, rest)` for the bytes after it.
#[inline(always)]
fn q45_blocks<S: Lane, const MEASURE: bool, const BYTES: usize>(
    xs: &[f32],
    outs: &mut [u8],
    count: usize,
    sums: &mut ErrorSums,
    max_level: f32,
    pack: impl Fn(&[f32; QK], &mut [u8]),
) {
    let (mut all_scales, mut all_mins) = ([0f32; 8 * Q45_GROUP], [0f32; 8 * Q45_GROUP]);
    qkx1::<S, Q45_GROUP, 32>(
        &transpose::<S, Q45_GROUP, 32>(xs),
        max_level,
        &mut all_scales,
        &mut all_mins,
    );
    for b in 0..count {
        let (x, out) = (
            &xs[QK * b..QK * (b + 1)],
            &mut outs[BYTES * b..BYTES * (b + 1)],
        );
        let (mut l, mut y) = ([0f32; QK], [0f32; QK]);
        let (d, dmin, sc) = q45_block::<S>(
            x,
            max_level,
            &all_scales[8 * b..8 * b + 8],
            &all_mins[8 * b..8 * b + 8],
            &mut l,
            &mut y,
        );
        out[0..2].copy_from_slice(&d.to_le_bytes());
        out[2..4].copy_from_slice(&dmin.to_le_bytes());
        out[4..16].copy_from_slice(&sc);
        pack(&l, &mut out[16..]);
        if MEASURE {
            measure(sums, x, &y);
        }
    }
}

/// Packs 2-bit values: byte `32 * h + k` holds element `128 * h + 32 * s + k` at bits `2 * s`.
#[inline(always)]
fn pack2(l: &[u8; QK], qs: &mut [u8]) {
    for h in 0..2 {
        for k in 0..32 {
            let e = 128 * h + k;
            qs[32 * h + k] = l[e] | (l[e + 32] << 2) | (l[e + 64] << 4) | (l[e + 96] << 6);
        }
    }
}

/// q2_k as candle's `BlockQ2K::from_float`, on the `count` real super-blocks of `xs` (fitted
/// [`Q2_GROUP`] at a time): 84-byte blocks of 16 scale bytes (4-bit scale and 4-bit min per
/// sub-block of 16), 64 bytes of 2-bit levels, `d` and `dmin`. `MEASURE` as for q4_k.
#[inline(always)]
fn q2_k_blocks<S: Lane, const MEASURE: bool>(
    xs: &[f32],
    outs: &mut [u8],
    count: usize,
    sums: &mut ErrorSums,
) {
    let (mut all_scales, mut all_mins) = ([0f32; 16 * Q2_GROUP], [0f32; 16 * Q2_GROUP]);
    qkx1::<S, { 2 * Q2_GROUP }, 16>(
        &transpose::<S, { 2 * Q2_GROUP }, 16>(xs),
        3.0,
        &mut all_scales,
        &mut all_mins,
    );
    for b in 0..count {
        let r = 16 * b..16 * b + 16;
        q2_k_block::<S, MEASURE>(
            &xs[QK * b..QK * (b + 1)],
            &all_scales[r.clone()],
            &all_mins[r],
            &mut outs[84 * b..84 * (b + 1)],
            sums,
        );
    }
}

/// One super-block of q2_k from its sub-blocks' fitted `scales` and `mins` (see
/// [`q2_k_blocks`]).
#[inline(always)]
fn q2_k_block<S: Lane, const MEASURE: bool>(
    x: &[f32],
    scales: &[f32],
    mins: &[f32],
    out: &mut [u8],
    sums: &mut ErrorSums,
) {
    const Q4SCALE: f32 = 15.0;
    let max_scale = scales.iter().fold(0.0, |max: f32, &val| val.max(max));
    let max_min = mins.iter().fold(0.0, |max: f32, &val| val.max(max));
    let mut sc = [0u8; 16];
    let d = if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (b, &s) in sc.iter_mut().zip(scales) {
            *b = nearest_int(iscale * s) as u8;
        }
        f16::from_f32(max_scale / Q4SCALE)
    } else {
        f16::from_f32(0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (b, &m) in sc.iter_mut().zip(mins) {
            *b |= (nearest_int(iscale * m) as u8) << 4;
        }
        f16::from_f32(max_min / Q4SCALE)
    } else {
        f16::from_f32(0.0)
    };
    let (mut l, mut y) = ([0f32; QK], [0f32; QK]);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    for (j, &s) in sc.iter().enumerate() {
        let dj = df * f32::from(s & 0xF);
        let dm = dminf * f32::from(s >> 4);
        let r = 16 * j..16 * j + 16;
        levels_min::<S>(&x[r.clone()], dj, dm, 3.0, &mut l[r.clone()], &mut y[r]);
    }
    out[..16].copy_from_slice(&sc);
    pack2(&bytes(&l), &mut out[16..80]);
    out[80..82].copy_from_slice(&d.to_le_bytes());
    out[82..84].copy_from_slice(&dmin.to_le_bytes());
    if MEASURE {
        measure(sums, x, &y);
    }
}

/// q3_k as candle's `BlockQ3K::from_float`: 110-byte blocks of 32 bytes of high bits, 64 bytes
/// of 2-bit low bits, 12 bytes of 6-bit signed scales (one per sub-block of 16) and `d`.
/// `MEASURE` as for q4_k.
#[inline(always)]
fn q3_k_block<S: Lane, const MEASURE: bool>(x: &[f32], out: &mut [u8], sums: &mut ErrorSums) {
    let mut scales = [0f32; 16];
    q3_scales::<S, 2>(&transpose::<S, 2, 16>(x), &mut scales);
    let mut max_scale: f32 = 0.0;
    for &scale in &scales {
        if scale.abs() > max_scale.abs() {
            max_scale = scale;
        }
    }
    let mut sc = [0u8; 12];
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &scale) in scales.iter().enumerate() {
            let l_val = nearest_int(iscale * scale).clamp(-32, 31) + 32;
            if j < 8 {
                sc[j] = (l_val & 0xF) as u8;
            } else {
                sc[j - 8] |= ((l_val & 0xF) << 4) as u8;
            }
            let l_val = l_val >> 4;
            sc[j % 4 + 8] |= (l_val << (2 * (j / 4))) as u8;
        }
        f16::from_f32(1.0 / iscale)
    } else {
        f16::from_f32(0.0)
    };
    // Stored as `l + 4` in 0..=7; zero (candle's initial value) where `d == 0`.
    let (mut l, mut y) = ([0f32; QK], [0f32; QK]);
    let df = d.to_f32();
    for j in 0..QK / 16 {
        let s = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        let s = (s | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32;
        let dj = df * f32::from(s);
        let r = 16 * j..16 * j + 16;
        levels_signed::<S>(&x[r.clone()], dj, 4.0, &mut l[r.clone()], &mut y[r]);
    }
    let mut l = bytes(&l);
    let mut hmask = [0u8; 32];
    for (bit, chunk) in l.chunks_exact_mut(32).enumerate() {
        for (h, li) in hmask.iter_mut().zip(chunk) {
            *h |= (*li >> 2) << bit;
            *li &= 3;
        }
    }
    out[..32].copy_from_slice(&hmask);
    pack2(&l, &mut out[32..96]);
    out[96..108].copy_from_slice(&sc);
    out[108..110].copy_from_slice(&d.to_le_bytes());
    if MEASURE {
        measure(sums, x, &y);
    }
}

/// q6_k as candle's `BlockQ6K::from_float`: 210-byte blocks of 128 bytes of low nibbles, 64
/// bytes of high 2-bit pairs, 16 signed 8-bit scales (one per sub-block of 16) and `d`.
/// `MEASURE` as for q4_k.
#[inline(always)]
fn q6_k_block<S: Lane, const MEASURE: bool>(x: &[f32], out: &mut [u8], sums: &mut ErrorSums) {
    let mut scales = [0f32; 16];
    let mut l = [0f32; QK];
    for h in 0..2 {
        let mut ls = [[S::splat(0.0); 1]; 16];
        let r = 8 * h..8 * h + 8;
        qx_quants::<S, 1>(
            &transpose::<S, 1, 16>(&x[128 * h..128 * h + 128]),
            &mut ls,
            &mut scales[r],
        );
        untranspose16(&ls, &mut l[128 * h..128 * h + 128]);
    }
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for &scale in &scales {
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    let iscale = -128f32 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let mut sc = [0i8; 16];
    for (s, &scale) in sc.iter_mut().zip(&scales) {
        *s = nearest_int(iscale * scale).min(127) as i8;
    }
    // A sub-block whose scale rounds to zero keeps the fit's levels.
    let mut y = [0f32; QK];
    let df = d.to_f32();
    for (j, &s) in sc.iter().enumerate() {
        let dj = df * f32::from(s);
        let r = 16 * j..16 * j + 16;
        levels_signed::<S>(&x[r.clone()], dj, 32.0, &mut l[r.clone()], &mut y[r]);
    }
    let l = bytes(&l);
    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for h in 0..2 {
        for k in 0..32 {
            let e = 128 * h + k;
            let (a, b, c, dd) = (l[e], l[e + 32], l[e + 64], l[e + 96]);
            ql[64 * h + k] = (a & 0xF) | ((c & 0xF) << 4);
            ql[64 * h + k + 32] = (b & 0xF) | ((dd & 0xF) << 4);
            qh[32 * h + k] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((dd >> 4) << 6);
        }
    }
    for (o, &s) in rest[..16].iter_mut().zip(&sc) {
        *o = s as u8;
    }
    rest[16..18].copy_from_slice(&d.to_le_bytes());
    if MEASURE {
        measure(sums, x, &y);
    }
}

/// q8_k as candle's `BlockQ8K::from_float`: 292-byte blocks of an f32 `d`, 256 `i8` levels and
/// 16 `i16` sums of 16 levels each. `MEASURE` as for q4_k.
#[inline(always)]
fn q8_k_block<S: Lane, const MEASURE: bool>(x: &[f32], out: &mut [u8], sums: &mut ErrorSums) {
    // The first value of largest magnitude (`if amax < |x|`), found as in q4_0's kernel.
    let mut m = [0f32; 8];
    for (i, v) in x.iter().enumerate() {
        m[i % 8] = super::max_finite(m[i % 8], v.abs());
    }
    let amax = m.iter().fold(0f32, |a, &v| super::max_finite(a, v));
    let mut q = [0f32; QK];
    let d = if amax == 0.0 {
        0.0
    } else {
        let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127f32 / max;
        let vi = S::splat(iscale);
        for at in (0..QK).step_by(8) {
            let v = (vi * S::load(eight(x, at))).round_clamp(-128.0, 127.0);
            q[at..at + 8].copy_from_slice(&v.to_array());
        }
        1.0 / iscale
    };
    out[..4].copy_from_slice(&d.to_le_bytes());
    for (o, &v) in out[4..260].iter_mut().zip(&q) {
        *o = clamped_int(v, -128.0, 127.0) as i8 as u8;
    }
    for (j, chunk) in q.chunks_exact(16).enumerate() {
        let s = chunk.iter().fold(0f32, |a, &v| a + v) as i16;
        out[260 + 2 * j..262 + 2 * j].copy_from_slice(&s.to_le_bytes());
    }
    if MEASURE {
        let mut y = [0f32; QK];
        for (y, &q) in y.iter_mut().zip(&q) {
            *y = d * q;
        }
        measure(sums, x, &y);
    }
}

/// Runs `$block::<$lane, $measure>` over every super-block of `$src` and `$dst` (`$bytes`
/// each), or with `grouped(G)` over `G` super-blocks at a time, given how many of them are real
/// (a short last group is padded with zeros; the padding's output is dropped and not measured),
/// and returns the error sums added (`n` set). A macro rather than a function taking the block function: a call through `Fn` is
/// compiled on its own, without the AVX2 target feature of the kernel around it.
macro_rules! each_block {
    (single: $src:expr, $dst:expr, $bytes:literal, $block:ident::<$lane:ty, $measure:ident>) => {{
        let (src, dst): (&[f32], &mut [u8]) = ($src, $dst);
        let mut sums = ErrorSums::default();
        for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut($bytes)) {
            $block::<$lane, $measure>(x, out, &mut sums);
        }
        sums.n = src.len() / QK * QK;
        sums
    }};
    (grouped($group:ident): $src:expr, $dst:expr, $bytes:literal,
     $block:ident::<$lane:ty, $measure:ident>) => {{
        let (src, dst): (&[f32], &mut [u8]) = ($src, $dst);
        let mut sums = ErrorSums::default();
        let mut xs = src.chunks_exact($group * QK);
        let mut outs = dst.chunks_exact_mut($group * $bytes);
        for (x, out) in (&mut xs).zip(&mut outs) {
            $block::<$lane, $measure>(x, out, $group, &mut sums);
        }
        let (last_x, last_out) = (xs.remainder(), outs.into_remainder());
        let count = last_x.len() / QK;
        if count > 0 && last_out.len() == count * $bytes {
            let mut x = [0f32; $group * QK];
            x[..last_x.len()].copy_from_slice(last_x);
            let mut out = [0u8; $group * $bytes];
            $block::<$lane, $measure>(&x, &mut out, count, &mut sums);
            last_out.copy_from_slice(&out[..last_out.len()]);
        }
        sums.n = src.len() / QK * QK;
        sums
    }};
}

/// Defines the kernel `$name` for whole super-blocks (`$bytes` each), dispatching on
/// `ferry_kernels::cpu::features` (all off under `FERRY_PORTABLE_KERNELS`, AVX-512 under
/// `FERRY_NO_AVX512`): the AVX2 lanes compiled with AVX-512F and VL on where the CPU has them
/// (`$avx512`: the same operations, with 32 registers instead of 16 and compares into mask
/// registers: q6_k's fit spills less, 5-7% faster), the AVX2 lanes (`$avx2`) where it has AVX2,
/// portable lanes otherwise; `$portable` is the portable build alone. All give the same bytes.
/// With `MEASURE` the returned sums hold the error of every block against its dequantized value;
/// without, they are empty.
macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident, $portable:ident, $avx2:ident, $avx512:ident,
     $how:ident $(($group:ident))?: $block:ident, $bytes:literal) => {
        $(#[$doc])*
        pub(super) fn $name<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
            #[cfg(target_arch = "x86_64")]
            {
                let f = ferry_kernels::cpu::features();
                if f.avx2 && f.avx512f && f.avx512vl {
                    // SAFETY: the CPU supports AVX2, AVX-512F and AVX-512VL (checked just above).
                    return unsafe { $avx512::<MEASURE>(src, dst) };
                }
                if f.avx2 {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { $avx2::<MEASURE>(src, dst) };
                }
            }
            $portable::<MEASURE>(src, dst)
        }

        /// The portable build of the kernel of the same type (tested against the others).
        pub(super) fn $portable<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
            each_block!($how $(($group))?: src, dst, $bytes, $block::<Portable, MEASURE>)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
            each_block!($how $(($group))?: src, dst, $bytes, $block::<Avx2, MEASURE>)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,avx512f,avx512vl")]
        fn $avx512<const MEASURE: bool>(src: &[f32], dst: &mut [u8]) -> ErrorSums {
            each_block!($how $(($group))?: src, dst, $bytes, $block::<Avx2, MEASURE>)
        }
    };
}

kernel!(
    /// q2_k (see [`q2_k_blocks`]).
    q2_k, q2_k_portable, q2_k_avx2, q2_k_avx512, grouped(Q2_GROUP): q2_k_blocks, 84
);
kernel!(
    /// q3_k (see [`q3_k_block`]).
    q3_k, q3_k_portable, q3_k_avx2, q3_k_avx512, single: q3_k_block, 110
);
kernel!(
    /// q4_k (see [`q4_k_blocks`]).
    q4_k, q4_k_portable, q4_k_avx2, q4_k_avx512, grouped(Q45_GROUP): q4_k_blocks, 144
);
kernel!(
    /// q5_k (see [`q5_k_blocks`]).
    q5_k, q5_k_portable, q5_k_avx2, q5_k_avx512, grouped(Q45_GROUP): q5_k_blocks, 176
);
kernel!(
    /// q6_k (see [`q6_k_block`]).
    q6_k, q6_k_portable, q6_k_avx2, q6_k_avx512, single: q6_k_block, 210
);
kernel!(
    /// q8_k (see [`q8_k_block`]).
    q8_k, q8_k_portable, q8_k_avx2, q8_k_avx512, single: q8_k_block, 292
);
