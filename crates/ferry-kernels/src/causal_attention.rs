//! Causal self-attention for decoders, inference only, with grouped keys and values (GQA):
//! query head `h` reads key/value head `h / (heads / kv_heads)`, so the keys and values are
//! never repeated per query head (`repeat_kv` copies them `heads / kv_heads` times); only the
//! keys a query may see are weighed (the causal triangle, a sliding window, padding left
//! out); and the context is written merged, `[batch, seq, heads x head]`, ready for the
//! output projection (no transpose copy).
//!
//! Queries, keys and values are read as they leave their projections (`[batch, seq, heads x
//! head]`) and gathered into contiguous heads, each once, with the rotary embedding applied to
//! queries and keys as they are gathered.
//!
//! Per (batch, head), on one thread. On CPUs with AVX-512F, blocks of 48 query rows as two
//! register-tiled products of the packed GEMM (scores against the keys the block may see,
//! then their softmax-weighted sum of values; the masked corner of each block is computed and
//! dropped). Elsewhere, per query row, the visible scores `q K^T * scale` (vectorized over
//! keys, `K^T` packed once), a softmax over them, and `sum_j p_j v_j` (vectorized over the
//! head): loops written for the compiler to vectorize, compiled with AVX2 and FMA where the
//! CPU has them. The tiles and the AVX2 loops sum in the same order: the same bits for finite
//! values.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::fast_exp;

/// Which keys each query sees besides the causal triangle: `keep` `[batch, seq]` (1 for a real
/// token, 0 for padding), and a sliding `window` (Mistral's: a query at `i` sees keys
/// `i - window + 1 ..= i`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CausalMask<'a> {
    /// Real tokens (1) and padding (0), `[batch, seq]` row-major; `None`: every token is real.
    pub keep: Option<&'a [u8]>,
    /// The sliding window, if any.
    pub window: Option<usize>,
}

/// The rotary embedding's tables for [`causal_attention`]: `cos` and `sin` `[seq, head / 2]`
/// (f32, on the CPU), applied to queries and keys as candle's `rope` applies them (the two
/// halves of a head rotated together, the same operations in the same order: the same bits).
#[derive(Debug, Clone, Copy)]
pub struct Rotary<'a> {
    /// Cosines, `[seq, head / 2]`.
    pub cos: &'a Tensor,
    /// Sines, `[seq, head / 2]`.
    pub sin: &'a Tensor,
}

/// `q` `[batch, seq, heads x head]`, `k` and `v` `[batch, seq, kv_heads x head]` as they leave
/// their projections (f32, on the CPU), with `(heads, kv_heads)` -> the context `[batch, seq,
/// heads x head]`. `heads` must be a multiple of `kv_heads`. With `rotary`, queries and keys
/// get the rotary embedding as each head is gathered, so the heads are never transposed into
/// a tensor of their own nor rotated in a pass of their own. A query that sees no key (every
/// visible key is padding) gets a context of zeros.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (nh, nkv): (usize, usize),
    rotary: Option<Rotary>,
    scale: f32,
    mask: CausalMask,
) -> candle_core::Result<Tensor> {
    let (b, t, width) = q.dims3()?;
    if nh == 0 || nkv == 0 || nh % nkv != 0 || width % nh != 0 || width == 0 {
        candle_core::bail!(
            "causal attention: {nh} query heads over {nkv} key/value heads do not fit queries \
             {:?} (heads x a head of at least one value)",
            q.dims()
        );
    }
    let hd = width / nh;
    if k.dims() != [b, t, nkv * hd] || v.dims() != k.dims() {
        candle_core::bail!(
            "causal attention: keys {:?} and values {:?} do not fit queries {:?} ({nh} heads, \
             {nkv} key/value heads)",
            k.dims(),
            v.dims(),
            q.dims()
        );
    }
    if let Some(keep) = mask.keep {
        if keep.len() != b * t {
            candle_core::bail!(
                "causal attention: {} mask values for batch {b} x seq {t}",
                keep.len()
            );
        }
    }
    let mut inputs = vec![q, k, v];
    if let Some(r) = rotary {
        let want = [t, hd / 2];
        if hd % 2 != 0 || r.cos.dims() != want || r.sin.dims() != want {
            candle_core::bail!(
                "causal attention: rotary tables {:?} and {:?} do not fit seq {t} x head {hd} \
                 (expected {want:?}, an even head)",
                r.cos.dims(),
                r.sin.dims()
            );
        }
        inputs.extend([r.cos, r.sin]);
    }
    if !super::fast_path(&inputs) {
        candle_core::bail!("causal attention: expects f32 tensors on the CPU");
    }
    let group = nh / nkv;
    let heads: Vec<Vec<f32>> = super::host_slices(&inputs, |s| {
        let (q, k, v) = (s[0], s[1], s[2]);
        let tables = (s.len() == 5).then(|| (s[3], s[4]));
        // Each key/value head once (keys rotated), shared by its group of query heads.
        let kv: Vec<(Vec<f32>, Vec<f32>)> = (0..b * nkv)
            .into_par_iter()
            .map(|bk| {
                let at = (bk / nkv, bk % nkv);
                let kh = gather(k, at, (t, hd), nkv * hd, tables);
                (kh, gather(v, at, (t, hd), nkv * hd, None))
            })
            .collect();
        (0..b * nh)
            .into_par_iter()
            .map(|bh| {
                let (bi, h) = (bh / nh, bh % nh);
                let qh = gather(q, (bi, h), (t, hd), nh * hd, tables);
                let (kh, vh) = &kv[bi * nkv + h / group];
                let keep = mask.keep.map(|m| &m[bi * t..(bi + 1) * t]);
                let job = Head {
                    q: &qh,
                    k: kh,
                    v: vh,
                    dims: (t, hd),
                    scale,
                    keep,
                    window: mask.window,
                };
                head(&job)
            })
            .collect()
    })?;
    // Merge: head h of batch row b fills columns h*hd.. of rows b*t.. .
    let mut out = vec![0f32; b * t * width];
    for (bh, ctx) in heads.iter().enumerate() {
        let (bi, h) = (bh / nh, bh % nh);
        for i in 0..t {
            let row = (bi * t + i) * width + h * hd;
            out[row..row + hd].copy_from_slice(&ctx[i * hd..(i + 1) * hd]);
        }
    }
    Tensor::from_vec(out, (b, t, width), &Device::Cpu)
}

/// Head `h` of batch row `bi` of the projection `x` (rows of `width`, heads of `hd`) as a
/// contiguous `[seq, head]`, rotated by the `(cos, sin)` tables when given, with candle's
/// `rope` arithmetic: `x1 c - x2 s` and `x1 s + x2 c` for the halves `x1`, `x2`.
fn gather(
    x: &[f32],
    (bi, h): (usize, usize),
    (t, hd): (usize, usize),
    width: usize,
    tables: Option<(&[f32], &[f32])>,
) -> Vec<f32> {
    let mut out = vec![0f32; t * hd];
    let half = hd / 2;
    for (i, dst) in out.chunks_exact_mut(hd).enumerate() {
        let at = (bi * t + i) * width + h * hd;
        let src = &x[at..at + hd];
        let Some((cos, sin)) = tables else {
            dst.copy_from_slice(src);
            continue;
        };
        let (c, s) = (&cos[i * half..][..half], &sin[i * half..][..half]);
        let (x1, x2) = src.split_at(half);
        let (d1, d2) = dst.split_at_mut(half);
        for j in 0..half {
            d1[j] = x1[j] * c[j] - x2[j] * s[j];
            d2[j] = x1[j] * s[j] + x2[j] * c[j];
        }
    }
    out
}

/// One (batch, head)'s inputs: queries, keys and values `[seq, head]` each, with
/// `dims = (seq, head)`, the scores' scale, and which keys its queries see: `keep` `[seq]`
/// (this batch row's) and the sliding window.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dims: (usize, usize),
    scale: f32,
    keep: Option<&'a [u8]>,
    window: Option<usize>,
}

impl Head<'_> {
    /// The first key query `i` sees (the window's start).
    #[inline(always)]
    fn first_key(&self, i: usize) -> usize {
        self.window.map_or(0, |w| (i + 1).saturating_sub(w))
    }

    /// Scales the scores `row` of keys `lo..` in place, padded keys to minus infinity, and
    /// says whether any key is left to see.
    #[inline(always)]
    fn weigh(&self, row: &mut [f32], lo: usize) -> bool {
        let mut any = false;
        for (j, s) in row.iter_mut().enumerate() {
            if self.keep.is_some_and(|m| m[lo + j] == 0) {
                *s = f32::NEG_INFINITY;
            } else {
                *s *= self.scale;
                any = true;
            }
        }
        any
    }
}

/// One (batch, head): the context `[seq, head]`.
fn head(job: &Head) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        let f = crate::cpu::features();
        if f.avx512f {
            // SAFETY: the CPU has AVX-512F (which implies FMA), checked just above.
            return unsafe { head_tiled(job) };
        }
        if f.avx2 && f.fma {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { head_avx2(job) };
        }
    }
    head_with::<false>(job)
}

/// `$name`: [`head_with`] with fused multiply-adds, compiled with the target features
/// `$features` (one build per instruction set; the caller checks the CPU has them).
macro_rules! fma_head {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(job: &Head) -> Vec<f32> {
            head_with::<true>(job)
        }
    };
}
fma_head!(head_avx2, "avx2,fma");

/// Query rows per block of [`head_tiled`] (a multiple of the GEMM's 12-row tile).
#[cfg(target_arch = "x86_64")]
const BLOCK_ROWS: usize = 48;

/// One (batch, head) as register-tiled products on CPUs with AVX-512F
/// ([`crate::packed_gemm`]), block by block of [`BLOCK_ROWS`] query rows: the scores against
/// the keys the block may see (`q K^T`, with `K^T` packed once per head; a sliding window's
/// earlier keys skipped 32 at a time), then per row scale, padding mask and softmax over its
/// visible keys (zeros elsewhere), then `P V` with the head's values read in place. Both
/// products sum in the same order as [`head_with`] (depth in order, fused multiply-adds; a zero
/// weight adds nothing to a finite value), so for finite values the two give the same context;
/// what the tiles add is the masked corner of each block, computed and dropped (an infinite or
/// NaN value there makes NaNs, as candle's composed attention does, where the row loops skip
/// it).
///
/// # Safety
/// The CPU has AVX-512F (which implies FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn head_tiled(job: &Head) -> Vec<f32> {
    use crate::packed_gemm::{gemm_panels, pack_transposed, rows_rhs, Lhs, Rhs, NR};
    let Head { q, k, v, dims, .. } = *job;
    let (t, hd) = dims;
    // Key j's component c sits in panel j / 32 at row c, lane j % 32.
    let mut kt = Vec::new();
    pack_transposed(k, (0, hd), (t, hd), &mut kt);
    let mut v_buf = Vec::new();
    let mut ctx = vec![0f32; t * hd];
    let mut scores = vec![0f32; BLOCK_ROWS.min(t) * t];
    for r0 in (0..t).step_by(BLOCK_ROWS) {
        let r1 = (r0 + BLOCK_ROWS).min(t);
        let panel = job.first_key(r0) / NR;
        // Columns of this block's scores: keys first..r1.
        let first = panel * NR;
        let (rows, n) = (r1 - r0, r1 - first);
        let block = &mut scores[..rows * n];
        let kt_from = Rhs::Panels(&kt[panel * hd * NR..]);
        gemm_panels(
            (rows, hd, n),
            Lhs::Rows(&q[r0 * hd..], hd),
            kt_from,
            block,
            n,
        );
        for (i, row) in (r0..r1).zip(block.chunks_exact_mut(n)) {
            let lo = job.first_key(i);
            let (before, rest) = row.split_at_mut(lo - first);
            let (visible, after) = rest.split_at_mut(i + 1 - lo);
            before.fill(0.0);
            after.fill(0.0);
            if job.weigh(visible, lo) {
                fast_exp::softmax_row_fma(visible);
            } else {
                visible.fill(0.0); // no key to see: a context of zeros
            }
        }
        let vs = rows_rhs(v, (first * hd, hd), (n, hd), &mut v_buf);
        gemm_panels(
            (rows, n, hd),
            Lhs::Rows(block, n),
            vs,
            &mut ctx[r0 * hd..],
            hd,
        );
    }
    ctx
}

#[inline(always)]
fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn head_with<const FMA: bool>(job: &Head) -> Vec<f32> {
    let Head { q, k, v, dims, .. } = *job;
    let (t, hd) = dims;
    // K^T: key j's component c at c * t + j, so a query's scores run over contiguous keys.
    let mut kt = vec![0f32; hd * t];
    for j in 0..t {
        for c in 0..hd {
            kt[c * t + j] = k[j * hd + c];
        }
    }
    let mut ctx = vec![0f32; t * hd];
    let mut scores = vec![0f32; t];
    for i in 0..t {
        let lo = job.first_key(i);
        let n = i + 1 - lo;
        let row = &mut scores[..n];
        row.fill(0.0);
        let qi = &q[i * hd..(i + 1) * hd];
        for (c, &qc) in qi.iter().enumerate() {
            let kc = &kt[c * t + lo..c * t + i + 1];
            for (s, &kk) in row.iter_mut().zip(kc) {
                *s = fma::<FMA>(qc, kk, *s);
            }
        }
        if !job.weigh(row, lo) {
            continue; // zeros
        }
        if FMA {
            fast_exp::softmax_row_fma(row);
        } else {
            fast_exp::softmax_row(row);
        }
        let out = &mut ctx[i * hd..(i + 1) * hd];
        for (j, &p) in row.iter().enumerate() {
            if p == 0.0 {
                continue;
            }
            let vj = &v[(lo + j) * hd..(lo + j + 1) * hd];
            for (o, &x) in out.iter_mut().zip(vj) {
                *o = fma::<FMA>(p, x, *o);
            }
        }
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, D};

    /// The composed form: keys and values repeated per query head, a full additive mask.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32, mask: CausalMask) -> Tensor {
        let (b, nh, t, hd) = q.dims4().unwrap();
        let nkv = k.dim(1).unwrap();
        let rep = |x: &Tensor| {
            x.unsqueeze(2)
                .unwrap()
                .expand((b, nkv, nh / nkv, t, hd))
                .unwrap()
                .reshape((b, nh, t, hd))
                .unwrap()
        };
        let (k, v) = (rep(k), rep(v));
        let mut bias = vec![0f32; b * t * t];
        for bi in 0..b {
            for i in 0..t {
                for j in 0..t {
                    let hidden = j > i
                        || mask.window.is_some_and(|w| i - j >= w)
                        || mask.keep.is_some_and(|m| m[bi * t + j] == 0);
                    if hidden {
                        bias[(bi * t + i) * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, t), &Device::Cpu).unwrap();
        let att = (q.matmul(&k.t().unwrap()).unwrap() * scale as f64)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        let e = att
            .broadcast_sub(&att.max_keepdim(D::Minus1).unwrap())
            .unwrap()
            .exp()
            .unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, nh * hd))
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// `[batch, heads, seq, head]` as its projection lays it out, `[batch, seq, heads x head]`.
    fn merged(x: &Tensor) -> Tensor {
        let (b, n, t, hd) = x.dims4().unwrap();
        x.transpose(1, 2)
            .unwrap()
            .reshape((b, t, n * hd))
            .unwrap()
            .contiguous()
            .unwrap()
    }

    #[test]
    fn matches_the_composed_form_with_gqa_padding_and_windows() {
        let dev = Device::Cpu;
        for (b, nh, nkv, t, hd, window) in [
            (2, 9, 3, 37, 64, None),
            (1, 4, 4, 5, 16, None),
            (3, 6, 2, 20, 32, Some(7)),
            (1, 2, 1, 1, 8, None),
        ] {
            let q = Tensor::randn(0f32, 1.0, (b, nh, t, hd), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
            // Right padding: the last rows of each batch row but the first are padding.
            let keep: Vec<u8> = (0..b * t)
                .map(|x| u8::from(x / t == 0 || x % t < t - (x / t)))
                .collect();
            let mask = CausalMask {
                keep: Some(&keep),
                window,
            };
            let scale = 1.0 / (hd as f32).sqrt();
            let (mq, mk, mv) = (merged(&q), merged(&k), merged(&v));
            let got = causal_attention(&mq, &mk, &mv, (nh, nkv), None, scale, mask).unwrap();
            let want = reference(&q, &k, &v, scale, mask);
            assert!(max_diff(&got, &want) < 1e-5, "{b} {nh} {nkv} {t} {hd}");
            let open = CausalMask::default();
            let got = causal_attention(&mq, &mk, &mv, (nh, nkv), None, scale, open).unwrap();
            let want = reference(&q, &k, &v, scale, open);
            assert!(max_diff(&got, &want) < 1e-5);
        }
    }

    #[test]
    fn rotates_queries_and_keys_with_the_bits_of_candles_rope() {
        let dev = Device::Cpu;
        let (b, nh, nkv, t, hd) = (2, 6, 2, 19, 32);
        let q = Tensor::randn(0f32, 1.0, (b, nh, t, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
        let angles = Tensor::randn(0f32, 3.0, (t, hd / 2), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let rotary = Rotary {
            cos: &cos,
            sin: &sin,
        };
        let mask = CausalMask::default();
        let got = causal_attention(
            &merged(&q),
            &merged(&k),
            &merged(&v),
            (nh, nkv),
            Some(rotary),
            0.2,
            mask,
        )
        .unwrap();
        // The composed form: candle-nn's rope on the heads, then the kernel without it.
        let rope = |x: &Tensor| merged(&candle_nn::rotary_emb::rope(x, &cos, &sin).unwrap());
        let (rq, rk) = (rope(&q), rope(&k));
        let want = causal_attention(&rq, &rk, &merged(&v), (nh, nkv), None, 0.2, mask).unwrap();
        let (got, want) = (got.flatten_all().unwrap(), want.flatten_all().unwrap());
        let bits = |x: &Tensor| -> Vec<u32> {
            x.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&got), bits(&want));
        // And the rotation is not the identity: without it the context differs.
        let plain = causal_attention(
            &merged(&q),
            &merged(&k),
            &merged(&v),
            (nh, nkv),
            None,
            0.2,
            mask,
        )
        .unwrap()
        .flatten_all()
        .unwrap();
        assert!(max_diff(&plain, &want) > 1e-3);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_tiled_head_sums_as_the_row_loop_does() {
        if !crate::cpu::features().avx512f {
            return; // the row loops are what runs on this CPU
        }
        let dev = Device::Cpu;
        let values = |n: usize| -> Vec<f32> {
            Tensor::randn(0f32, 1.0, n, &dev)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        // Lengths around the block (48 rows) and panel (32 keys) edges, windows that skip
        // whole panels, the scores' depth past 512 (summed in blocks), heads of 80 values (a
        // partial panel) and 13, windows of t or more, one starting on a panel's edge.
        for (t, hd, window) in [
            (5, 8, None),
            (100, 64, None),
            (130, 32, Some(40)),
            (97, 16, Some(3)),
            (600, 64, None),
            (70, 80, Some(17)),
            (50, 13, Some(50)),
            (40, 16, Some(400)),
        ] {
            let (q, k, v) = (values(t * hd), values(t * hd), values(t * hd));
            let holes: Vec<u8> = (0..t).map(|j| u8::from(j % 7 != 3)).collect();
            // Left padding: the first 10 queries see no key at all.
            let left: Vec<u8> = (0..t).map(|j| u8::from(j >= 10)).collect();
            for keep in [None, Some(&holes[..]), Some(&left[..])] {
                let job = Head {
                    q: &q,
                    k: &k,
                    v: &v,
                    dims: (t, hd),
                    scale: 0.3,
                    keep,
                    window,
                };
                // SAFETY: the CPU has AVX-512F, checked above.
                let tiled = unsafe { head_tiled(&job) };
                // SAFETY: as above (AVX-512F implies AVX2 and FMA).
                let rows = unsafe { head_avx2(&job) };
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&tiled), bits(&rows), "t {t} hd {hd} window {window:?}");
            }
        }
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let dev = Device::Cpu;
        let attend = |q: &Tensor, k: &Tensor, heads, rotary, mask| {
            causal_attention(q, k, k, heads, rotary, 1.0, mask)
        };
        let open = CausalMask::default();
        let q = Tensor::zeros((1, 4, 24), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 4, 16), DType::F32, &dev).unwrap();
        // 3 query heads of 8 over 2 key/value heads: not a multiple.
        assert!(attend(&q, &k, (3, 2), None, open).is_err());
        // Heads of no value.
        let empty = Tensor::zeros((1, 4, 0), DType::F32, &dev).unwrap();
        assert!(attend(&empty, &empty, (1, 1), None, open).is_err());
        // Keys of another length.
        let k5 = Tensor::zeros((1, 5, 8), DType::F32, &dev).unwrap();
        assert!(attend(&q, &k5, (3, 1), None, open).is_err());
        // Keys of another width than kv_heads x head.
        assert!(attend(&q, &k, (3, 1), None, open).is_err());
        let k = Tensor::zeros((1, 4, 8), DType::F32, &dev).unwrap();
        assert!(attend(&q, &k, (3, 1), None, open).is_ok());
        let keep = [1u8; 3];
        let short = CausalMask {
            keep: Some(&keep),
            window: None,
        };
        assert!(attend(&q, &k, (3, 1), None, short).is_err());
        let q16 = q.to_dtype(DType::F16).unwrap();
        assert!(attend(&q16, &k, (3, 1), None, open).is_err());
        // Rotary tables of another length than the sequence.
        let table = Tensor::zeros((5, 4), DType::F32, &dev).unwrap();
        let rotary = Rotary {
            cos: &table,
            sin: &table,
        };
        assert!(attend(&q, &k, (3, 1), Some(rotary), open).is_err());
        let table = Tensor::zeros((4, 4), DType::F32, &dev).unwrap();
        let rotary = Rotary {
            cos: &table,
            sin: &table,
        };
        assert!(attend(&q, &k, (3, 1), Some(rotary), open).is_ok());
    }
}
