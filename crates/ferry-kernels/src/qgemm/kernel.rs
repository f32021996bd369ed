//! The 6 x 32 int8 register tile: per block of 32 depth, eight steps of one 32-feature weight
//! row pair against four broadcast activation bytes of each row (`vpdpbusd`), then the
//! block's integer dots scaled into f32 accumulators.

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
/// for `mr` rows of `width` at stride `ldc`; the CPU has AVX-512F, BW and VNNI.
pub(super) unsafe fn tile(mr: usize, t: Tile) {
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
        let _ = (mr, t);
        unreachable!("the int8 kernels run only where vnni_available() holds");
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
