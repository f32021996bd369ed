//! ferry's quantized matrix multiply on CPUs with AVX-512 VNNI or AVX2 + FMA: `y = x W^T (+ bias)` with `W`
//! GGML-quantized (q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k) and `x` quantized per call to 8
//! bits as llama.cpp's CPU dot products take it ([`ActQuant`]: `q8_0` blocks of 32 for the
//! classic types, `q8_K` blocks of 256 for the k-quants), multiplied in int8 by `vpdpbusd` (64
//! multiply-adds per instruction, four times a 16-lane FMA) and scaled per block in f32. The
//! operands are llama.cpp's; only the order of the float additions differs.
//!
//! candle's quantized CPU kernels (what `QMatMul` runs) take one output at a time with a
//! vector dot; a batched prefill needs a register-tiled product like the f32 one
//! (`packed_gemm`). Here every GGML block is read once, at pack time, into 32-element int8
//! blocks `w = s * q + o` ([`blocks`]: exactly the values ggml dequantizes to), stored in
//! 32-feature panels; a 6 x 32 register tile accumulates each block's integer dots, then adds
//! `s * dx * dot (+ o * dx * sum(xq))` to 12 f32 accumulators.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes: activations are stored as `xq + 128` and
//! each block's `128 * sum(q)` (packed with the weights) is taken off the integer dot. Without
//! VNNI the AVX2 build of the tile (`kernel`) reads the same panels and activations and gives
//! the same bits.

pub mod activations;
pub mod blocks;
mod kernel;

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

pub use activations::{quantize_rows, ActQuant, QuantizedRows};
use blocks::Block32;

/// Features per panel (two 16-lane vectors).
const NR: usize = 32;
/// Rows per register tile.
const MR: usize = 6;
/// Rows of `x` per parallel task (a multiple of [`MR`]).
const MC: usize = 48;
/// Panels per parallel task.
const PANELS_PER_TASK: usize = 4;
/// Bytes of one panel's block: 32 features x 32 int8, then their scales, offsets (f32) and
/// corrections (i32, `128 * sum(q)`).
const BLOCK_BYTES: usize = NR * 32 + 3 * NR * 4;

/// One 64-byte aligned line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// The bytes [`PackedQ8::from_ggml`] holds for an `n x k` matrix of GGML `dtype` (32-feature
/// panels of 32-element int8 blocks with their f32 scales, offsets and i32 corrections), or
/// `None` when it would not pack it (a type the kernel does not read, `k` not a multiple of
/// the type's block). Whether the int8 kernels run on this CPU ([`available`]) is not checked.
pub fn packed_bytes(dtype: GgmlDType, n: usize, k: usize) -> Option<usize> {
    let (_, block_elems) = blocks::layout(dtype)?;
    if n == 0 || k == 0 || !k.is_multiple_of(block_elems) {
        return None;
    }
    Some(n.div_ceil(NR) * (k / 32) * BLOCK_BYTES)
}

/// An `n x k` GGML-quantized weight packed for [`qgemm`].
#[derive(Clone)]
pub struct PackedQ8 {
    k: usize,
    n: usize,
    offsets: bool,
    /// The largest `|q|` of any block (the AVX2 build's choice of products depends on it).
    qmax: u8,
    act: ActQuant,
    lines: Vec<Line>,
}

impl std::fmt::Debug for PackedQ8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ8({} x {})", self.n, self.k)
    }
}

/// Whether the int8 kernels run: the CPU has AVX-512F, BW and VNNI, or AVX2 and FMA (a slower
/// build of the same tile, same bits), and `FERRY_PORTABLE_KERNELS` is not set. Read once per
/// process.
pub fn available() -> bool {
    let f = crate::cpu::features();
    vnni() || (f.avx2 && f.fma)
}

/// Whether the AVX-512 VNNI build runs (else the AVX2 one).
fn vnni() -> bool {
    let f = crate::cpu::features();
    f.avx512f && f.avx512bw && f.avx512vnni
}

impl PackedQ8 {
    /// Packs the `n x k` matrix stored as GGML `dtype` blocks in `bytes` (row after row, as in a
    /// GGUF). `None` where the int8 kernels do not run ([`available`]), the type is not one the kernel reads exactly
    /// (see [`blocks::layout`]), or the bytes do not hold `n x k` values.
    pub fn from_ggml(dtype: GgmlDType, bytes: &[u8], n: usize, k: usize) -> Option<PackedQ8> {
        if !available() {
            return None;
        }
        Self::pack(dtype, bytes, n, k)
    }

    /// As [`PackedQ8::from_ggml`], on any CPU (the layout only; for tests).
    fn pack(dtype: GgmlDType, bytes: &[u8], n: usize, k: usize) -> Option<PackedQ8> {
        let (block_bytes, block_elems) = blocks::layout(dtype)?;
        if n == 0 || k == 0 || !k.is_multiple_of(block_elems) {
            return None;
        }
        let row_bytes = k / block_elems * block_bytes;
        if bytes.len() != n.checked_mul(row_bytes)? {
            return None;
        }
        let nb = k / 32;
        let panels = n.div_ceil(NR);
        let mut lines = vec![Line([0; 64]); panels * nb * BLOCK_BYTES / 64];
        let mut row = Vec::with_capacity(nb);
        let mut qmax = 0u8;
        for f in 0..n {
            row.clear();
            for blk in bytes[f * row_bytes..(f + 1) * row_bytes].chunks_exact(block_bytes) {
                blocks::decode(dtype, blk, &mut row);
            }
            let (p, lane) = (f / NR, f % NR);
            for (b, blk) in row.iter().enumerate() {
                qmax = blk.q.iter().fold(qmax, |m, &q| m.max(q.unsigned_abs()));
                let base = (p * nb + b) * BLOCK_BYTES;
                put_block(&mut lines, base, lane, blk);
            }
        }
        Some(PackedQ8 {
            k,
            n,
            offsets: blocks::has_offsets(dtype),
            qmax,
            act: ActQuant::for_weights(dtype),
            lines,
        })
    }

    /// Depth (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `Line` is `repr(C)` around `[u8; 64]`: the lines are contiguous bytes.
        unsafe {
            std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.lines.len() * 64)
        }
    }

    /// The weight as f32, `n x k` row-major: `s * q + o` per block, what ggml dequantizes to.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for f in 0..self.n {
            for (b, blk) in self.feature_blocks(f).iter().enumerate() {
                for (i, &q) in blk.q.iter().enumerate() {
                    out[f * self.k + b * 32 + i] = blk.s * q as f32 + blk.o;
                }
            }
        }
        out
    }

    /// Feature `f`'s blocks of 32, read back from its panel.
    fn feature_blocks(&self, f: usize) -> Vec<Block32> {
        let (nb, bytes) = (self.k / 32, self.bytes());
        let (p, lane) = (f / NR, f % NR);
        (0..nb)
            .map(|b| get_block(bytes, (p * nb + b) * BLOCK_BYTES, lane))
            .collect()
    }
}

/// The integer dot of 32 stored activations (`q + 128`) with a block's `q`: exact in `i32`
/// (at most 32 * 127 * 128 in magnitude).
fn block_dot(xq: &[u8], q: &[i8; 32]) -> i32 {
    xq.iter()
        .zip(q)
        .map(|(&u, &q)| (u as i32 - 128) * q as i32)
        .sum()
}

/// Where feature `lane`'s byte `i` (0..32) of a block sits in its panel block: groups of four
/// consecutive bytes per feature, 16 features per 64-byte line, the first 16 features' eight
/// lines before the last 16's.
fn q_offset(lane: usize, i: usize) -> usize {
    (lane / 16) * 512 + (i / 4) * 64 + (lane % 16) * 4 + i % 4
}

fn put_block(lines: &mut [Line], base: usize, lane: usize, blk: &Block32) {
    // SAFETY: as `bytes`, mutable.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut u8, lines.len() * 64) };
    let mut sum = 0i32;
    for (i, &q) in blk.q.iter().enumerate() {
        bytes[base + q_offset(lane, i)] = q as u8;
        sum += q as i32;
    }
    let tail = base + NR * 32;
    bytes[tail + lane * 4..][..4].copy_from_slice(&blk.s.to_le_bytes());
    bytes[tail + NR * 4 + lane * 4..][..4].copy_from_slice(&blk.o.to_le_bytes());
    bytes[tail + 2 * NR * 4 + lane * 4..][..4].copy_from_slice(&(128 * sum).to_le_bytes());
}

fn get_block(bytes: &[u8], base: usize, lane: usize) -> Block32 {
    let mut q = [0i8; 32];
    for (i, v) in q.iter_mut().enumerate() {
        *v = bytes[base + q_offset(lane, i)] as i8;
    }
    let tail = base + NR * 32;
    let f = |at: usize| f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    Block32 {
        q,
        s: f(tail + lane * 4),
        o: f(tail + NR * 4 + lane * 4),
    }
}

/// A raw output pointer shared by tasks writing disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of output tiles.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `x[m x k] W^T + bias` as a new row-major `m x n` vector, `x` row-major and quantized to 8
/// bits per block of 32 first. Runs on rayon's pool, in tasks of 48 rows x 128 features.
///
/// Panics if `x` or `bias` is shorter than the shapes say or the int8 kernels do not run here
/// (caller bugs: [`PackedQ8::from_ggml`] returns `None` there).
pub fn qgemm(m: usize, x: &[f32], w: &PackedQ8, bias: Option<&[f32]>) -> Vec<f32> {
    qgemm_on(m, x, w, bias, vnni())
}

/// [`qgemm`] on the VNNI build of the tile where `vnni`, else on the AVX2 one (the tests run
/// both where both run).
fn qgemm_on(m: usize, x: &[f32], w: &PackedQ8, bias: Option<&[f32]>, vnni: bool) -> Vec<f32> {
    let f = crate::cpu::features();
    assert!(
        if vnni { self::vnni() } else { f.avx2 && f.fma },
        "the int8 GEMM needs AVX-512 VNNI or AVX2 and FMA (its {} build does not run on this CPU)",
        if vnni { "VNNI" } else { "AVX2" }
    );
    assert!(
        x.len() >= m * w.k && bias.is_none_or(|b| b.len() == w.n),
        "int8 GEMM: input or bias too short"
    );
    let xq = quantize_rows(&x[..m * w.k], m, w.k, w.act);
    let mut out = vec![0f32; m * w.n];
    let c = OutPtr(out.as_mut_ptr());
    let panels = w.n.div_ceil(NR);
    // Row blocks within panel groups: rayon hands each thread runs of consecutive tasks, so
    // a thread reads each of its weight panels from memory once, for every row block in turn,
    // rather than all the weights once per row block (the f32 packed GEMM runs the same order).
    let tasks: Vec<(usize, usize)> = (0..panels)
        .step_by(PANELS_PER_TASK)
        .flat_map(|p| (0..m).step_by(MC).map(move |r| (r, p)))
        .collect();
    let bytes = w.bytes();
    let nb = w.k / 32;
    tasks.par_iter().for_each(|&(r0, p0)| {
        for p in p0..(p0 + PANELS_PER_TASK).min(panels) {
            let width = NR.min(w.n - p * NR);
            let panel = &bytes[p * nb * BLOCK_BYTES..(p + 1) * nb * BLOCK_BYTES];
            let bias = bias.map(|b| &b[p * NR..p * NR + width]);
            for r in (r0..(r0 + MC).min(m)).step_by(MR) {
                let mr = MR.min(m - r);
                // SAFETY: `panel` holds nb blocks of this panel; rows r..r+mr of `xq` exist
                // (r + mr <= m); the output tile (rows r..r+mr, columns p*32..p*32+width) is
                // inside `out` (m x n) and written by this task alone; the build `vnni` names
                // runs here (the callers' checks).
                unsafe {
                    kernel::tile(
                        mr,
                        kernel::Tile {
                            nb,
                            panel: panel.as_ptr(),
                            xq: xq.q[r * w.k..].as_ptr(),
                            ldx: w.k,
                            d: xq.d[r * nb..].as_ptr(),
                            dsum: xq.dsum[r * nb..].as_ptr(),
                            offsets: w.offsets,
                            qmax: w.qmax,
                            bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
                            c: c.get().add(r * w.n + p * NR),
                            ldc: w.n,
                            width,
                        },
                        vnni,
                    )
                };
            }
        }
    });
    out
}

/// What [`qgemm`] computes, in f64 from the same quantized activations (the composed twin the
/// kernel is tested against).
pub fn qgemm_reference(m: usize, x: &[f32], w: &PackedQ8, bias: Option<&[f32]>) -> Vec<f64> {
    let xq = quantize_rows(&x[..m * w.k], m, w.k, w.act);
    let nb = w.k / 32;
    let mut out = vec![0f64; m * w.n];
    for f in 0..w.n {
        let blocks = w.feature_blocks(f);
        for r in 0..m {
            let mut acc = bias.map_or(0.0, |b| b[f] as f64);
            for (b, blk) in blocks.iter().enumerate() {
                let dot = block_dot(&xq.q[r * w.k + b * 32..][..32], &blk.q);
                let d = xq.d[r * nb + b] as f64;
                acc += blk.s as f64 * d * dot as f64 + blk.o as f64 * xq.dsum[r * nb + b] as f64;
            }
            out[r * w.n + f] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests;
