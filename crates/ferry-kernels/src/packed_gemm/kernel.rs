//! The 12 x 32 register tile: 24 accumulators, one 32-wide panel row and twelve broadcasts
//! per step of depth.

/// What a tile's accumulators start from.
#[derive(Clone, Copy)]
pub(super) enum Init {
    /// Zero.
    Zero,
    /// The bias row (`width` floats) in every row.
    Bias(*const f32),
    /// The tile's current values in `c` (a later block of depth).
    Accumulate,
}

/// `((k, lda), a, (b, ldb), c, ldc, init, width)` of one tile: see `avx512::kernel`.
pub(super) type TileArgs = (
    (usize, usize),
    *const f32,
    (*const f32, usize),
    *mut f32,
    usize,
    Init,
    usize,
);

/// Runs one `mr x width` tile (mr <= 12, width <= 32) with the kernel for `mr` rows; `PANEL`:
/// `b` is a packed panel (see `avx512::kernel`).
///
/// # Safety
/// As `avx512::kernel`.
pub(super) unsafe fn tile<const ROWS: bool, const PANEL: bool>(mr: usize, args: TileArgs) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller.
    unsafe {
        match mr {
            12 => avx512::kernel::<12, ROWS, PANEL>(args),
            11 => avx512::kernel::<11, ROWS, PANEL>(args),
            10 => avx512::kernel::<10, ROWS, PANEL>(args),
            9 => avx512::kernel::<9, ROWS, PANEL>(args),
            8 => avx512::kernel::<8, ROWS, PANEL>(args),
            7 => avx512::kernel::<7, ROWS, PANEL>(args),
            6 => avx512::kernel::<6, ROWS, PANEL>(args),
            5 => avx512::kernel::<5, ROWS, PANEL>(args),
            4 => avx512::kernel::<4, ROWS, PANEL>(args),
            3 => avx512::kernel::<3, ROWS, PANEL>(args),
            2 => avx512::kernel::<2, ROWS, PANEL>(args),
            _ => avx512::kernel::<1, ROWS, PANEL>(args),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mr, args);
        unreachable!("the packed kernels run only where avx512_available() holds");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Init;

    /// `c[MR x width] = init + a[MR x k] b[k x width]`: element `(r, kk)` of `a` at
    /// `r * lda + kk` when `ROWS`, else at `kk * lda + r` (a packed tile, `lda` 12); row `kk`
    /// of `b` at `b + kk * ldb`, `c` with row stride `ldc`; columns past `width` of `c` and the
    /// bias are neither read nor written. When `PANEL`, `b` is a packed panel (`ldb` 32, rows
    /// of 32 floats zero-padded past `width`: read whole, at a constant stride); else a
    /// row-major matrix read in place, whose rows end at `width` (masked loads).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` holds the MR x k operand as laid out, `b` k rows at stride
    /// `ldb` (32 floats each when `PANEL`, else `width`), `c` MR rows of `width` at stride
    /// `ldc` (initialized when `init` is `Accumulate`), a bias `width` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel<const MR: usize, const ROWS: bool, const PANEL: bool>(
        ((k, lda), a, (b, ldb), c, ldc, init, width): super::TileArgs,
    ) {
        // SAFETY: the caller guarantees every pointer range below.
        unsafe {
            let m0: __mmask16 = if width >= 16 {
                0xFFFF
            } else {
                (1u16 << width) - 1
            };
            let m1: __mmask16 = if width >= 32 {
                0xFFFF
            } else if width > 16 {
                (1u16 << (width - 16)) - 1
            } else {
                0
            };
            let (mut acc0, mut acc1) = match init {
                Init::Zero => ([_mm512_setzero_ps(); MR], [_mm512_setzero_ps(); MR]),
                Init::Bias(p) => (
                    [_mm512_maskz_loadu_ps(m0, p); MR],
                    [_mm512_maskz_loadu_ps(m1, p.wrapping_add(16)); MR],
                ),
                Init::Accumulate => {
                    let mut acc = ([_mm512_setzero_ps(); MR], [_mm512_setzero_ps(); MR]);
                    for r in 0..MR {
                        acc.0[r] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
                        acc.1[r] = _mm512_maskz_loadu_ps(m1, c.wrapping_add(r * ldc + 16));
                    }
                    acc
                }
            };
            // Row pointers only for a row-major `a` (a packed tile may hold fewer than 12 rows
            // of `lda`); the second half of a tile only where it is `width > 16` wide
            // (`wrapping_add`: a masked-off half may start past the end of its buffer).
            let mut rows = [a; MR];
            if ROWS {
                for (r, p) in rows.iter_mut().enumerate() {
                    *p = a.add(r * lda);
                }
            }
            let (mut ap, mut bp) = (a, b);
            for kk in 0..k {
                // A packed panel is read whole (measured: 1-4% faster on the graph's products
                // than masked loads at a run-time stride); a row-major `b` ends at `width`.
                let (b0, b1) = if PANEL {
                    (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)))
                } else {
                    (
                        _mm512_maskz_loadu_ps(m0, bp),
                        _mm512_maskz_loadu_ps(m1, bp.wrapping_add(16)),
                    )
                };
                bp = if PANEL {
                    bp.wrapping_add(32)
                } else {
                    bp.wrapping_add(ldb)
                };
                for r in 0..MR {
                    let av = _mm512_set1_ps(if ROWS { *rows[r].add(kk) } else { *ap.add(r) });
                    acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
                    acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
                }
                if !ROWS {
                    ap = ap.add(lda);
                }
            }
            for r in 0..MR {
                let row = c.add(r * ldc);
                _mm512_mask_storeu_ps(row, m0, acc0[r]);
                _mm512_mask_storeu_ps(row.wrapping_add(16), m1, acc1[r]);
            }
        }
    }
}
