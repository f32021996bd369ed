//! Scaled dot-product self-attention over packed `[q | k | v]` projections as one op.
//!
//! The composed form (split heads with permute copies, scale, batched matmul, mask add,
//! softmax, matmul, merge heads) makes a dozen graph nodes whose backward passes each
//! allocate and add full-size buffers. This kernel reads the heads in place through strided
//! loops, keeps the attention probabilities for the backward pass, and writes the merged
//! context directly: per (batch, head) `P = softmax(q k^T / sqrt(d) + bias)`, `ctx = P v`;
//! backward `dP = dctx v^T`, `dS = P * (dP - rowsum(dP * P)) / sqrt(d)`, `dq = dS k`,
//! `dk = dS^T q`, `dv = P^T dctx`.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::{f32_slice, fast_exp, fast_path, host_slices};

/// `qkv` `[batch, seq, 3 dim]` -> context `[batch, seq, dim]` with `heads` heads;
/// `key_bias` `[batch, seq]` is added to every query's scores (0 for tokens, a large
/// negative number for padding).
pub fn self_attention(
    qkv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let spec = Spec::self_attention(heads, qkv.dims3()?);
    attention(qkv, heads, key_bias, spec.scale, true)
}

/// Inference attention: like [`self_attention`] with scores scaled by `scale` (instead of
/// `1 / sqrt(head size)`), and no probabilities kept for a backward pass.
pub fn attention_inference(
    qkv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
    scale: f32,
) -> candle_core::Result<Tensor> {
    attention(qkv, heads, key_bias, scale, false)
}

fn attention(
    qkv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
    scale: f32,
    keep_probs: bool,
) -> candle_core::Result<Tensor> {
    let (b, s, d3) = qkv.dims3()?;
    let dim = d3 / 3;
    if heads == 0 || d3 % 3 != 0 || dim % heads != 0 {
        candle_core::bail!("attention: width {d3} is not 3 x heads ({heads}) x head size");
    }
    if fast_path(&[qkv]) && HEAD_SIZES.contains(&(dim / heads)) {
        let bias = key_bias_values(key_bias, (b, s))?;
        let op = Attention {
            heads,
            bias,
            scale,
            keep_probs,
            probs: Mutex::new(Vec::new()),
        };
        return qkv.contiguous()?.apply_op1(op);
    }
    if let Some(m) = key_bias {
        key_bias_shape(m, (b, s))?;
    }
    composed(qkv, heads, key_bias, scale, (b, s, dim))
}

/// Checks that a key bias is `[batch, seq]` (in elements), naming both shapes otherwise.
fn key_bias_shape(m: &Tensor, (b, s): (usize, usize)) -> candle_core::Result<()> {
    if m.elem_count() != b * s {
        candle_core::bail!(
            "attention: key bias {:?} is not [batch {b}, seq {s}]",
            m.dims()
        );
    }
    Ok(())
}

/// A key bias as host f32 values, after checking its shape.
pub(crate) fn key_bias_values(
    key_bias: Option<&Tensor>,
    (b, s): (usize, usize),
) -> candle_core::Result<Option<Vec<f32>>> {
    let Some(m) = key_bias else {
        return Ok(None);
    };
    key_bias_shape(m, (b, s))?;
    Ok(Some(
        m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
    ))
}

/// The same computation from candle primitives (any device, differentiable by autograd).
fn composed(
    qkv: &Tensor,
    h: usize,
    key_bias: Option<&Tensor>,
    scale: f32,
    (b, s, d): (usize, usize, usize),
) -> candle_core::Result<Tensor> {
    let hd = d / h;
    let qkv = qkv.reshape((b, s, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)?.contiguous()? * scale as f64)?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let scores = q.matmul(&k.t()?)?;
    let scores = match key_bias {
        Some(m) => scores.broadcast_add(&m.to_dtype(scores.dtype())?.reshape((b, 1, 1, s))?)?,
        None => scores,
    };
    let m = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&m)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    p.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))
}

struct Attention {
    heads: usize,
    bias: Option<Vec<f32>>,
    scale: f32,
    /// Whether to keep the probabilities for the backward pass (training).
    keep_probs: bool,
    /// The probabilities `[batch, heads, seq, seq]` of the forward pass, for the backward.
    probs: Mutex<Vec<f32>>,
}

/// `out[j] = scale * sum_c a[c] * bt[c * s + j]` for `j < s`, `W` outputs at a time in
/// registers.
#[inline(always)]
fn row_block<const HD: usize, const W: usize>(
    a: &[f32; HD],
    bt: &[f32],
    out: &mut [f32],
    j: usize,
    scale: f32,
) {
    let s = out.len();
    let mut acc = [0f32; W];
    for c in 0..HD {
        let ac = a[c];
        let b = &bt[c * s + j..c * s + j + W];
        for l in 0..W {
            acc[l] = ac.mul_add(b[l], acc[l]);
        }
    }
    for l in 0..W {
        out[j + l] = acc[l] * scale;
    }
}

/// `out[j] = scale * sum_c a[c] * bt[c * s + j]` for `j < s`: 64 outputs at a time (four
/// independent vector accumulators hide the FMA latency), then 16, then one by one.
#[inline(always)]
fn row_times<const HD: usize>(a: &[f32; HD], bt: &[f32], out: &mut [f32], scale: f32) {
    let s = out.len();
    let mut j = 0;
    while j + 64 <= s {
        row_block::<HD, 64>(a, bt, out, j, scale);
        j += 64;
    }
    while j + 16 <= s {
        row_block::<HD, 16>(a, bt, out, j, scale);
        j += 16;
    }
    for (jj, o) in out.iter_mut().enumerate().skip(j) {
        let mut acc = 0f32;
        for c in 0..HD {
            acc += a[c] * bt[c * s + jj];
        }
        *o = acc * scale;
    }
}

/// [`row_times`] for two rows `a0`, `a1` at once: each load of `bt` feeds both, and the two
/// sets of accumulators (eight vectors for 64 outputs) keep both FMA units busy.
#[inline(always)]
fn two_rows_times<const HD: usize>(
    a0: &[f32; HD],
    a1: &[f32; HD],
    bt: &[f32],
    out0: &mut [f32],
    out1: &mut [f32],
    scale: f32,
) {
    const W: usize = 64;
    let s = out0.len();
    let mut j = 0;
    while j + W <= s {
        let mut acc0 = [0f32; W];
        let mut acc1 = [0f32; W];
        for c in 0..HD {
            let (x0, x1) = (a0[c], a1[c]);
            let b = &bt[c * s + j..c * s + j + W];
            for l in 0..W {
                acc0[l] = x0.mul_add(b[l], acc0[l]);
                acc1[l] = x1.mul_add(b[l], acc1[l]);
            }
        }
        for l in 0..W {
            out0[j + l] = acc0[l] * scale;
            out1[j + l] = acc1[l] * scale;
        }
        j += W;
    }
    if j < s {
        let tail = |a: &[f32; HD], out: &mut [f32]| {
            let mut rest = vec![0f32; s - j];
            for (jj, o) in rest.iter_mut().enumerate() {
                let mut acc = 0f32;
                for c in 0..HD {
                    acc += a[c] * bt[c * s + j + jj];
                }
                *o = acc * scale;
            }
            out[j..].copy_from_slice(&rest);
        };
        tail(a0, out0);
        tail(a1, out1);
    }
}

/// `sum_j w[j] * rows[j]` over the `HD`-wide rows of a packed `[s, HD]` block, accumulated
/// in registers, four rows at a time into independent accumulators (one chain of dependent
/// FMAs would run at a quarter of the FMA units' rate).
#[inline(always)]
fn weighted_rows<const HD: usize>(w: impl Fn(usize) -> f32, rows: &[f32]) -> [f32; HD] {
    let n = rows.len() / HD;
    let mut acc = [[0f32; HD]; 4];
    for (q, rq) in rows.chunks_exact(4 * HD).enumerate() {
        for u in 0..4 {
            let wu = w(4 * q + u);
            let r = &rq[u * HD..(u + 1) * HD];
            for c in 0..HD {
                acc[u][c] = wu.mul_add(r[c], acc[u][c]);
            }
        }
    }
    for j in n / 4 * 4..n {
        let (wj, r) = (w(j), &rows[j * HD..(j + 1) * HD]);
        for c in 0..HD {
            acc[0][c] += wj * r[c];
        }
    }
    let mut out = [0f32; HD];
    for c in 0..HD {
        out[c] = (acc[0][c] + acc[1][c]) + (acc[2][c] + acc[3][c]);
    }
    out
}

/// Copies one head's `[s, HD]` block (rows `stride` apart from `first`) into a packed buffer.
#[inline(always)]
fn pack<const HD: usize>(src: &[f32], first: usize, stride: usize, s: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(s * HD);
    for j in 0..s {
        out.extend_from_slice(&src[first + j * stride..first + j * stride + HD]);
    }
    out
}

/// One (batch, head) of the forward pass: loops over register blocks that the compiler
/// vectorizes (through the GEMM library, whose per-call packing dominates at these sizes,
/// a 64 x 32 head took about 30 us).
#[inline(always)]
fn head_forward<const HD: usize>(
    qkv: &[f32],
    bias: Option<&[f32]>,
    p: &mut [f32],
    ctx: &mut [f32],
    g: &Geometry,
    (bi, hi): (usize, usize),
) {
    let Geometry {
        s, d, d3, scale, ..
    } = *g;
    let base = bi * s * d3 + hi * HD;
    let at = |j: usize, part: usize| &qkv[base + j * d3 + part * d..base + j * d3 + part * d + HD];
    let mut kt = vec![0f32; HD * s];
    for j in 0..s {
        for (c, &k) in at(j, 1).iter().enumerate() {
            kt[c * s + j] = k;
        }
    }
    let v = pack::<HD>(qkv, base + 2 * d, d3, s);
    let q = |i: usize| -> &[f32; HD] { at(i, 0).try_into().expect("HD values") };
    // Scores two query rows at a time (a last odd row alone).
    for (pair, rows) in p.chunks_mut(2 * s).enumerate() {
        let i = 2 * pair;
        if rows.len() == 2 * s {
            let (r0, r1) = rows.split_at_mut(s);
            two_rows_times(q(i), q(i + 1), &kt, r0, r1, scale);
        } else {
            row_times(q(i), &kt, rows, scale);
        }
    }
    for (i, row) in p.chunks_exact_mut(s).enumerate() {
        if let Some(m) = bias {
            row.iter_mut().zip(m).for_each(|(x, m)| *x += m);
        }
        fast_exp::softmax_row(row);
        let out: [f32; HD] = weighted_rows(|j| row[j], &v);
        ctx[i * d + hi * HD..i * d + hi * HD + HD].copy_from_slice(&out);
    }
}

/// One (batch, head) of the forward pass as two register-tiled products on CPUs with AVX-512:
/// scores `= q K^T` with `K^T` packed per head, then `ctx = P V` with `V` read in place
/// ([`crate::packed_gemm`]); in between, scale, key bias and softmax per row.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_forward_tiled(
    hd: usize,
    qkv: &[f32],
    bias: Option<&[f32]>,
    p: &mut [f32],
    ctx: &mut [f32],
    g: &Geometry,
    (bi, hi): (usize, usize),
    sc: &mut ForwardScratch,
) {
    use crate::packed_gemm::{gemm_panels, pack_transposed, rows_rhs, Lhs, Rhs};
    let Geometry { s, d, d3, scale } = *g;
    let base = bi * s * d3 + hi * hd;
    pack_transposed(qkv, (base + d, d3), (s, hd), &mut sc.kt);
    gemm_panels(
        (s, hd, s),
        Lhs::Rows(&qkv[base..], d3),
        Rhs::Panels(&sc.kt),
        p,
        s,
    );
    for row in p.chunks_exact_mut(s) {
        match bias {
            Some(m) => row.iter_mut().zip(m).for_each(|(x, m)| *x = *x * scale + m),
            None => row.iter_mut().for_each(|x| *x *= scale),
        }
        fast_exp::softmax_row_fma(row);
    }
    let v = rows_rhs(qkv, (base + 2 * d, d3), (s, hd), &mut sc.v);
    gemm_panels((s, s, hd), Lhs::Rows(p, s), v, &mut ctx[hi * hd..], d);
}

/// Buffers [`head_forward_tiled`] reuses from head to head: packed `K^T`, and `V` where it is
/// packed (`packed_gemm::rows_rhs`). A buffer keeps one shape (see
/// `packed_gemm::resize_zeroed`).
#[derive(Default)]
struct ForwardScratch {
    kt: Vec<f32>,
    v: Vec<f32>,
}

/// Buffers [`head_backward_tiled`] reuses from head to head: packed `V^T`, `dS`, and `K`, `q`,
/// `dctx` where they are packed (`packed_gemm::rows_rhs`).
#[derive(Default)]
struct BackwardScratch {
    vt: Vec<f32>,
    ds: Vec<f32>,
    k: Vec<f32>,
    q: Vec<f32>,
    g: Vec<f32>,
}

/// One (batch, head) of the backward pass as four register-tiled products on CPUs with
/// AVX-512 (see the module documentation for the maths): `dP = dctx V^T`, then `dS` row by
/// row, `dq = dS K`, `dk = dS^T q`, `dv = P^T dctx`, each written straight into its part of
/// `dxb` (`dS^T` and `P^T` are read transposed, [`crate::packed_gemm::Lhs::Cols`]; `K`, `q`
/// and `dctx` in place, see `packed_gemm::rows_rhs`).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_backward_tiled(
    hd: usize,
    qkv: &[f32],
    p: &[f32],
    gout: &[f32],
    dxb: &mut [f32],
    g: &Geometry,
    (bi, hi): (usize, usize),
    sc: &mut BackwardScratch,
) {
    use crate::packed_gemm::{gemm_panels, pack_transposed, rows_rhs, Lhs, Rhs};
    let Geometry { s, d, d3, scale } = *g;
    let base = bi * s * d3 + hi * hd;
    let gbase = bi * s * d + hi * hd;
    pack_transposed(qkv, (base + 2 * d, d3), (s, hd), &mut sc.vt);
    sc.ds.resize(s * s, 0.0);
    gemm_panels(
        (s, hd, s),
        Lhs::Rows(&gout[gbase..], d),
        Rhs::Panels(&sc.vt),
        &mut sc.ds,
        s,
    );
    for (dr, pr) in sc.ds.chunks_exact_mut(s).zip(p.chunks_exact(s)) {
        let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
        dr.iter_mut()
            .zip(pr)
            .for_each(|(x, p)| *x = p * (*x - dot) * scale);
    }
    let col = hi * hd;
    let k = rows_rhs(qkv, (base + d, d3), (s, hd), &mut sc.k);
    gemm_panels((s, s, hd), Lhs::Rows(&sc.ds, s), k, &mut dxb[col..], d3);
    gemm_panels(
        (s, s, hd),
        Lhs::Cols(&sc.ds, s),
        rows_rhs(qkv, (base, d3), (s, hd), &mut sc.q),
        &mut dxb[d + col..],
        d3,
    );
    gemm_panels(
        (s, s, hd),
        Lhs::Cols(p, s),
        rows_rhs(gout, (gbase, d), (s, hd), &mut sc.g),
        &mut dxb[2 * d + col..],
        d3,
    );
}

/// One (batch, head) of the backward pass (see the module documentation for the maths).
#[inline(always)]
fn head_backward<const HD: usize>(
    qkv: &[f32],
    p: &[f32],
    gout: &[f32],
    dxb: &mut [f32],
    g: &Geometry,
    (bi, hi): (usize, usize),
) {
    let Geometry {
        s, d, d3, scale, ..
    } = *g;
    let base = bi * s * d3 + hi * HD;
    let at = |j: usize, part: usize| &qkv[base + j * d3 + part * d..base + j * d3 + part * d + HD];
    let q = pack::<HD>(qkv, base, d3, s);
    let k = pack::<HD>(qkv, base + d, d3, s);
    let gp = pack::<HD>(gout, bi * s * d + hi * HD, d, s);
    let mut vt = vec![0f32; HD * s];
    for j in 0..s {
        for (c, &v) in at(j, 2).iter().enumerate() {
            vt[c * s + j] = v;
        }
    }
    // dS = P * (dctx v^T - rowsum(...)) * scale, all rows.
    let mut ds = vec![0f32; s * s];
    for (i, (dr, pr)) in ds.chunks_exact_mut(s).zip(p.chunks_exact(s)).enumerate() {
        let gi: &[f32; HD] = gp[i * HD..(i + 1) * HD].try_into().expect("HD values");
        row_times(gi, &vt, dr, 1.0);
        let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
        dr.iter_mut()
            .zip(pr)
            .for_each(|(x, p)| *x = p * (*x - dot) * scale);
    }
    let put = |dxb: &mut [f32], j: usize, part: usize, v: &[f32; HD]| {
        dxb[j * d3 + part * d + hi * HD..j * d3 + part * d + hi * HD + HD].copy_from_slice(v);
    };
    for i in 0..s {
        // dq_i = sum_j dS_ij k_j
        let dq: [f32; HD] = weighted_rows(|jj| ds[i * s + jj], &k);
        put(dxb, i, 0, &dq);
    }
    for j in 0..s {
        // dk_j = sum_i dS_ij q_i, dv_j = sum_i P_ij dctx_i
        let dk: [f32; HD] = weighted_rows(|ii| ds[ii * s + j], &q);
        put(dxb, j, 1, &dk);
        let dv: [f32; HD] = weighted_rows(|ii| p[ii * s + j], &gp);
        put(dxb, j, 2, &dv);
    }
}

/// Sizes shared by the per-head loops.
#[derive(Clone, Copy)]
struct Geometry {
    s: usize,
    d: usize,
    d3: usize,
    scale: f32,
}

/// Head sizes with a compiled kernel; others take the composed path.
pub(crate) const HEAD_SIZES: [usize; 5] = [8, 16, 32, 64, 128];

/// Defines `$name(.., hd)`: `$inner::<HD>` for the head size, compiled for AVX-512 when the
/// CPU has it (the build targets baseline x86-64), else as built. The loops are the same, so
/// so is every result.
macro_rules! per_head_size {
    ($name:ident($($arg:ident: $ty:ty),*) => $inner:ident) => {
        fn $name(hd: usize, $($arg: $ty),*) {
            #[inline(always)]
            fn sized($($arg: $ty),*, hd: usize) {
                match hd {
                    8 => $inner::<8>($($arg),*),
                    16 => $inner::<16>($($arg),*),
                    32 => $inner::<32>($($arg),*),
                    64 => $inner::<64>($($arg),*),
                    128 => $inner::<128>($($arg),*),
                    _ => unreachable!("head size {hd} has no kernel (checked before)"),
                }
            }
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*, hd: usize) {
                    sized($($arg),*, hd)
                }
                if crate::cpu::features().avx512f {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { wide($($arg),*, hd) };
                }
            }
            sized($($arg),*, hd)
        }
    };
}

per_head_size!(forward_head(qkv: &[f32], bias: Option<&[f32]>, p: &mut [f32], ctx: &mut [f32], g: &Geometry, at: (usize, usize)) => head_forward);
per_head_size!(backward_head(qkv: &[f32], p: &[f32], gout: &[f32], dxb: &mut [f32], g: &Geometry, at: (usize, usize)) => head_backward);

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "ferry-attention"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(st, l, self.name())?;
        let (b, s, d3) = l.shape().dims3()?;
        let spec = Spec {
            heads: self.heads,
            scale: self.scale,
            shape: (b, s, d3),
        };
        let (ctx, probs) = forward_host(qkv, &spec, self.bias.as_deref(), self.keep_probs);
        *self.probs.lock().expect("attention cache") = probs;
        Ok((CpuStorage::F32(ctx), Shape::from((b, s, d3 / 3))))
    }

    fn bwd(&self, qkv: &Tensor, _ctx: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (b, s, d3) = qkv.dims3()?;
        let spec = Spec {
            heads: self.heads,
            scale: self.scale,
            shape: (b, s, d3),
        };
        let probs = std::mem::take(&mut *self.probs.lock().expect("attention cache"));
        let dx = host_slices(&[qkv, g], |sl| backward_host(sl[0], &probs, sl[1], &spec))??;
        Ok(Some(Tensor::from_vec(dx, (b, s, d3), qkv.device())?))
    }
}

/// The shape of one attention call: `qkv` `[batch, seq, 3 dim]` with `heads` heads of a
/// size in [`HEAD_SIZES`], scores scaled by `scale`.
pub(crate) struct Spec {
    pub heads: usize,
    pub scale: f32,
    pub shape: (usize, usize, usize),
}

impl Spec {
    /// Self-attention over `qkv` `[batch, seq, 3 dim]`: scores scaled by `1 / sqrt(head size)`.
    pub fn self_attention(heads: usize, shape: (usize, usize, usize)) -> Self {
        let hd = shape.2 / 3 / heads.max(1);
        Spec {
            heads,
            scale: 1.0 / (hd as f32).sqrt(),
            shape,
        }
    }

    fn geometry(&self) -> Geometry {
        let (_, s, d3) = self.shape;
        Geometry {
            s,
            d: d3 / 3,
            d3,
            scale: self.scale,
        }
    }
}

/// The forward over host slices: the context `[batch, seq, dim]` and, when `keep_probs`,
/// the probabilities `[batch, heads, seq, seq]` for the backward (else empty). `bias`: the
/// `[batch, seq]` key bias.
pub(crate) fn forward_host(
    qkv: &[f32],
    spec: &Spec,
    bias: Option<&[f32]>,
    keep_probs: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (b, s, d3) = spec.shape;
    let (d, h) = (d3 / 3, spec.heads);
    let hd = d / h;
    let geo = spec.geometry();
    let mut ctx = vec![0f32; b * s * d];
    let tiled = crate::packed_gemm::avx512_available();
    // `pb` holds every head's probabilities (kept for the backward pass) or one head's,
    // reused (inference: 64 KiB at seq 128 stays in L2).
    let head = |bi: usize, pb: &mut [f32], cb: &mut [f32]| {
        let bias = bias.map(|m| &m[bi * s..(bi + 1) * s]);
        let mut scratch = ForwardScratch::default();
        for hi in 0..h {
            let p = match pb.len() == h * s * s {
                true => &mut pb[hi * s * s..(hi + 1) * s * s],
                false => &mut pb[..s * s],
            };
            #[cfg(target_arch = "x86_64")]
            if tiled {
                // SAFETY: the CPU has AVX-512F (`tiled`).
                unsafe { head_forward_tiled(hd, qkv, bias, p, cb, &geo, (bi, hi), &mut scratch) };
                continue;
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (tiled, &mut scratch); // the tiled kernels are x86-64 only
            forward_head(hd, qkv, bias, p, cb, &geo, (bi, hi));
        }
    };
    let mut probs = Vec::new();
    if keep_probs {
        probs = vec![0f32; b * h * s * s];
        // Each batch's probabilities and [seq, dim] context block belong to one task.
        probs
            .par_chunks_mut(h * s * s)
            .zip(ctx.par_chunks_mut(s * d))
            .enumerate()
            .for_each(|(bi, (pb, cb))| head(bi, pb, cb));
    } else {
        ctx.par_chunks_mut(s * d)
            .enumerate()
            .for_each_init(|| vec![0f32; s * s], |pb, (bi, cb)| head(bi, pb, cb));
    }
    (ctx, probs)
}

/// The backward over host slices: `d qkv` from the forward's `qkv` and probabilities
/// ([`forward_host`] with `keep_probs`) and the context's gradient `gout`.
pub(crate) fn backward_host(
    qkv: &[f32],
    probs: &[f32],
    gout: &[f32],
    spec: &Spec,
) -> candle_core::Result<Vec<f32>> {
    let (b, s, d3) = spec.shape;
    let (d, h) = (d3 / 3, spec.heads);
    let hd = d / h;
    let geo = spec.geometry();
    if probs.len() != b * h * s * s {
        candle_core::bail!("attention backward ran twice or without its forward");
    }
    let mut dx = vec![0f32; b * s * d3];
    // Each batch's [seq, 3 dim] block of dqkv is written by its own task.
    let tiled = crate::packed_gemm::avx512_available();
    dx.par_chunks_mut(s * d3).enumerate().for_each(|(bi, dxb)| {
        let mut scratch = BackwardScratch::default();
        for hi in 0..h {
            let p = &probs[(bi * h + hi) * s * s..(bi * h + hi + 1) * s * s];
            #[cfg(target_arch = "x86_64")]
            if tiled {
                // SAFETY: the CPU has AVX-512F (`tiled`).
                unsafe { head_backward_tiled(hd, qkv, p, gout, dxb, &geo, (bi, hi), &mut scratch) };
                continue;
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (tiled, &mut scratch); // the tiled kernels are x86-64 only
            backward_head(hd, qkv, p, gout, dxb, &geo, (bi, hi));
        }
    });
    Ok(dx)
}
