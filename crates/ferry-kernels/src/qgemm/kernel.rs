//! The 6 x 32 int8 register tile: per block of 32 depth, eight steps of one 32-feature weight
//! row pair against four broadcast activation bytes of each row (`vpdpbusd`), then the
//! block's integer dots scaled into f32 accumulators.
//!
//! Without AVX-512 VNNI, an AVX2 build of the same tile: `vpmaddubsw` multiplies unsigned by
//! signed bytes into saturating 16-bit pair sums, then `vpmaddwd` by ones widens them to
//! 32-bit sums. Which products stay exact depends on the weights' largest `|q|`:
//! - up to 64 (every type but q8_0: q4_0 has `|q| <= 8`, q4_1 and q4_k 15, q5_0 16, q5_1
//!   and q5_k 31), the
//!   stored `x + 128` times `q` as in the VNNI build: a pair is within `2 * 255 * qmax`, so
//!   the 16-bit sums of 4, 2 or 1 steps (`qmax` up to 16, 32, 64) fit before widening;
//! - above (q8_0), llama.cpp's sign trick: `|q|` (up to 128) times `x` carrying `q`'s sign
//!   (`|x| <= 127`), a pair within 32,512, widened every step.
//!
//! The integer dots are the VNNI build's exactly, and the float steps are the same operations
//! in the same order (fused multiply-adds included): both builds give the same bits (for
//! finite activations: their quantizers may scale a block holding a NaN differently).

/// One tile's operands; see [`tile`].
pub(super) struct Tile {
    /// Blocks of depth (k / 32).
    pub nb: usize,
    /// The panel's first block (64-byte aligned, `BLOCK_BYTES` per block).
    pub panel: *const u8,
    /// The tile's first activation row (`q + 128`).
    pub xq: *const u8,
    /// Activation row stride (k).
    pub ldx: usize,
    /// Per row and block activation scales, from the tile's first row (stride `nb`).
    pub d: *const f32,
    /// Per row and block `d * sum(q)`, likewise.
    pub dsum: *const f32,
    /// Whether the weight blocks have offsets.
    pub offsets: bool,
    /// The largest `|q|` of the weight blocks.
    pub qmax: u8,
    /// `width` bias values, or null.
    pub bias: *const f32,
    /// The tile's first output.
    pub c: *mut f32,
    /// Output row stride.
    pub ldc: usize,
    /// Valid features of the panel (<= 32).
    pub width: usize,
}

/// Runs one `mr x width` tile (mr <= 6).
///
/// # Safety
/// `panel` holds `nb` panel blocks; `xq` holds `mr` rows of `nb * 32` bytes at stride `ldx`;
/// `d` and `dsum` hold `mr * nb` values; `bias` is null or holds `width` values; `c` has room
/// for `mr` rows of `width` at stride `ldc`; the CPU has AVX-512F, BW and VNNI where `vnni`,
/// AVX2 and FMA where not.
pub(super) unsafe fn tile(mr: usize, t: Tile, vnni: bool) {
    #[cfg(target_arch = "x86_64")]
    if !vnni {
        // SAFETY: forwarded from the caller.
        unsafe { avx2::tile(mr, &t) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller.
    unsafe {
        match (mr, t.offsets) {
            (6, false) => avx512::kernel::<6, false>(&t),
            (5, false) => avx512::kernel::<5, false>(&t),
            (4, false) => avx512::kernel::<4, false>(&t),
            (3, false) => avx512::kernel::<3, false>(&t),
            (2, false) => avx512::kernel::<2, false>(&t),
            (_, false) => avx512::kernel::<1, false>(&t),
            (6, true) => avx512::kernel::<6, true>(&t),
            (5, true) => avx512::kernel::<5, true>(&t),
            (4, true) => avx512::kernel::<4, true>(&t),
            (3, true) => avx512::kernel::<3, true>(&t),
            (2, true) => avx512::kernel::<2, true>(&t),
            (_, true) => avx512::kernel::<1, true>(&t),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mr, t, vnni);
        unreachable!("the int8 kernels run only where available() holds");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// Byte offsets in a panel block: the int8 values, then scales, offsets, corrections.
    const SCALES: usize = 1024;
    const OFFSETS: usize = SCALES + 128;
    const CORRECTIONS: usize = OFFSETS + 128;

    /// Masks of the valid lanes of the two output vectors.
    fn masks(width: usize) -> (__mmask16, __mmask16) {
        let lanes = |w: usize| -> __mmask16 {
            if w >= 16 {
                0xFFFF
            } else {
                ((1u32 << w) - 1) as __mmask16
            }
        };
        (lanes(width), lanes(width.saturating_sub(16)))
    }

    /// See [`super::tile`]; `R` rows, `OFF`: the weight blocks have offsets.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn kernel<const R: usize, const OFF: bool>(t: &Tile) {
        // SAFETY (whole body): every pointer stays inside what the caller guarantees (see
        // `super::tile`): block b of the panel at `panel + b * 1408`, activation bytes
        // `xq + r * ldx + b * 32 + 4 g + 0..4`, scales at `d + r * nb + b`, outputs through
        // masked stores of `width` lanes.
        unsafe {
            let (m0, m1) = masks(t.width);
            let mut y = [[_mm512_setzero_ps(); 2]; R];
            if !t.bias.is_null() {
                let b0 = _mm512_maskz_loadu_ps(m0, t.bias);
                let b1 = _mm512_maskz_loadu_ps(m1, t.bias.add(16));
                for row in y.iter_mut() {
                    *row = [b0, b1];
                }
            }
            for b in 0..t.nb {
                let blk = t.panel.add(b * super::super::BLOCK_BYTES);
                let mut acc = [[_mm512_setzero_si512(); 2]; R];
                for g in 0..8 {
                    let w0 = _mm512_load_si512(blk.add(g * 64) as *const __m512i);
                    let w1 = _mm512_load_si512(blk.add(512 + g * 64) as *const __m512i);
                    for (r, a) in acc.iter_mut().enumerate() {
                        let x4 =
                            (t.xq.add(r * t.ldx + b * 32 + g * 4) as *const i32).read_unaligned();
                        let xv = _mm512_set1_epi32(x4);
                        a[0] = _mm512_dpbusd_epi32(a[0], xv, w0);
                        a[1] = _mm512_dpbusd_epi32(a[1], xv, w1);
                    }
                }
                let s0 = _mm512_load_ps(blk.add(SCALES) as *const f32);
                let s1 = _mm512_load_ps(blk.add(SCALES + 64) as *const f32);
                let c0 = _mm512_load_si512(blk.add(CORRECTIONS) as *const __m512i);
                let c1 = _mm512_load_si512(blk.add(CORRECTIONS + 64) as *const __m512i);
                for (r, (yr, a)) in y.iter_mut().zip(&acc).enumerate() {
                    let dx = _mm512_set1_ps(*t.d.add(r * t.nb + b));
                    let f0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(a[0], c0));
                    let f1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(a[1], c1));
                    yr[0] = _mm512_fmadd_ps(_mm512_mul_ps(f0, s0), dx, yr[0]);
                    yr[1] = _mm512_fmadd_ps(_mm512_mul_ps(f1, s1), dx, yr[1]);
                    if OFF {
                        let o0 = _mm512_load_ps(blk.add(OFFSETS) as *const f32);
                        let o1 = _mm512_load_ps(blk.add(OFFSETS + 64) as *const f32);
                        let ds = _mm512_set1_ps(*t.dsum.add(r * t.nb + b));
                        yr[0] = _mm512_fmadd_ps(o0, ds, yr[0]);
                        yr[1] = _mm512_fmadd_ps(o1, ds, yr[1]);
                    }
                }
            }
            for (r, yr) in y.iter().enumerate() {
                let c = t.c.add(r * t.ldc);
                _mm512_mask_storeu_ps(c, m0, yr[0]);
                _mm512_mask_storeu_ps(c.add(16), m1, yr[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// Byte offsets in a panel block, as in the AVX-512 build.
    const SCALES: usize = 1024;
    const OFFSETS: usize = SCALES + 128;
    const CORRECTIONS: usize = OFFSETS + 128;

    /// Rows one register tile holds (two 8-feature vectors each: 6 integer accumulators).
    const R: usize = 3;

    /// See [`super::tile`]: the `mr x 32` tile as sub-tiles of up to 3 rows by 16 features.
    ///
    /// # Safety
    /// As [`super::tile`], with AVX2 and FMA in place of AVX-512.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(mr: usize, t: &Tile) {
        for half in 0..2 {
            let width = t.width.saturating_sub(16 * half).min(16);
            if width == 0 {
                break;
            }
            for r0 in (0..mr).step_by(R) {
                // SAFETY: rows r0.. of the tile and features 16 * half.. of the panel, inside
                // what the caller guarantees.
                unsafe {
                    match ((mr - r0).min(R), t.qmax) {
                        (3, 0..=16) => unsigned::<3, 4>(t, r0, half, width),
                        (2, 0..=16) => unsigned::<2, 4>(t, r0, half, width),
                        (_, 0..=16) => unsigned::<1, 4>(t, r0, half, width),
                        (3, 17..=32) => unsigned::<3, 2>(t, r0, half, width),
                        (2, 17..=32) => unsigned::<2, 2>(t, r0, half, width),
                        (_, 17..=32) => unsigned::<1, 2>(t, r0, half, width),
                        (3, 33..=64) => unsigned::<3, 1>(t, r0, half, width),
                        (2, 33..=64) => unsigned::<2, 1>(t, r0, half, width),
                        (_, 33..=64) => unsigned::<1, 1>(t, r0, half, width),
                        (3, _) => signed::<3>(t, r0, half, width),
                        (2, _) => signed::<2>(t, r0, half, width),
                        (_, _) => signed::<1>(t, r0, half, width),
                    }
                }
            }
        }
    }

    /// The bias of features `16 * half..16 * half + width` (zeros past `width`, or all zeros
    /// without one), in every row.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn start<const N: usize>(t: &Tile, half: usize, width: usize) -> [[__m256; 2]; N] {
        let mut b = [0f32; 16];
        if !t.bias.is_null() {
            // SAFETY: the caller's `bias` holds the tile's `t.width` values.
            unsafe { std::ptr::copy_nonoverlapping(t.bias.add(16 * half), b.as_mut_ptr(), width) };
        }
        // SAFETY: `b` holds 16 values.
        let (b0, b1) = unsafe {
            (
                _mm256_loadu_ps(b.as_ptr()),
                _mm256_loadu_ps(b.as_ptr().add(8)),
            )
        };
        [[b0, b1]; N]
    }

    /// Adds block `b`'s integer dots `acc`, scaled, to the rows' accumulators `y`: the VNNI
    /// build's float steps.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scale<const N: usize>(
        t: &Tile,
        b: usize,
        r0: usize,
        half: usize,
        acc: &[[__m256i; 2]; N],
        y: &mut [[__m256; 2]; N],
    ) {
        // SAFETY: block b's scale and offset rows at `64 * half` of their 128 bytes; activation
        // scales at `d + r * nb + b` (see `super::tile`).
        unsafe {
            let blk = t.panel.add(b * super::super::BLOCK_BYTES);
            let sc = blk.add(SCALES + 64 * half) as *const f32;
            let (s0, s1) = (_mm256_load_ps(sc), _mm256_load_ps(sc.add(8)));
            for (r, (yr, a)) in y.iter_mut().zip(acc).enumerate() {
                let row = (r0 + r) * t.nb + b;
                let dx = _mm256_set1_ps(*t.d.add(row));
                let f0 = _mm256_cvtepi32_ps(a[0]);
                let f1 = _mm256_cvtepi32_ps(a[1]);
                yr[0] = _mm256_fmadd_ps(_mm256_mul_ps(f0, s0), dx, yr[0]);
                yr[1] = _mm256_fmadd_ps(_mm256_mul_ps(f1, s1), dx, yr[1]);
                if t.offsets {
                    let of = blk.add(OFFSETS + 64 * half) as *const f32;
                    let ds = _mm256_set1_ps(*t.dsum.add(row));
                    yr[0] = _mm256_fmadd_ps(_mm256_load_ps(of), ds, yr[0]);
                    yr[1] = _mm256_fmadd_ps(_mm256_load_ps(of.add(8)), ds, yr[1]);
                }
            }
        }
    }

    /// Stores the rows' `width` outputs.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn finish<const N: usize>(
        t: &Tile,
        r0: usize,
        half: usize,
        width: usize,
        y: &[[__m256; 2]; N],
    ) {
        for (r, yr) in y.iter().enumerate() {
            let mut out = [0f32; 16];
            // SAFETY: `out` holds 16 values; the caller's output row has `width` values at
            // column `16 * half` of the tile.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr(), yr[0]);
                _mm256_storeu_ps(out.as_mut_ptr().add(8), yr[1]);
                let c = t.c.add((r0 + r) * t.ldc + 16 * half);
                std::ptr::copy_nonoverlapping(out.as_ptr(), c, width);
            }
        }
    }

    /// Rows `r0..r0 + N` by features `16 * half..16 * half + width` of the tile, for weights
    /// with `|q| <= 64`: `x + 128` times `q`, the 16-bit pair sums of `G` steps added before
    /// widening, the corrections `128 * sum(q)` taken off as in the VNNI build.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn unsigned<const N: usize, const G: usize>(
        t: &Tile,
        r0: usize,
        half: usize,
        width: usize,
    ) {
        // SAFETY (whole body): block b of the panel at `panel + b * BLOCK_BYTES`, its features
        // 16 * half.. at byte `512 * half` of the int8 lines; activation bytes
        // `xq + r * ldx + b * 32 + 4 g + 0..4` (see `super::tile`).
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut y = start::<N>(t, half, width);
            for b in 0..t.nb {
                let blk = t.panel.add(b * super::super::BLOCK_BYTES);
                let lines = blk.add(512 * half);
                let co = blk.add(CORRECTIONS + 64 * half) as *const __m256i;
                let (c0, c1) = (_mm256_load_si256(co), _mm256_load_si256(co.add(1)));
                let mut acc = [[_mm256_setzero_si256(); 2]; N];
                for g0 in (0..8).step_by(G) {
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xr = t.xq.add((r0 + r) * t.ldx + b * 32);
                        let (mut p0, mut p1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                        for g in g0..g0 + G {
                            let w0 = _mm256_load_si256(lines.add(g * 64) as *const __m256i);
                            let w1 = _mm256_load_si256(lines.add(g * 64 + 32) as *const __m256i);
                            let x =
                                _mm256_set1_epi32((xr.add(g * 4) as *const i32).read_unaligned());
                            p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(x, w0));
                            p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(x, w1));
                        }
                        a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(p0, ones));
                        a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(p1, ones));
                    }
                }
                for a in acc.iter_mut() {
                    a[0] = _mm256_sub_epi32(a[0], c0);
                    a[1] = _mm256_sub_epi32(a[1], c1);
                }
                scale::<N>(t, b, r0, half, &acc, &mut y);
            }
            finish::<N>(t, r0, half, width, &y);
        }
    }

    /// Rows `r0..r0 + N` by features `16 * half..16 * half + width` of the tile, for any
    /// weights: llama.cpp's sign trick on signed activations.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn signed<const N: usize>(t: &Tile, r0: usize, half: usize, width: usize) {
        // SAFETY (whole body): as `unsigned`.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let flip = _mm256_set1_epi8(-128);
            let mut y = start::<N>(t, half, width);
            for b in 0..t.nb {
                let lines = t.panel.add(b * super::super::BLOCK_BYTES + 512 * half);
                let mut acc = [[_mm256_setzero_si256(); 2]; N];
                for g in 0..8 {
                    let w0 = _mm256_load_si256(lines.add(g * 64) as *const __m256i);
                    let w1 = _mm256_load_si256(lines.add(g * 64 + 32) as *const __m256i);
                    let (a0, a1) = (_mm256_abs_epi8(w0), _mm256_abs_epi8(w1));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let x4 = (t.xq.add((r0 + r) * t.ldx + b * 32 + g * 4) as *const i32)
                            .read_unaligned();
                        // `q + 128` back to `q`, then `q` with each weight byte's sign.
                        let x = _mm256_xor_si256(_mm256_set1_epi32(x4), flip);
                        let p0 = _mm256_maddubs_epi16(a0, _mm256_sign_epi8(x, w0));
                        let p1 = _mm256_maddubs_epi16(a1, _mm256_sign_epi8(x, w1));
                        a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(p0, ones));
                        a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(p1, ones));
                    }
                }
                scale::<N>(t, b, r0, half, &acc, &mut y);
            }
            finish::<N>(t, r0, half, width, &y);
        }
    }
}
