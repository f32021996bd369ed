//! ferry's matrix multiply on CPUs with AVX-512F: `C = A B (+ bias)` with `B` in 32-column
//! panels or row-major and read in place ([`Rhs`]), and a 12 x 32 register tile (24
//! accumulators; per step of depth, one 32-wide row of `B` against twelve broadcast values of
//! `A`).
//!
//! Three uses: constant weights packed once at graph load ([`PackedMatrix`], [`gemm_packed`]),
//! operands packed per call in parallel products ([`gemm_new`]: a training step's linear
//! layers), and small products on the calling thread ([`gemm_panels`]: attention per head).
//! On one large product it runs at about the rate of the `gemm` crate candle uses (150-160
//! GFLOP/s per core here, near this CPU's peak; `gemm_bench`); what it adds is no per-call
//! packing of constant weights, register-tiled per-head products, a transposed left operand
//! read without copying the whole matrix, a row-major right operand read without any copy,
//! and outputs never zero-filled. Deep products run in
//! equal depth blocks of at most 512 (later blocks start from the partial output). Without
//! AVX-512 ([`avx512_available`]), callers use the `gemm` crate.
//!
//! Modules: `pack` (the panel layout), `kernel` (the register tile).

mod kernel;
mod pack;

use rayon::prelude::*;

use kernel::{tile, Init};
use pack::pack_rows;
pub(crate) use pack::pack_transposed;

/// Columns per packed panel: two 16-lane vectors.
pub(crate) const NR: usize = 32;
/// Rows per register tile.
const MR: usize = 12;
/// Rows of `A` per parallel task (a multiple of [`MR`]).
const MC: usize = 96;
/// Bytes of packed `B` one task walks (its panels stay in L2).
const PANEL_GROUP_BYTES: usize = 256 << 10;
/// Most depth per pass over a panel (deeper products run in equal blocks of at most this):
/// measured, 512 keeps the accumulate passes few without losing to L2 bandwidth (a 256 block
/// was no faster on the encoder's shapes).
const KC: usize = 512;

/// One 64-byte aligned line of 16 floats, so panel rows never straddle cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A `k x n` matrix packed for [`gemm_packed`]: `ceil(n / 32)` panels, each `k` rows of 32
/// floats, zero-padded past column `n`.
#[derive(Clone)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    lines: Vec<Line>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix({} x {})", self.k, self.n)
    }
}

impl PackedMatrix {
    /// Packs the row-major `k x n` matrix `src`. `None` when this CPU has no AVX-512F (the
    /// kernel needs it) or `src` does not hold `k * n` values.
    pub fn pack(src: &[f32], k: usize, n: usize) -> Option<Self> {
        if !avx512_available() || src.len() != k * n || k == 0 || n == 0 {
            return None;
        }
        let mut flat = Vec::new();
        pack_rows(src, (0, n), (k, n), &mut flat);
        let lines = flat
            .chunks_exact(16)
            .map(|c| Line(c.try_into().expect("chunks of 16")))
            .collect();
        Some(PackedMatrix { k, n, lines })
    }

    /// Rows (the inner dimension of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (the output width).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The packed values as floats.
    fn values(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]`, so the lines are 16 contiguous
        // floats each, with no padding between them.
        unsafe {
            std::slice::from_raw_parts(self.lines.as_ptr() as *const f32, self.lines.len() * 16)
        }
    }
}

/// Whether the packed kernels run: the CPU has AVX-512F and `FERRY_PORTABLE_KERNELS` is not
/// set (setting it runs the `gemm` crate and the portable loops instead, to compare the two
/// or to rule the kernels out when chasing a numerical difference). Read once per process.
pub fn avx512_available() -> bool {
    crate::cpu::features().avx512f
}

/// The left operand of a product, `m x depth`.
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    /// Row-major: element `(r, kk)` at `r * ld + kk`.
    Rows(&'a [f32], usize),
    /// Stored transposed: element `(r, kk)` at `kk * ld + r`.
    Cols(&'a [f32], usize),
}

impl<'a> Lhs<'a> {
    /// The slice, its leading dimension and whether it is stored transposed, after checking
    /// that it holds an `m x depth` matrix (panics otherwise: a caller bug).
    fn checked(self, m: usize, depth: usize) -> (&'a [f32], usize, bool) {
        let (a, ld, at, end) = match self {
            Lhs::Rows(a, ld) => (a, ld, false, (m - 1) * ld + depth),
            Lhs::Cols(a, ld) => (a, ld, true, (depth - 1) * ld + m),
        };
        assert!(
            a.len() >= end && ld >= if at { m } else { depth },
            "packed GEMM: left operand too short"
        );
        (a, ld, at)
    }
}

/// The right operand of a product, `depth x n`.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    /// In the panel layout of [`pack_rows`] / [`pack_transposed`] (contiguous 32-wide rows).
    Panels(&'a [f32]),
    /// Row-major, read in place: element `(kk, j)` at `kk * ld + j`. No copy; each step of
    /// depth loads one 128-byte row segment `ld` floats further on, which the hardware
    /// prefetcher follows. Callers take it through [`rows_rhs`].
    Rows(&'a [f32], usize),
}

/// The row-major `depth x n` matrix at `b[first..]` (row stride `ld`) as a right operand:
/// read in place ([`Rhs::Rows`]), or packed into `buf` where the stride is a multiple of 4 KiB
/// (every row would then map to the same few cache sets, and a deep block would not stay in
/// cache; the operands measured in place had strides of 0.5-4.5 KiB).
pub(crate) fn rows_rhs<'a>(
    b: &'a [f32],
    (first, ld): (usize, usize),
    (depth, n): (usize, usize),
    buf: &'a mut Vec<f32>,
) -> Rhs<'a> {
    if ld.is_multiple_of(1024) && depth > 1 {
        pack_rows(b, (first, ld), (depth, n), buf);
        Rhs::Panels(buf)
    } else {
        Rhs::Rows(&b[first..], ld)
    }
}

impl Rhs<'_> {
    /// Checks that it holds a `depth x n` matrix (panics otherwise: a caller bug).
    fn check(self, depth: usize, n: usize) {
        let ok = match self {
            Rhs::Panels(b) => b.len() >= n.div_ceil(NR) * depth * NR,
            Rhs::Rows(b, ld) => ld >= n && b.len() >= (depth - 1) * ld + n,
        };
        assert!(ok, "packed GEMM: right operand too short");
    }

    /// Where panel `p` starts at depth `k0`, and the stride from one depth row to the next.
    fn panel(self, p: usize, k0: usize, depth: usize) -> (*const f32, usize) {
        match self {
            Rhs::Panels(b) => (b[(p * depth + k0) * NR..].as_ptr(), NR),
            Rhs::Rows(b, ld) => (b[k0 * ld + p * NR..].as_ptr(), ld),
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of output tiles (see `Product::block`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// One checked product `c = a B + bias` (see [`gemm_new`]), which [`Product::block`] runs
/// part by part.
struct Product<'a> {
    depth: usize,
    n: usize,
    a: &'a [f32],
    lda: usize,
    at: bool,
    b: Rhs<'a>,
    c: OutPtr,
    ldc: usize,
    bias: Option<&'a [f32]>,
    epilogue: &'a (dyn Fn(&mut [f32]) + Sync),
}

impl<'a> Product<'a> {
    /// Checks every operand against the shapes (panics on a mismatch: a caller bug). The
    /// output must have room for `m` rows of `n` at stride `ldc`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        (m, depth, n): (usize, usize, usize),
        a: Lhs<'a>,
        b: Rhs<'a>,
        (c, c_len, ldc): (*mut f32, usize, usize),
        bias: Option<&'a [f32]>,
        epilogue: &'a (dyn Fn(&mut [f32]) + Sync),
    ) -> Self {
        assert!(avx512_available(), "the packed GEMM needs AVX-512F");
        assert!(m > 0 && depth > 0 && n > 0, "packed GEMM: empty product");
        let (a, lda, at) = a.checked(m, depth);
        b.check(depth, n);
        assert!(
            bias.is_none_or(|v| v.len() == n) && ldc >= n && c_len >= (m - 1) * ldc + n,
            "packed GEMM: bias or output too short"
        );
        Product {
            depth,
            n,
            a,
            lda,
            at,
            b,
            c: OutPtr(c),
            ldc,
            bias,
            epilogue,
        }
    }

    /// Computes output rows `rows` x panels `cols` in full (every depth block), then runs the
    /// epilogue on them. Per block of at most `KC` depth, every panel in `cols` walks its slice
    /// once per 12-row tile, from L1 or L2. A row-major `a` is read in place (twelve
    /// sequential streams); a transposed one is first packed into contiguous 12-row tiles.
    fn block(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        thread_local! {
            static COLS_TILES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let Product {
            depth, n, lda, at, ..
        } = *self;
        COLS_TILES.with_borrow_mut(|tiles| {
            let kc_max = depth.div_ceil(depth.div_ceil(KC));
            for k0 in (0..depth).step_by(kc_max) {
                let kc = kc_max.min(depth - k0);
                let tile_len = kc * MR;
                if at {
                    let needed = rows.len().div_ceil(MR) * tile_len;
                    if tiles.len() < needed {
                        tiles.resize(needed, 0.0);
                    }
                    for (t, r0) in rows.clone().step_by(MR).enumerate() {
                        let mr = MR.min(rows.end - r0);
                        let out = &mut tiles[t * tile_len..(t + 1) * tile_len];
                        pack::pack_cols_tile(self.a, lda, (r0, mr), (k0, kc), out);
                    }
                }
                for p in cols.clone() {
                    let width = NR.min(n - p * NR);
                    let b = self.b.panel(p, k0, depth);
                    for (t, r0) in rows.clone().step_by(MR).enumerate() {
                        let mr = MR.min(rows.end - r0);
                        let init = match (k0, self.bias) {
                            (0, Some(bias)) => Init::Bias(bias[p * NR..].as_ptr()),
                            (0, None) => Init::Zero,
                            _ => Init::Accumulate,
                        };
                        // SAFETY: `new` checked that `a` holds the m x depth operand (and the
                        // packed tile t holds kc x 12 values), `b` the depth x n operand (kc
                        // rows of `width` from `b`) and the output m rows of n at stride ldc,
                        // so every pointer below stays inside them; the tile (r0, p) belongs
                        // to this block alone (callers give blocks disjoint rows or panels);
                        // the CPU has AVX-512F (checked by `new`).
                        unsafe {
                            let c = self.c.0.add(r0 * self.ldc + p * NR);
                            let panel = matches!(self.b, Rhs::Panels(_));
                            let args = if at {
                                let a = tiles[t * tile_len..].as_ptr();
                                ((kc, MR), a, b, c, self.ldc, init, width)
                            } else {
                                let a = self.a.as_ptr().add(r0 * lda + k0);
                                ((kc, lda), a, b, c, self.ldc, init, width)
                            };
                            match (at, panel) {
                                (true, true) => tile::<false, true>(mr, args),
                                (true, false) => tile::<false, false>(mr, args),
                                (false, true) => tile::<true, true>(mr, args),
                                (false, false) => tile::<true, false>(mr, args),
                            }
                        }
                    }
                }
            }
        });
        for r in rows {
            let (c0, c1) = (cols.start * NR, (cols.end * NR).min(n));
            // SAFETY: row r, columns c0..c1 of the output were fully written above and
            // belong to this block alone.
            let row =
                unsafe { std::slice::from_raw_parts_mut(self.c.0.add(r * self.ldc + c0), c1 - c0) };
            (self.epilogue)(row);
        }
    }
}

/// `a[m x k] b + bias` for the packed `b`, as a new row-major `m x n` vector: `a` row-major
/// (row stride `k`), `bias` of length `n` or absent, and `epilogue` applied to each finished
/// row segment (a fused activation). Runs on rayon's pool.
///
/// Panics if `a` or `bias` is shorter than the shapes say (a caller bug, never user input).
pub fn gemm_packed(
    m: usize,
    a: &[f32],
    b: &PackedMatrix,
    bias: Option<&[f32]>,
    epilogue: &(dyn Fn(&mut [f32]) + Sync),
) -> Vec<f32> {
    gemm_new(
        (m, b.k, b.n),
        Lhs::Rows(a, b.k),
        Rhs::Panels(b.values()),
        bias,
        epilogue,
    )
}

/// `a[m x depth] b + bias` as a new row-major `m x n` vector, with `a` and `b` laid out as
/// [`Lhs`] and [`Rhs`] say; `epilogue` runs on each finished row segment. Parallel over
/// blocks of at most 96 rows (about equal, in whole tiles) and groups of panels that fit in
/// L2; the
/// output is never zero-filled (every element is written). Only where [`avx512_available`]
/// holds.
///
/// Panics if a slice is shorter than the shapes say (a caller bug, never user input).
pub(crate) fn gemm_new(
    (m, depth, n): (usize, usize, usize),
    a: Lhs,
    b: Rhs,
    bias: Option<&[f32]>,
    epilogue: &(dyn Fn(&mut [f32]) + Sync),
) -> Vec<f32> {
    if m == 0 || n == 0 {
        return Vec::new();
    }
    if depth == 0 {
        let mut c = vec![0f32; m * n];
        for row in c.chunks_exact_mut(n) {
            if let Some(b) = bias {
                row.copy_from_slice(b);
            }
            epilogue(row);
        }
        return c;
    }
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    let job = Product::new(
        (m, depth, n),
        a,
        b,
        (c.as_mut_ptr(), m * n, n),
        bias,
        epilogue,
    );
    let panel_count = n.div_ceil(NR);
    let group = (PANEL_GROUP_BYTES / (depth.min(KC) * NR * 4)).clamp(1, panel_count);
    let groups = panel_count.div_ceil(group);
    // About equal row blocks in whole tiles: 128 rows run as 72 + 56, not 96 + 32.
    let mc = m.div_ceil(m.div_ceil(MC)).next_multiple_of(MR);
    // Task t: row block t % row_blocks of panel group t / row_blocks. Rayon hands each
    // thread runs of consecutive tasks, so a thread reads each of its panel groups from
    // memory once, for every row block in turn (the left operand stays in cache), rather than
    // all of `b` once per row block: measured on the output head's 576 x 49152 (113 MB
    // packed), 154-158 GFLOP/s before, 163-171 after; the blocks' shapes within noise.
    let row_blocks = m.div_ceil(mc);
    let task = |t: usize| {
        let (rb, g) = (t % row_blocks, t / row_blocks);
        job.block(
            rb * mc..(rb * mc + mc).min(m),
            g * group..((g + 1) * group).min(panel_count),
        )
    };
    let tasks = row_blocks * groups;
    if rayon::current_num_threads() > 1 && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    // SAFETY: the tasks wrote every element of the m x n output (every row block x every
    // panel group, each in full).
    unsafe { c.set_len(m * n) };
    c
}

/// `c[m x n] = a[m x depth] b` on the calling thread, with `a` and `b` laid out as [`Lhs`]
/// and [`Rhs`] say and `c` rows `ldc` apart (columns past `n` untouched). Only where
/// [`avx512_available`] holds.
///
/// Panics if a slice is shorter than the shapes say (a caller bug, never user input).
pub(crate) fn gemm_panels(
    (m, depth, n): (usize, usize, usize),
    a: Lhs,
    b: Rhs,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if depth == 0 {
        c.chunks_mut(ldc).take(m).for_each(|r| r[..n].fill(0.0));
        return;
    }
    let job = Product::new(
        (m, depth, n),
        a,
        b,
        (c.as_mut_ptr(), c.len(), ldc),
        None,
        &|_| {},
    );
    job.block(0..m, 0..n.div_ceil(NR));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], bias: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias[j] as f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_a_reference_on_ragged_shapes() {
        if !avx512_available() {
            assert!(PackedMatrix::pack(&[1.0], 1, 1).is_none());
            return;
        }
        for &(m, k, n) in &[
            (1, 1, 1),
            (13, 7, 33),
            (25, 64, 31),
            (200, 40, 100),
            (97, 1100, 64),
        ] {
            let (a, b, bias) = (values(m * k, 1), values(k * n, 2), values(n, 3));
            let packed = PackedMatrix::pack(&b, k, n).unwrap();
            let c = gemm_packed(m, &a, &packed, Some(&bias), &|_| {});
            let want = reference(m, k, n, &a, &b, &bias);
            let worst = c
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{m}x{k}x{n}: max error {worst}");
            let c2 = gemm_packed(m, &a, &packed, None, &|r| {
                r.iter_mut().for_each(|v| *v *= 2.0)
            });
            let want2 = reference(m, k, n, &a, &b, &vec![0.0; n]);
            assert!(c2
                .iter()
                .zip(&want2)
                .all(|(x, y)| (x - 2.0 * y).abs() < 2e-4));
        }
    }

    #[test]
    fn gemm_panels_reads_strided_rows() {
        if !avx512_available() {
            return;
        }
        // Depth past one block, so the later blocks accumulate.
        let (m, depth, n, lda, ldc) = (29, 600, 45, 601, 50);
        let a = values(m * lda, 4);
        // B inside a wider buffer (row stride n + 3, starting at 2), packed as is and from
        // its transpose.
        let src = values(2 + depth * (n + 3), 6);
        let b: Vec<f32> = (0..depth * n)
            .map(|i| src[2 + i / n * (n + 3) + i % n])
            .collect();
        let bt_src: Vec<f32> = (0..n * depth)
            .map(|i| b[i % depth * n + i / depth])
            .collect();
        let (mut rows, mut transposed) = (Vec::new(), Vec::new());
        pack_rows(&src, (2, n + 3), (depth, n), &mut rows);
        pack_transposed(&bt_src, (0, depth), (n, depth), &mut transposed);
        assert_eq!(rows, transposed);
        let dense: Vec<f32> = (0..m)
            .flat_map(|i| a[i * lda..i * lda + depth].to_vec())
            .collect();
        let want = reference(m, depth, n, &dense, &b, &vec![0.0; n]);
        let mut c = vec![7.0f32; m * ldc];
        gemm_panels(
            (m, depth, n),
            Lhs::Rows(&a, lda),
            Rhs::Panels(&rows),
            &mut c,
            ldc,
        );
        // The same product with `a` stored transposed, and with `b` read in place (its last
        // row ends at the buffer's end, so a read past `n` would leave it).
        let at: Vec<f32> = (0..depth * m)
            .map(|i| dense[i % m * depth + i / m])
            .collect();
        let mut c2 = vec![7.0f32; m * ldc];
        gemm_panels(
            (m, depth, n),
            Lhs::Cols(&at, m),
            Rhs::Panels(&rows),
            &mut c2,
            ldc,
        );
        assert_eq!(c, c2);
        let in_place = &src[2..2 + (depth - 1) * (n + 3) + n];
        let mut c3 = vec![7.0f32; m * ldc];
        gemm_panels(
            (m, depth, n),
            Lhs::Rows(&a, lda),
            Rhs::Rows(in_place, n + 3),
            &mut c3,
            ldc,
        );
        assert_eq!(c, c3);
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j < n {
                    assert!((got - want[i * n + j]).abs() < 1e-4, "({i}, {j})");
                } else {
                    assert_eq!(got, 7.0, "column {j} past n was written");
                }
            }
        }
    }

    #[test]
    fn parallel_products_read_rows_in_place_and_split_rows_evenly() {
        if !avx512_available() {
            return;
        }
        // 130 rows: two blocks of 72 and 58 (not 96 and 34); depth past one block; n not a
        // multiple of 32, so the last panel of the in-place `b` is partial.
        for (m, depth, n) in [(130, 700, 45), (128, 64, 96)] {
            let (a, b) = (values(m * depth, 8), values(depth * n, 9));
            let at: Vec<f32> = (0..depth * m).map(|i| a[i % m * depth + i / m]).collect();
            let want = reference(m, depth, n, &a, &b, &vec![0.0; n]);
            let mut panels = Vec::new();
            pack_rows(&b, (0, n), (depth, n), &mut panels);
            let packed = gemm_new(
                (m, depth, n),
                Lhs::Rows(&a, depth),
                Rhs::Panels(&panels),
                None,
                &|_| {},
            );
            for (lhs, rhs) in [
                (Lhs::Rows(&a, depth), Rhs::Rows(&b, n)),
                (Lhs::Cols(&at, m), Rhs::Rows(&b, n)),
            ] {
                assert_eq!(gemm_new((m, depth, n), lhs, rhs, None, &|_| {}), packed);
            }
            let worst = packed
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-3, "{m}x{depth}x{n}: max error {worst}");
        }
    }

    #[test]
    fn rows_at_a_4_kib_stride_are_packed_and_others_read_in_place() {
        let b = values(3 * 1024, 10);
        let mut buf = Vec::new();
        assert!(matches!(
            rows_rhs(&b, (0, 1024), (3, 40), &mut buf),
            Rhs::Panels(_)
        ));
        let mut rows = Vec::new();
        pack_rows(&b, (0, 1024), (3, 40), &mut rows);
        assert_eq!(buf, rows);
        assert!(matches!(
            rows_rhs(&b, (8, 1000), (3, 40), &mut buf),
            Rhs::Rows(r, 1000) if r.len() == b.len() - 8
        ));
    }

    #[test]
    fn empty_products_and_packs_give_empty_or_zero_results() {
        let mut buf = vec![1.0];
        pack_rows(&[], (0, 5), (0, 5), &mut buf);
        assert!(buf.is_empty());
        pack_transposed(&[], (0, 0), (4, 0), &mut buf);
        assert!(buf.is_empty());
        if avx512_available() {
            let none = Rhs::Panels(&[]);
            assert!(gemm_new((0, 3, 4), Lhs::Rows(&[], 3), none, None, &|_| {}).is_empty());
            let bias = [1.0, 2.0];
            let c = gemm_new((2, 0, 2), Lhs::Rows(&[], 0), none, Some(&bias), &|_| {});
            assert_eq!(c, [1.0, 2.0, 1.0, 2.0]);
        }
    }

    #[test]
    fn pack_rejects_a_wrong_length() {
        assert!(PackedMatrix::pack(&[1.0, 2.0, 3.0], 2, 2).is_none());
    }
}
