//! Importance-weighted q4_0, q4_1, q5_0 and q5_1: llama.cpp's `quantize_row_q4_0_impl`,
//! `quantize_row_q4_1_impl`, `quantize_row_q5_0_impl` and `quantize_row_q5_1_impl`
//! (`ggml/src/ggml-quants.c`, with `make_qx_quants` and `make_qkx3_quants`), ported so they give
//! the same bytes. candle 0.11.1 has no weighted kernels for these types (only for the
//! k-quants), and llama.cpp's fallback for a q4_k or q5_k row that is no multiple of 256 is
//! q5_0 or q5_1, so these are what an importance matrix changes on such models.
//!
//! Per row: `sigma2` is the mean of the squares of the whole row (summed in element order, as
//! llama.cpp does); per block of 32, element `j` weighs `importance[j] * sqrt(sigma2 + x[j]^2)`.
//! - q4_0 / q5_0: `make_qx_quants(32, nmax, x, L, 1, weight)` with `nmax` 8 / 16: the signed
//!   levels of the value of largest magnitude's scale, then of the scales `-(nmax + 0.1 * is) /
//!   max` for `is` in `-9..=9`, keeping the one of least weighted squared error.
//! - q4_1 / q5_1: `make_qkx3_quants(32, nmax, x, weight, L, &min, Laux, -0.9, 0.05, 36,
//!   false)` with `nmax` 15 / 31: a weighted least-squares scale and minimum for each of 37
//!   candidate level assignments, keeping the one of least weighted squared error.
//!
//! # Why they are byte-identical
//!
//! Every float operation of llama.cpp's C happens here on the same operands in the same order,
//! in f32, without fused multiply-adds (ggml-base is compiled for the x86-64 baseline, where the
//! compiler cannot contract). llama.cpp's `nearest_int` (`fval + 12582912.f` read as bits:
//! ties to even, unlike candle's `round`) is `(v + 12582912) - 12582912` for `|v| < 2^21`.
//! Before each pass over a block the kernels bound its `|v|` (the scale times the largest
//! magnitude; in `make_qkx3_quants`, whose minimum moves as it fits, times the farther end of
//! the block from the minimum); a pass where a fitted block may exceed the bound, or holds a
//! NaN (which no bound sees), sends every level out of range through llama.cpp's bit trick
//! itself. So even infinities and NaN give llama.cpp's bytes (its `-2^22` and `0`), as does a
//! q4_1 block spanning less than about 4e-38, whose inverse range overflows. The scales go to
//! f16 rounding to nearest even, as ggml's `GGML_FP32_TO_FP16` does. The unit tests check the
//! kernels against a plain scalar transcription of the C, `tests/imatrix.rs` against llama.cpp.
//!
//! # Why they are fast
//!
//! The fits are sequential within a block (running sums over its 32 elements) but blocks are
//! independent once their weights are known, so they run on eight blocks side by side, as
//! `quant::k`'s fits do (`quant::lanes`, AVX2 where the CPU has it): lane `j` holds block
//! `j` of the group, every lane keeps llama.cpp's scalar order, and its branches become
//! selects. Rows only matter for `sigma2`, so a group may span rows. llama.cpp's search has no
//! early exit (every scale is tried), so no lane waits for another. On 49152 x 576 normal
//! values (2 shared vCPUs of an AMD EPYC, one thread), q4_0/q5_0 take about 0.2 s and q4_1/q5_1
//! 0.5 s, where llama.cpp's scalar C takes 0.73 s and 3.1 s; sixteen blocks at a time measured
//! slower.
//!
//! llama.cpp takes the importance as given: a block whose importance is all zero gets scale 0
//! (q4_0, q5_0; its values all dequantize to 0) or its plain min-max levels (q4_1, q5_1).
//! [`crate::imatrix::quantize_measured`] raises zeros to a tiny floor before calling these, so
//! such a block is quantized as if unweighted instead.

// The fits index several arrays of lanes (`x[i][k]`, `w[i][k]`, `levels[i][k]`) with the same
// counters, in the order llama.cpp's sums must keep; iterator chains would hide it.
#![allow(clippy::needless_range_loop)]

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::lanes::Avx2;
use super::lanes::{Lane, Portable};
use super::{k, pack5};
use crate::dtype::DType;

/// Elements in a block of every type here.
const QK: usize = 32;

/// llama.cpp's `GROUP_MAX_EPS`: a block whose largest magnitude is below it is all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Groups of eight blocks fitted at once (two measured about 1.5x slower: the fits' arrays no
/// longer fit the registers).
const K: usize = 1;

/// Blocks fitted at once.
const GROUP: usize = 8 * K;

/// The four types, as the const parameter of [`weighted_rows`].
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;

/// Bytes per block of type `T`.
const fn block_bytes(t: u8) -> usize {
    match t {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        _ => 24,
    }
}

/// A weighted kernel: quantizes whole rows (`rows.len()` a multiple of `importance.len()`, the
/// row width, itself a multiple of 32) into `out`, exactly their size in bytes.
pub type Kernel = fn(rows: &[f32], importance: &[f32], out: &mut [u8]);

/// The weighted kernel for `dtype`: [`q4_0`], [`q4_1`], [`q5_0`] or [`q5_1`]; `None` for other
/// types.
pub fn kernel(dtype: DType) -> Option<Kernel> {
    Some(match dtype {
        DType::Q4_0 => q4_0,
        DType::Q4_1 => q4_1,
        DType::Q5_0 => q5_0,
        DType::Q5_1 => q5_1,
        _ => return None,
    })
}

/// llama.cpp's `nearest_int`: `fval + 12582912.f` (1.5 * 2^23) read as an integer, which rounds
/// to the nearest whole number, ties to even, for `|fval| <= 4194303` (llama.cpp asserts that
/// range in debug builds; its release result outside it, NaN included, is reproduced too).
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Below this magnitude `(v + 1.5 * 2^23) - 1.5 * 2^23` is exactly llama.cpp's
/// `nearest_int(v)` (it is up to 4194303; a power of two keeps the bound simple).
const EXACT: f32 = 2_097_152.0;

/// `MAX(lo, MIN(hi, nearest_int(v)))` in every lane, as f32: llama.cpp's level of `v`. Rounds
/// with `(v + 1.5 * 2^23) - 1.5 * 2^23` (ties to even, exactly `nearest_int` for `|v| <
/// EXACT`); with `CHECKED`, a lane outside that range (or NaN) sends all eight through
/// [`nearest_int`] itself. Unchecked, the caller has shown every lane it keeps is in range.
#[inline(always)]
fn level<S: Lane, const CHECKED: bool>(v: S, lo: f32, hi: f32) -> S {
    const MAGIC: f32 = 12_582_912.0;
    let r = if CHECKED && S::any(!v.abs().lt(S::splat(EXACT))) {
        let mut a = v.to_array();
        for v in a.iter_mut() {
            *v = nearest_int(*v) as f32;
        }
        S::load(&a)
    } else {
        (v + S::splat(MAGIC)) - S::splat(MAGIC)
    };
    let r = S::select(S::splat(hi).lt(r), S::splat(hi), r);
    S::select(S::splat(lo).gt(r), S::splat(lo), r)
}

/// Whether every lane that `alive` keeps is finite (all its values) and has `bound < EXACT`
/// (false where `bound` is NaN): then no level of a pass whose `|v|` is at most `bound` needs
/// the checked rounding. A NaN value escapes the bound (the largest magnitude skips it).
#[inline(always)]
fn in_range<S: Lane>(alive: &[S::Mask; K], finite: &[S::Mask; K], bound: &[S; K]) -> bool {
    let mut out = false;
    for k in 0..K {
        out |= S::any(alive[k] & !(finite[k] & bound[k].lt(S::splat(EXACT))));
    }
    !out
}

/// Lanes whose 32 values are all finite.
#[inline(always)]
fn finite<S: Lane>(x: &[[S; K]; QK]) -> [S::Mask; K] {
    let inf = S::splat(f32::INFINITY);
    let mut ok = [inf.eq(inf); K];
    for i in 0..QK {
        for k in 0..K {
            ok[k] = ok[k] & x[i][k].abs().lt(inf);
        }
    }
    ok
}

/// One pass of `make_qx_quants`: the levels of `iscale * x` clamped to `[-nmax, nmax - 1]`
/// into `l`, and the sums `sum w*x*l`, `sum w*l*l` in element order (`w*x` precomputed: the
/// same product llama.cpp's `w*x[i]*l` forms first).
#[inline(always)]
fn qx_pass<S: Lane, const CHECKED: bool>(
    nmax: f32,
    iscale: &[S; K],
    x: &[[S; K]; QK],
    w: &[[S; K]; QK],
    wx: &[[S; K]; QK],
    l: &mut [[S; K]; QK],
) -> ([S; K], [S; K]) {
    let zero = S::splat(0.0);
    let (mut sumlx, mut suml2) = ([zero; K], [zero; K]);
    for i in 0..QK {
        for k in 0..K {
            let li = level::<S, CHECKED>(iscale[k] * x[i][k], -nmax, nmax - 1.0);
            l[i][k] = li;
            sumlx[k] = sumlx[k] + wx[i][k] * li;
            suml2[k] = suml2[k] + w[i][k] * li * li;
        }
    }
    (sumlx, suml2)
}

/// [`qx_pass`] at scale `iscale`, unchecked where every live lane's `|iscale| * amax` (the most
/// any `|iscale * x|` can be) is in range and its values finite (see [`in_range`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn qx_levels<S: Lane>(
    nmax: f32,
    iscale: &[S; K],
    amax: &[S; K],
    [alive, finite]: [&[S::Mask; K]; 2],
    x: &[[S; K]; QK],
    w: &[[S; K]; QK],
    wx: &[[S; K]; QK],
    l: &mut [[S; K]; QK],
) -> ([S; K], [S; K]) {
    let mut bound = [S::splat(0.0); K];
    for k in 0..K {
        bound[k] = iscale[k].abs() * amax[k];
    }
    if in_range::<S>(alive, finite, &bound) {
        qx_pass::<S, false>(nmax, iscale, x, w, wx, l)
    } else {
        qx_pass::<S, true>(nmax, iscale, x, w, wx, l)
    }
}

/// llama.cpp's `make_qx_quants(32, nmax, x, L, 1, w)` (weights given) on `8 * K` blocks:
/// per block the scale, and in `levels` the levels as stored (`0..2 * nmax`, the signed level
/// plus `nmax`; all 0 in a block of zeros, whose scale is 0).
#[inline(always)]
fn qx_fit<S: Lane>(
    nmax: f32,
    x: &[[S; K]; QK],
    w: &[[S; K]; QK],
    levels: &mut [[S; K]; QK],
) -> [S; K] {
    let zero = S::splat(0.0);
    let never = [zero.ne(zero); K];
    // The first value of largest magnitude.
    let (mut max, mut amax) = ([zero; K], [zero; K]);
    let mut wx = [[zero; K]; QK];
    for i in 0..QK {
        for k in 0..K {
            let ax = x[i][k].abs();
            let gt = ax.gt(amax[k]);
            amax[k] = S::select(gt, ax, amax[k]);
            max[k] = S::select(gt, x[i][k], max[k]);
            wx[i][k] = w[i][k] * x[i][k];
        }
    }
    let mut alive = never;
    let mut iscale = [zero; K];
    for k in 0..K {
        alive[k] = !amax[k].lt(S::splat(GROUP_MAX_EPS));
        iscale[k] = S::splat(-nmax) / max[k];
    }
    let finite = finite(x);
    let live = [&alive, &finite];
    let (mut sumlx, mut suml2) = qx_levels(nmax, &iscale, &amax, live, x, w, &wx, levels);
    let (mut scale, mut best) = ([zero; K], [zero; K]);
    for k in 0..K {
        // `suml2 ? sumlx / suml2 : 0` (NaN counts as true in C too).
        scale[k] = S::select(suml2[k].ne(zero), sumlx[k] / suml2[k], zero);
        best[k] = scale[k] * sumlx[k];
    }
    let mut cand = [[zero; K]; QK];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let num = S::splat(-(nmax + 0.1 * is as f32));
        for k in 0..K {
            iscale[k] = num / max[k];
        }
        (sumlx, suml2) = qx_levels(nmax, &iscale, &amax, live, x, w, &wx, &mut cand);
        let mut take = never;
        for k in 0..K {
            take[k] = suml2[k].gt(zero) & (sumlx[k] * sumlx[k]).gt(best[k] * suml2[k]);
        }
        if !k::any::<S, K>(&take) {
            continue;
        }
        for i in 0..QK {
            for k in 0..K {
                levels[i][k] = S::select(take[k], cand[i][k], levels[i][k]);
            }
        }
        for k in 0..K {
            scale[k] = S::select(take[k], sumlx[k] / suml2[k], scale[k]);
            best[k] = S::select(take[k], scale[k] * sumlx[k], best[k]);
        }
    }
    let off = S::splat(nmax);
    for i in 0..QK {
        for k in 0..K {
            levels[i][k] = S::select(alive[k], levels[i][k] + off, zero);
        }
    }
    for k in 0..K {
        scale[k] = S::select(alive[k], scale[k], zero);
    }
    scale
}

/// One pass of `make_qkx3_quants`: the levels of `iscale * (x - min)` clamped to `[0, nmax]`
/// into `l`, and the sums `sum w*l`, `sum w*l*l`, `sum w*l*x` in element order.
#[inline(always)]
fn qkx3_pass<S: Lane, const CHECKED: bool>(
    nmax: f32,
    iscale: &[S; K],
    min: &[S; K],
    x: &[[S; K]; QK],
    w: &[[S; K]; QK],
    l: &mut [[S; K]; QK],
) -> [[S; K]; 3] {
    let zero = S::splat(0.0);
    let (mut sum_l, mut sum_l2, mut sum_xl) = ([zero; K], [zero; K], [zero; K]);
    for i in 0..QK {
        for k in 0..K {
            let li = level::<S, CHECKED>(iscale[k] * (x[i][k] - min[k]), 0.0, nmax);
            l[i][k] = li;
            let wl = w[i][k] * li;
            sum_l[k] = sum_l[k] + wl;
            sum_l2[k] = sum_l2[k] + wl * li;
            sum_xl[k] = sum_xl[k] + wl * x[i][k];
        }
    }
    [sum_l, sum_l2, sum_xl]
}

/// What decides whether a `make_qkx3_quants` pass may round unchecked: each block's largest
/// and smallest value, which blocks are fitted, which are finite.
struct Live<'a, S: Lane> {
    max: &'a [S; K],
    xmin: &'a [S; K],
    alive: &'a [S::Mask; K],
    finite: &'a [S::Mask; K],
}

/// [`qkx3_pass`] at `iscale` from `min`, unchecked where every live lane's largest `|iscale *
/// (x - min)|` (at the block's smallest or largest value) is in range (see [`in_range`]). The
/// minimum a step takes moves the next steps' grid, as in llama.cpp, and may lie above the
/// smallest value.
#[inline(always)]
fn qkx3_levels<S: Lane>(
    nmax: f32,
    iscale: &[S; K],
    min: &[S; K],
    live: &Live<'_, S>,
    x: &[[S; K]; QK],
    w: &[[S; K]; QK],
    l: &mut [[S; K]; QK],
) -> [[S; K]; 3] {
    let mut bound = [S::splat(0.0); K];
    for k in 0..K {
        let (hi, lo) = ((live.max[k] - min[k]).abs(), (live.xmin[k] - min[k]).abs());
        bound[k] = iscale[k].abs() * S::select(lo.gt(hi), lo, hi);
    }
    if in_range::<S>(live.alive, live.finite, &bound) {
        qkx3_pass::<S, false>(nmax, iscale, min, x, w, l)
    } else {
        qkx3_pass::<S, true>(nmax, iscale, min, x, w, l)
    }
}

/// `sum w * (scale * l + min - x)^2` in element order: the error `make_qkx3_quants` compares.
#[inline(always)]
fn qkx3_mad<S: Lane>(
    scale: &[S; K],
    min: &[S; K],
    l: &[[S; K]; QK],
    x: &[[S; K]; QK],
    w: &[[S; K]; QK],
) -> [S; K] {
    let mut mad = [S::splat(0.0); K];
    for i in 0..QK {
        for k in 0..K {
            let diff = scale[k] * l[i][k] + min[k] - x[i][k];
            mad[k] = mad[k] + w[i][k] * (diff * diff);
        }
    }
    mad
}

/// llama.cpp's `make_qkx3_quants(32, nmax, x, w, L, &the_min, Laux, -0.9f, 0.05f, 36, false)`
/// on `8 * K` blocks: per block `(scale, min)` (llama.cpp's `-the_min`: a block dequantizes to
/// `scale * l + min`), and in `levels` the levels (`0..=nmax`).
#[inline(always)]
fn qkx3_fit<S: Lane>(
    nmax: f32,
    x: &[[S; K]; QK],
    w: &[[S; K]; QK],
    levels: &mut [[S; K]; QK],
) -> ([S; K], [S; K]) {
    const RMIN: f32 = -0.9;
    const RDELTA: f32 = 0.05;
    const NSTEP: i32 = 36;
    let zero = S::splat(0.0);
    let never = [zero.ne(zero); K];
    let (mut xmin, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = [zero; K];
    for k in 0..K {
        sum_x[k] = sum_w[k] * x[0][k];
    }
    for i in 1..QK {
        for k in 0..K {
            xmin[k] = S::select(x[i][k].lt(xmin[k]), x[i][k], xmin[k]);
            max[k] = S::select(x[i][k].gt(max[k]), x[i][k], max[k]);
            sum_w[k] = sum_w[k] + w[i][k];
            sum_x[k] = sum_x[k] + w[i][k] * x[i][k];
        }
    }
    let finite = finite(x);
    let mut alive = never;
    let (mut min, mut iscale, mut scale) = ([zero; K], [zero; K], [zero; K]);
    let nmax_s = S::splat(nmax);
    for k in 0..K {
        min[k] = S::select(xmin[k].gt(zero), zero, xmin[k]);
        // llama.cpp returns early where `max <= min` (levels 0, scale 0).
        alive[k] = !max[k].le(min[k]);
        iscale[k] = nmax_s / (max[k] - min[k]);
        scale[k] = S::splat(1.0) / iscale[k];
    }
    let live = Live {
        max: &max,
        xmin: &xmin,
        alive: &alive,
        finite: &finite,
    };
    qkx3_levels(nmax, &iscale, &min, &live, x, w, levels);
    let mut best_mad = qkx3_mad(&scale, &min, levels, x, w);
    let mut aux = [[zero; K]; QK];
    for is in 0..=NSTEP {
        let num = S::splat(RMIN + RDELTA * is as f32 + nmax);
        for k in 0..K {
            iscale[k] = num / (max[k] - min[k]);
        }
        let [sum_l, sum_l2, sum_xl] = qkx3_levels(nmax, &iscale, &min, &live, x, w, &mut aux);
        let (mut fit, mut this_scale, mut this_min) = (never, [zero; K], [zero; K]);
        for k in 0..K {
            let d = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            fit[k] = alive[k] & d.gt(zero);
            this_scale[k] = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / d;
            this_min[k] = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / d;
            let above = this_min[k].gt(zero);
            this_min[k] = S::select(above, zero, this_min[k]);
            this_scale[k] = S::select(above, sum_xl[k] / sum_l2[k], this_scale[k]);
        }
        if !k::any::<S, K>(&fit) {
            continue;
        }
        let mad = qkx3_mad(&this_scale, &this_min, &aux, x, w);
        let mut take = never;
        for k in 0..K {
            take[k] = fit[k] & mad[k].lt(best_mad[k]);
        }
        if !k::any::<S, K>(&take) {
            continue;
        }
        for i in 0..QK {
            for k in 0..K {
                levels[i][k] = S::select(take[k], aux[i][k], levels[i][k]);
            }
        }
        for k in 0..K {
            best_mad[k] = S::select(take[k], mad[k], best_mad[k]);
            scale[k] = S::select(take[k], this_scale[k], scale[k]);
            min[k] = S::select(take[k], this_min[k], min[k]);
        }
    }
    for i in 0..QK {
        for k in 0..K {
            levels[i][k] = S::select(alive[k], levels[i][k], zero);
        }
    }
    for k in 0..K {
        scale[k] = S::select(alive[k], scale[k], zero);
    }
    (scale, min)
}

/// The low nibbles of levels `j` and `j + 16` in byte `j`, as every type here packs them.
#[inline(always)]
fn pack4(l: &[u8; QK], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (l[j] & 0x0F) | ((l[j + 16] & 0x0F) << 4);
    }
}

/// One block of type `T` from its levels, scale and minimum (unused by q4_0 and q5_0), laid out
/// as ggml's `block_q4_0` ... `block_q5_1`.
#[inline(always)]
fn write_block<const T: u8>(l: &[u8; QK], d: f32, min: f32, out: &mut [u8]) {
    out[..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    // llama.cpp stores `-the_min`, which is `min` exactly.
    let m = f16::from_f32(min).to_bits().to_le_bytes();
    match T {
        Q4_0 => pack4(l, &mut out[2..]),
        Q4_1 => {
            out[2..4].copy_from_slice(&m);
            pack4(l, &mut out[4..]);
        }
        Q5_0 => {
            let (qh, qs) = out[2..].split_at_mut(4);
            pack5(l, qh, qs);
        }
        _ => {
            out[2..4].copy_from_slice(&m);
            let (qh, qs) = out[4..].split_at_mut(4);
            pack5(l, qh, qs);
        }
    }
}

/// Panics unless `rows` are whole rows of `importance.len()` columns (a positive multiple of
/// 32) and `out` holds exactly their `bytes`-byte blocks.
fn check_sizes(rows: &[f32], importance: &[f32], out: &[u8], bytes: usize) {
    let n = importance.len();
    assert!(
        n > 0 && n.is_multiple_of(QK) && rows.len().is_multiple_of(n),
        "{} values are not whole rows of {n} (a multiple of {QK}) columns",
        rows.len()
    );
    assert_eq!(
        out.len(),
        rows.len() / QK * bytes,
        "output size for {} values",
        rows.len()
    );
}

/// llama.cpp's `quantize_q*` (a loop over rows) and `quantize_row_q*_impl` (per row `sigma2`,
/// per block the weights and the fit) for type `T`, the fits run on [`GROUP`] blocks at a time
/// (a short last group padded with blocks of zeros, whose output is dropped). Sizes are checked
/// by the caller.
#[inline(always)]
fn weighted_rows<S: Lane, const T: u8>(rows: &[f32], importance: &[f32], out: &mut [u8]) {
    let bytes = block_bytes(T);
    let n = importance.len();
    let per_row = n / QK;
    let blocks = rows.len() / QK;
    let mut sigma2 = Vec::with_capacity(rows.len() / n);
    for x in rows.chunks_exact(n) {
        let mut sum_x2 = 0f32;
        for &v in x {
            sum_x2 += v * v;
        }
        sigma2.push(sum_x2 / n as f32);
    }
    let (mut xg, mut wg) = ([0f32; GROUP * QK], [0f32; GROUP * QK]);
    let mut first = 0;
    while first < blocks {
        let count = (blocks - first).min(GROUP);
        for b in 0..GROUP {
            let (xd, wd) = (&mut xg[b * QK..(b + 1) * QK], &mut wg[b * QK..(b + 1) * QK]);
            if b >= count {
                xd.fill(0.0);
                wd.fill(0.0);
                continue;
            }
            let block = first + b;
            let xs = &rows[block * QK..(block + 1) * QK];
            let qw = &importance[block % per_row * QK..][..QK];
            let s2 = sigma2[block / per_row];
            for j in 0..QK {
                xd[j] = xs[j];
                wd[j] = qw[j] * (s2 + xs[j] * xs[j]).sqrt();
            }
        }
        let x = k::transpose::<S, K, QK>(&xg);
        let w = k::transpose::<S, K, QK>(&wg);
        let mut levels = [[S::splat(0.0); K]; QK];
        let (scale, min) = match T {
            Q4_0 => (qx_fit(8.0, &x, &w, &mut levels), [S::splat(0.0); K]),
            Q5_0 => (qx_fit(16.0, &x, &w, &mut levels), [S::splat(0.0); K]),
            Q4_1 => qkx3_fit(15.0, &x, &w, &mut levels),
            _ => qkx3_fit(31.0, &x, &w, &mut levels),
        };
        let mut l = [[0u8; QK]; GROUP];
        for i in 0..QK {
            for k in 0..K {
                let a = levels[i][k].to_array();
                for j in 0..8 {
                    l[8 * k + j][i] = a[j] as u8;
                }
            }
        }
        let (mut d, mut m) = ([0f32; GROUP], [0f32; GROUP]);
        k::flatten(&scale, &mut d);
        k::flatten(&min, &mut m);
        for b in 0..count {
            let at = (first + b) * bytes;
            write_block::<T>(&l[b], d[b], m[b], &mut out[at..at + bytes]);
        }
        first += GROUP;
    }
}

/// Defines the public kernel `$name` for type `$t`: checks the sizes, then runs
/// [`weighted_rows`] with AVX2 lanes where the CPU has AVX2 (`ferry_kernels::cpu::features`; off under `FERRY_PORTABLE_KERNELS`), with
/// portable lanes otherwise (`$portable`, also tested against the AVX2 build). Both give the same
/// bytes.
macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident, $portable:ident, $avx2:ident, $t:ident) => {
        $(#[$doc])*
        pub fn $name(rows: &[f32], importance: &[f32], out: &mut [u8]) {
            check_sizes(rows, importance, out, block_bytes($t));
            #[cfg(target_arch = "x86_64")]
            if ferry_kernels::cpu::features().avx2 {
                // SAFETY: the CPU supports AVX2 (ferry_kernels::cpu::features, checked just above).
                return unsafe { $avx2(rows, importance, out) };
            }
            $portable(rows, importance, out)
        }

        /// The portable build of the kernel of the same type.
        fn $portable(rows: &[f32], importance: &[f32], out: &mut [u8]) {
            weighted_rows::<Portable, $t>(rows, importance, out)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2(rows: &[f32], importance: &[f32], out: &mut [u8]) {
            weighted_rows::<Avx2, $t>(rows, importance, out)
        }
    };
}

kernel!(
    /// Importance-weighted q4_0 of whole rows, byte-identical to llama.cpp's
    /// `quantize_q4_0(rows, out, nrows, n_per_row, importance)`: 18-byte blocks of the f16
    /// scale and the 4-bit levels `q` (dequantized as `(q - 8) * scale`).
    ///
    /// # Panics
    ///
    /// If `importance.len()` (the row width) is not a positive multiple of 32, `rows.len()`
    /// not a multiple of it, or `out.len()` not 18 bytes per 32 values.
    q4_0, q4_0_portable, q4_0_avx2, Q4_0
);
kernel!(
    /// Importance-weighted q4_1 of whole rows, byte-identical to llama.cpp's `quantize_q4_1`:
    /// 20-byte blocks of the f16 scale, the f16 minimum and the 4-bit levels.
    ///
    /// # Panics
    ///
    /// As [`q4_0`], with 20 bytes per 32 values.
    q4_1, q4_1_portable, q4_1_avx2, Q4_1
);
kernel!(
    /// Importance-weighted q5_0 of whole rows, byte-identical to llama.cpp's `quantize_q5_0`:
    /// 22-byte blocks of the f16 scale, the fifth bits (`u32`, bit `j` for element `j`) and the
    /// low nibbles.
    ///
    /// # Panics
    ///
    /// As [`q4_0`], with 22 bytes per 32 values.
    q5_0, q5_0_portable, q5_0_avx2, Q5_0
);
kernel!(
    /// Importance-weighted q5_1 of whole rows, byte-identical to llama.cpp's `quantize_q5_1`:
    /// 24-byte blocks of the f16 scale, the f16 minimum, the fifth bits and the low nibbles.
    ///
    /// # Panics
    ///
    /// As [`q4_0`], with 24 bytes per 32 values.
    q5_1, q5_1_portable, q5_1_avx2, Q5_1
);

#[cfg(test)]
mod tests {
    use super::*;

    // A plain scalar transcription of llama.cpp's C (`make_qx_quants`, `make_qkx3_quants` and
    // the `quantize_row_q*_impl` loops), the reference for the lane kernels.

    /// llama.cpp's `make_qx_quants(32, nmax, x, L, 1, qw)` (weights given): the scale, with the
    /// levels (`0..2 * nmax`, the signed level plus `nmax`) in `out`.
    fn make_qx_quants(nmax: i32, x: &[f32; QK], qw: &[f32; QK], out: &mut [u8; QK]) -> f32 {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            *out = [0; QK];
            return 0.0;
        }
        let nmax_f = nmax as f32;
        let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        let mut iscale = -nmax_f / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for i in 0..QK {
            let l = level(iscale, x[i]);
            out[i] = (l + nmax) as u8;
            let (w, lf) = (qw[i], l as f32);
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
        let mut best = scale * sumlx;
        for is in -9..=9 {
            if is == 0 {
                continue;
            }
            iscale = -(nmax_f + 0.1 * is as f32) / max;
            (sumlx, suml2) = (0.0, 0.0);
            for i in 0..QK {
                let (w, lf) = (qw[i], level(iscale, x[i]) as f32);
                sumlx += w * x[i] * lf;
                suml2 += w * lf * lf;
            }
            if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
                for i in 0..QK {
                    out[i] = (level(iscale, x[i]) + nmax) as u8;
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        scale
    }

    /// llama.cpp's `make_qkx3_quants(32, nmax, x, weights, L, &the_min, Laux, -0.9f, 0.05f, 36,
    /// false)`: `(scale, the_min)`, with the levels (`0..=nmax`) in `out`. A block dequantizes to
    /// `scale * l - the_min`.
    fn make_qkx3_quants(
        nmax: i32,
        x: &[f32; QK],
        weights: &[f32; QK],
        out: &mut [u8; QK],
    ) -> (f32, f32) {
        const RMIN: f32 = -0.9;
        const RDELTA: f32 = 0.05;
        const NSTEP: i32 = 36;
        let (mut min, mut max) = (x[0], x[0]);
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..QK {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            let w = weights[i];
            sum_w += w;
            sum_x += w * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max <= min {
            *out = [0; QK];
            return (0.0, -min);
        }
        let nmax_f = nmax as f32;
        let mut iscale = nmax_f / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_mad = 0f32;
        for i in 0..QK {
            let l = nearest_int(iscale * (x[i] - min));
            out[i] = l.clamp(0, nmax) as u8;
            let diff = scale * f32::from(out[i]) + min - x[i];
            best_mad += weights[i] * (diff * diff);
        }
        let mut aux = [0u8; QK];
        for is in 0..=NSTEP {
            iscale = (RMIN + RDELTA * is as f32 + nmax_f) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
            for i in 0..QK {
                let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
                aux[i] = l as u8;
                let (w, lf) = (weights[i], l as f32);
                sum_l += w * lf;
                sum_l2 += w * lf * lf;
                sum_xl += w * lf * x[i];
            }
            let d = sum_w * sum_l2 - sum_l * sum_l;
            if d > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut mad = 0f32;
                for i in 0..QK {
                    let diff = this_scale * f32::from(aux[i]) + this_min - x[i];
                    mad += weights[i] * (diff * diff);
                }
                if mad < best_mad {
                    *out = aux;
                    best_mad = mad;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }

    /// llama.cpp's `quantize_q*` for type `t`, one block at a time with the fits above.
    fn reference(t: u8, rows: &[f32], importance: &[f32]) -> Vec<u8> {
        let (n, bytes) = (importance.len(), block_bytes(t));
        let mut out = vec![0u8; rows.len() / QK * bytes];
        let mut dst = out.chunks_exact_mut(bytes);
        for x in rows.chunks_exact(n) {
            let mut sum_x2 = 0f32;
            for &v in x {
                sum_x2 += v * v;
            }
            let sigma2 = sum_x2 / n as f32;
            for (xb, qw) in x.chunks_exact(QK).zip(importance.chunks_exact(QK)) {
                let xb: &[f32; QK] = xb.try_into().unwrap();
                let mut w = [0f32; QK];
                for j in 0..QK {
                    w[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
                let mut l = [0u8; QK];
                let (d, min) = match t {
                    Q4_0 => (make_qx_quants(8, xb, &w, &mut l), 0.0),
                    Q5_0 => (make_qx_quants(16, xb, &w, &mut l), 0.0),
                    Q4_1 => {
                        let (d, the_min) = make_qkx3_quants(15, xb, &w, &mut l);
                        (d, -the_min)
                    }
                    _ => {
                        let (d, the_min) = make_qkx3_quants(31, xb, &w, &mut l);
                        (d, -the_min)
                    }
                };
                match t {
                    Q4_0 => write_block::<Q4_0>(&l, d, min, dst.next().unwrap()),
                    Q4_1 => write_block::<Q4_1>(&l, d, min, dst.next().unwrap()),
                    Q5_0 => write_block::<Q5_0>(&l, d, min, dst.next().unwrap()),
                    _ => write_block::<Q5_1>(&l, d, min, dst.next().unwrap()),
                }
            }
        }
        out
    }

    /// Rows of 96 (three blocks) that reach every corner of the fits: noise, blocks of zeros,
    /// constant blocks, one-signed blocks, blocks spanning less than 4e-38 (whose inverse
    /// range overflows), values whose squares overflow (infinite weights), values whose range
    /// overflows, and rows holding infinities and NaN.
    fn corner_rows() -> Vec<f32> {
        let noise = crate::quant::tests_sample(96 * 8);
        let mut rows = noise.clone();
        let mut push = |f: &dyn Fn(usize) -> f32| rows.extend((0..96).map(f));
        push(&|i| if i < 32 { 0.0 } else { noise[i] });
        push(&|i| if i < 32 { 0.25 } else { -noise[i].abs() - 0.5 });
        push(&|i| match i {
            0 => 1e-40,
            1..32 => 0.0,
            32..64 => 1e-38 + (i % 3) as f32 * 1e-39,
            _ => -3e-38 * (i % 2) as f32,
        });
        push(&|i| noise[i] * 1e30);
        push(&|i| {
            if i % 2 == 0 {
                3e38
            } else {
                -3e38 * noise[i].abs()
            }
        });
        push(&|i| noise[i] * 1e-20);
        push(&|i| match i % 37 {
            0 => f32::INFINITY,
            5 => f32::NAN,
            9 => f32::NEG_INFINITY,
            _ => noise[i],
        });
        // Halves of levels at the first scale (ties, to even in llama.cpp).
        push(&|i| (i % 33) as f32 / 16.0 - 1.0);
        rows
    }

    #[test]
    fn lanes_are_the_scalar_transcription_of_llama_cpp() {
        let rows = corner_rows();
        let mut imp: Vec<f32> = (0..96).map(|j| 0.5 + (j % 7) as f32 * 3.0).collect();
        imp[3] = 0.0;
        imp[64..96].iter_mut().for_each(|w| *w = 0.0);
        type Pair = (u8, Kernel, Kernel);
        let kernels: [Pair; 4] = [
            (Q4_0, q4_0, q4_0_portable),
            (Q4_1, q4_1, q4_1_portable),
            (Q5_0, q5_0, q5_0_portable),
            (Q5_1, q5_1, q5_1_portable),
        ];
        for (t, fast, portable) in kernels {
            let want = reference(t, &rows, &imp);
            for f in [fast, portable] {
                let mut got = vec![0u8; want.len()];
                f(&rows, &imp, &mut got);
                for (b, (g, w)) in got
                    .chunks(block_bytes(t))
                    .zip(want.chunks(block_bytes(t)))
                    .enumerate()
                {
                    assert_eq!(g, w, "type {t}, block {b}");
                }
            }
        }
    }

    /// Weighted kernels spend their levels where the importance is: on a row whose importance
    /// is skewed (every 7th column 1000 times the rest), the importance-weighted squared error
    /// is well below that of the plain kernels, which ignore it.
    #[test]
    fn importance_cuts_the_weighted_error() {
        let cols = 576;
        let x = crate::quant::tests_sample(4 * cols);
        let imp: Vec<f32> = (0..cols)
            .map(|j| if j % 7 == 0 { 1000.0 } else { 1.0 })
            .collect();
        let weighted_error = |q: &[f32]| -> f64 {
            x.iter()
                .zip(q)
                .enumerate()
                .map(|(i, (a, b))| f64::from(imp[i % cols]) * f64::from(a - b).powi(2))
                .sum()
        };
        for dtype in [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1] {
            let plain = crate::quant::quantize(&x, dtype).unwrap();
            let mut weighted = vec![0u8; plain.len()];
            kernel(dtype).unwrap()(&x, &imp, &mut weighted);
            let back = |q: &[u8]| crate::quant::dequantize(q, dtype, x.len()).unwrap();
            let (ep, ew) = (
                weighted_error(&back(&plain)),
                weighted_error(&back(&weighted)),
            );
            assert!(ew < 0.7 * ep, "{dtype}: weighted {ew:.4e}, plain {ep:.4e}");
        }
        assert!(kernel(DType::Q8_0).is_none() && kernel(DType::Q4K).is_none());
    }

    #[test]
    fn nearest_int_is_llama_cpp_s() {
        for (v, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (2.49, 2),
            (-7.6, -8),
            (4_194_303.0, 4_194_303),
            (-4_194_303.0, -4_194_303),
            (f32::NAN, 0),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }
}
