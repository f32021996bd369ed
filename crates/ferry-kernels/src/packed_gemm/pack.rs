//! The panel layout of the packed right-hand operand: `ceil(n / 32)` panels of `depth` rows
//! of 32 floats, zero-padded past column `n`.

use rayon::prelude::*;

use super::{MR, NR};

/// Floats of packed output from which [`pack_transposed`] runs its panels in parallel (a
/// weight packed per call: 48k floats at 128 x 384; an encoder's attention head, 2k, stays
/// serial; a decoder's causal head packs its keys in parallel from 512 positions of 64 values,
/// inside the per-head tasks, where rayon's idle threads may take part).
const PAR_PACK: usize = 1 << 15;

/// Makes `out` `len` long, zero-filled when it changes length; a buffer already `len` long is
/// reused as is. Padding positions (past `n` in a partial panel) may then hold stale values
/// from an earlier pack of another shape: harmless, since they only reach output columns past
/// `n`, which the kernel never stores.
fn resize_zeroed(out: &mut Vec<f32>, len: usize) {
    if out.len() != len {
        out.clear();
        out.resize(len, 0.0);
    }
}

/// Packs `rows` rows of `cols` values, row `j` at `src[first + j * stride..]`, as a
/// `rows x cols` matrix in the panel layout the products read (`ceil(cols / 32)` panels of
/// `rows` rows of 32, zero-padded). An empty block packs to nothing.
pub(crate) fn pack_rows(
    src: &[f32],
    (first, stride): (usize, usize),
    (rows, cols): (usize, usize),
    out: &mut Vec<f32>,
) {
    resize_zeroed(out, cols.div_ceil(NR) * rows * NR);
    if out.is_empty() {
        return;
    }
    for (p, panel) in out.chunks_exact_mut(rows * NR).enumerate() {
        let (c0, width) = (p * NR, NR.min(cols - p * NR));
        for (j, dst) in panel.chunks_exact_mut(NR).enumerate() {
            let at = first + j * stride + c0;
            dst[..width].copy_from_slice(&src[at..at + width]);
        }
    }
}

/// Packs the transpose of the same `rows x cols` block as [`pack_rows`]: a `cols x rows`
/// matrix in panel layout (panel `p` holds rows `32p..32p + 32` of the block as columns).
/// An empty block packs to nothing.
pub(crate) fn pack_transposed(
    src: &[f32],
    (first, stride): (usize, usize),
    (rows, cols): (usize, usize),
    out: &mut Vec<f32>,
) {
    resize_zeroed(out, rows.div_ceil(NR) * cols * NR);
    if out.is_empty() {
        return;
    }
    let pack = |(p, panel): (usize, &mut [f32])| {
        let (lines, _) = panel.as_chunks_mut::<NR>();
        for jj in 0..NR.min(rows - p * NR) {
            let at = first + (p * NR + jj) * stride;
            for (line, v) in lines.iter_mut().zip(&src[at..at + cols]) {
                line[jj] = *v;
            }
        }
    };
    if out.len() >= PAR_PACK {
        out.par_chunks_exact_mut(cols * NR)
            .enumerate()
            .for_each(pack);
    } else {
        out.chunks_exact_mut(cols * NR).enumerate().for_each(pack);
    }
}

/// Packs rows `r0..r0 + mr` and depth `k0..k0 + kc` of a left operand stored transposed
/// (element `(r, kk)` at `kk * lda + r`, [`super::Lhs::Cols`]) into `out` as `kc` groups of 12
/// floats (row `r` at position `r`; positions past `mr` keep what they held, the kernel for
/// `mr` rows never reads them). Read in place, each step would load a new line `lda` floats
/// away, for every panel again; packed, the block is read once and walks contiguously.
pub(super) fn pack_cols_tile(
    a: &[f32],
    lda: usize,
    (r0, mr): (usize, usize),
    (k0, kc): (usize, usize),
    out: &mut [f32],
) {
    let (groups, _) = out[..kc * MR].as_chunks_mut::<MR>();
    for (kk, g) in groups.iter_mut().enumerate() {
        let at = (k0 + kk) * lda + r0;
        if mr == MR {
            // A copy of known length: three vector moves, not a call to memmove.
            g.copy_from_slice(&a[at..at + MR]);
        } else {
            g[..mr].copy_from_slice(&a[at..at + mr]);
        }
    }
}
