//! Attention (opsets 23 to 25): scaled dot-product attention over 3-D or 4-D Q/K/V with
//! grouped-query heads, boolean or additive masks, causal and sliding-window masking,
//! `softcap`, a past key/value cache (`present_key`/`present_value` outputs),
//! `nonpad_kv_seqlen` and the `qk_matmul_output` output; RotaryEmbedding (opset 23:
//! 3-D or 4-D input, optional position ids, interleaved, partial rotary dimension);
//! LinearAttention (the `linear`, `gated`, `delta` and `gated_delta` recurrences with a
//! carried state).
//!
//! The scores are computed on the host in f32, as ONNX's reference implementation does in
//! the input type; fully masked rows give zeros.

use candle_core::{DType, Tensor};

use super::{OpCx, OpFn};
use crate::exec::util::{arg, bail, ints_of, opt, R};
use crate::ir::Node;

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    Some(match op {
        "Attention" => attention,
        "RotaryEmbedding" => rotary,
        "LinearAttention" => linear_attention,
        _ => return None,
    })
}

/// `[batch, seq, heads * size]` to `[batch, heads, seq, size]`.
fn split_heads(t: &Tensor, heads: i64, what: &str) -> R<Tensor> {
    let (b, s, hidden) = t.dims3()?;
    if heads < 1 || hidden % heads as usize != 0 {
        bail!("{what} hidden size {hidden} does not split into {heads} heads");
    }
    let h = heads as usize;
    Ok(t.reshape((b, s, h, hidden / h))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// A mask input as additive f32 values broadcast to `[b, h, q, kv]` (`-inf` where masked;
/// a boolean mask attends where true); a shorter last dimension is padded as masked.
fn mask_bias(mask: &Tensor, dims: [usize; 4]) -> R<Vec<f32>> {
    let kv = dims[3];
    let boolean = mask.dtype() == DType::U8;
    let mut m = if boolean {
        mask.ne(0u8)?.to_dtype(DType::F32)?
    } else {
        mask.to_dtype(DType::F32)?
    };
    if m.rank() == 0 || m.rank() > 4 {
        bail!("attn_mask of rank {} is not supported", m.rank());
    }
    let last = m.dims()[m.rank() - 1];
    if last > kv {
        bail!("attn_mask {:?} is longer than the {kv} keys", mask.dims());
    }
    if last < kv {
        let mut pad = m.dims().to_vec();
        pad[m.rank() - 1] = kv - last;
        let value = if boolean { 0f32 } else { f32::NEG_INFINITY };
        let fill = Tensor::full(value, pad, m.device())?;
        m = Tensor::cat(&[&m, &fill], m.rank() - 1)?;
    }
    let full = m.broadcast_as(dims.as_slice()).map_err(|_| {
        candle_core::Error::Msg(format!(
            "attn_mask {:?} does not broadcast to {dims:?}",
            mask.dims()
        ))
    })?;
    let mut values = full.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    if boolean {
        for x in &mut values {
            *x = if *x != 0.0 { 0.0 } else { f32::NEG_INFINITY };
        }
    }
    Ok(values)
}

fn attention(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let (q, k, v) = (arg(&args, 0)?, arg(&args, 1)?, arg(&args, 2)?);
    let dtype = q.dtype();
    if !dtype.is_float() {
        bail!("Attention needs float inputs, not {dtype:?}");
    }
    let rank = q.rank();
    if k.rank() != rank || v.rank() != rank || !(rank == 3 || rank == 4) {
        bail!(
            "Q {:?}, K {:?} and V {:?} must all be 3-D or all 4-D",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let (q, k, v) = if rank == 3 {
        let qh = node.attr_int("q_num_heads", 0);
        let kvh = node.attr_int("kv_num_heads", 0);
        (
            split_heads(q, qh, "Q")?,
            split_heads(k, kvh, "K")?,
            split_heads(v, kvh, "V")?,
        )
    } else {
        (q.clone(), k.clone(), v.clone())
    };
    let (past_k, past_v) = (opt(&args, 4), opt(&args, 5));
    let (k, v) = match (past_k, past_v) {
        (Some(pk), Some(pv)) => {
            if pk.rank() != 4 || pv.rank() != 4 {
                bail!("past_key and past_value must be 4-D");
            }
            let mut kd = k.dims().to_vec();
            kd[2] = kd[2].saturating_add(pk.dims()[2]);
            cx.fits("its present_key", &kd, dtype)?;
            let mut vd = v.dims().to_vec();
            vd[2] = vd[2].saturating_add(pv.dims()[2]);
            cx.fits("its present_value", &vd, dtype)?;
            (
                Tensor::cat(&[pk, &k.to_dtype(pk.dtype())?], 2)?,
                Tensor::cat(&[pv, &v.to_dtype(pv.dtype())?], 2)?,
            )
        }
        (None, None) => (k, v),
        _ => bail!("past_key and past_value must be given together"),
    };
    let (b, hq, sq, d) = q.dims4()?;
    let (bk, hkv, skv, dk) = k.dims4()?;
    let (bv, hv, sv, dv) = v.dims4()?;
    if bk != b || bv != b || dk != d || hv != hkv || sv != skv {
        bail!(
            "Q {:?}, K {:?} and V {:?} do not match",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if hkv == 0 || hq % hkv != 0 {
        bail!("{hq} query heads do not group over {hkv} key/value heads");
    }
    let group = hq / hkv;
    let scores = [b, hq, sq, skv];
    cx.fits("its attention scores", &scores, DType::F32)?;
    cx.fits("its output", &[b, hq, sq, dv], DType::F32)?;

    let nonpad = match opt(&args, 6) {
        Some(t) => {
            if past_k.is_some() {
                bail!("nonpad_kv_seqlen cannot be combined with past_key");
            }
            let n = ints_of(t)?;
            if n.len() != b {
                bail!("nonpad_kv_seqlen has {} values for batch {b}", n.len());
            }
            Some(n)
        }
        None => None,
    };
    let past_len = past_k.map_or(0, |p| p.dims()[2]) as i64;
    // Per-batch offset of the first query's position among the keys.
    let offset = |bi: usize| -> i64 {
        match &nonpad {
            Some(n) => n[bi] - sq as i64,
            None => past_len,
        }
    };
    let causal = node.attr_int("is_causal", 0) != 0;
    let left = node.attr_int("left_window_size", -1);
    let right = node.attr_int("right_window_size", -1);
    if left < -1 || right < -1 {
        bail!("window sizes ({left}, {right}) must be -1 or nonnegative");
    }

    let mut bias = match opt(&args, 3) {
        Some(m) => mask_bias(m, scores)?,
        None => vec![0.0; scores.iter().product()],
    };
    for bi in 0..b {
        let off = offset(bi);
        for hi in 0..hq {
            for i in 0..sq {
                let row = ((bi * hq + hi) * sq + i) * skv;
                for j in 0..skv {
                    let diff = i as i64 + off - j as i64;
                    let masked = (causal && diff < 0)
                        || (left >= 0 && diff > left)
                        || (right >= 0 && -diff > right)
                        || nonpad.as_ref().is_some_and(|n| j as i64 >= n[bi]);
                    if masked {
                        bias[row + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }

    let scale = match node.attrs.get("scale") {
        Some(crate::ir::Attr::Float(s)) => *s as f64,
        _ => 1.0 / (d as f64).sqrt(),
    };
    // sqrt(scale) rounded to the input type, applied to Q and K as the reference does.
    let s = Tensor::new(&[scale.sqrt() as f32], q.device())?
        .to_dtype(dtype)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?[0];
    let host = |t: &Tensor| -> R<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    // bf16 rounds after each step, as the reference computes in it (element-wise ops and
    // sums step by step, dot products accumulated in f32); other types keep f32 throughout.
    let round = |x: f32| -> f32 {
        if dtype == DType::BF16 {
            half::bf16::from_f32(x).to_f32()
        } else {
            x
        }
    };
    let (mut qv, mut kv, vv) = (host(&q)?, host(&k)?, host(&v)?);
    for x in qv.iter_mut().chain(kv.iter_mut()) {
        *x = round(*x * s);
    }
    let softcap = node.attr_float("softcap", 0.0);
    let mode = node.attr_int("qk_matmul_output_mode", 0);
    if !(0..=3).contains(&mode) {
        bail!("qk_matmul_output_mode {mode} is not one of 0 to 3");
    }
    let mut qk_out = vec![0f32; scores.iter().product()];
    let mut y = vec![0f32; b * hq * sq * dv];
    let mut row = vec![0f32; skv];
    for bi in 0..b {
        for hi in 0..hq {
            let kh = hi / group;
            for i in 0..sq {
                let qrow = &qv[((bi * hq + hi) * sq + i) * d..][..d];
                let at = ((bi * hq + hi) * sq + i) * skv;
                let brow = &bias[at..at + skv];
                for (j, r) in row.iter_mut().enumerate() {
                    let krow = &kv[((bi * hkv + kh) * skv + j) * d..][..d];
                    let mut acc = 0f32;
                    for (a, c) in qrow.iter().zip(krow) {
                        acc += a * c;
                    }
                    acc = round(acc);
                    if softcap > 0.0 {
                        acc = round(round(round(acc / softcap).tanh()) * softcap);
                    }
                    *r = acc;
                }
                let out = &mut qk_out[at..at + skv];
                if mode < 2 {
                    out.copy_from_slice(&row);
                }
                for (r, &bb) in row.iter_mut().zip(brow) {
                    *r = round(*r + bb);
                }
                if mode == 2 {
                    out.copy_from_slice(&row);
                }
                let all_masked = brow.iter().all(|&x| x == f32::NEG_INFINITY);
                if all_masked {
                    row.fill(0.0);
                } else {
                    let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mx = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
                    let mut sum = 0f32;
                    for r in row.iter_mut() {
                        *r = round(round(*r - mx).exp());
                        sum = round(sum + *r);
                    }
                    let sum = if sum == 0.0 { 1.0 } else { sum };
                    for r in row.iter_mut() {
                        *r = round(*r / sum);
                    }
                }
                if mode == 3 {
                    out.copy_from_slice(&row);
                }
                let yrow = &mut y[((bi * hq + hi) * sq + i) * dv..][..dv];
                for (j, &p) in row.iter().enumerate() {
                    let vrow = &vv[((bi * hkv + kh) * skv + j) * dv..][..dv];
                    for (o, &x) in yrow.iter_mut().zip(vrow) {
                        *o += p * x;
                    }
                }
            }
        }
    }
    let dev = q.device();
    let mut y = Tensor::from_vec(y, (b, hq, sq, dv), dev)?;
    if rank == 3 {
        y = y.transpose(1, 2)?.reshape((b, sq, hq * dv))?;
    }
    let qk = Tensor::from_vec(qk_out, scores.as_slice(), dev)?.to_dtype(dtype)?;
    Ok(vec![y.to_dtype(dtype)?, k, v, qk])
}

/// Rotates the first `rotary_embedding_dim` values of each head by the cached angles.
fn rotary(node: &Node, _: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let x = arg(&args, 0)?;
    let (cos, sin) = (arg(&args, 1)?, arg(&args, 2)?);
    if !x.dtype().is_float() {
        bail!("RotaryEmbedding needs a float input, not {:?}", x.dtype());
    }
    // Sizes, and the index of (b, s, h, d) in the input.
    let (b, s, h, d, four) = match *x.dims() {
        [b, h, s, d] => (b, s, h, d, true),
        [b, s, hidden] => {
            let h = node.attr_int("num_heads", 0);
            if h < 1 || hidden % h as usize != 0 {
                bail!("hidden size {hidden} does not split into num_heads {h}");
            }
            (b, s, h as usize, hidden / h as usize, false)
        }
        _ => bail!("input {:?} must be 3-D or 4-D", x.dims()),
    };
    let at = |bi: usize, si: usize, hi: usize| {
        if four {
            ((bi * h + hi) * s + si) * d
        } else {
            ((bi * s + si) * h + hi) * d
        }
    };
    let rot = match node.attr_int("rotary_embedding_dim", 0) {
        0 => d,
        r if r > 0 && r as usize <= d && r % 2 == 0 => r as usize,
        r => bail!("rotary_embedding_dim {r} does not fit head size {d}"),
    };
    let half = rot / 2;
    let interleaved = node.attr_int("interleaved", 0) != 0;
    let host = |t: &Tensor| -> R<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (cs, sn) = (host(cos)?, host(sin)?);
    if cos.dims() != sin.dims() || cos.dims().last() != Some(&half) {
        bail!(
            "cos {:?} and sin {:?} caches need a last dimension of {half}",
            cos.dims(),
            sin.dims()
        );
    }
    // Row of the caches for (b, s).
    let rows = cs.len() / half.max(1);
    let pos: Vec<usize> = match opt(&args, 3) {
        Some(p) => {
            let p = ints_of(p)?;
            if p.len() != b * s {
                bail!("position_ids hold {} values for [{b}, {s}]", p.len());
            }
            p.iter()
                .map(|&v| {
                    if v < 0 || v as usize >= rows {
                        bail!("position id {v} is outside the {rows} cached positions");
                    }
                    Ok(v as usize)
                })
                .collect::<R<_>>()?
        }
        None => {
            if cos.dims() != [b, s, half] {
                bail!("without position_ids the caches must be [{b}, {s}, {half}]");
            }
            (0..b * s).collect()
        }
    };
    let mut v = host(x)?;
    for bi in 0..b {
        for si in 0..s {
            let c = &cs[pos[bi * s + si] * half..][..half];
            let sg = &sn[pos[bi * s + si] * half..][..half];
            for hi in 0..h {
                let row = &mut v[at(bi, si, hi)..][..rot];
                for k in 0..half {
                    let (i1, i2) = if interleaved {
                        (2 * k, 2 * k + 1)
                    } else {
                        (k, k + half)
                    };
                    let (x1, x2) = (row[i1], row[i2]);
                    row[i1] = c[k] * x1 - sg[k] * x2;
                    row[i2] = sg[k] * x1 + c[k] * x2;
                }
            }
        }
    }
    Ok(vec![
        Tensor::from_vec(v, x.dims(), x.device())?.to_dtype(x.dtype())?
    ])
}

/// Recurrent linear attention over `[batch, time, heads * size]` Q/K/V, in f32: per step the
/// state decays (gated), takes a delta-rule correction (delta), adds `k v^T`, and is read by
/// `q`. Returns the output and the final state.
fn linear_attention(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let (q, k, v) = (arg(&args, 0)?, arg(&args, 1)?, arg(&args, 2)?);
    let (past, decay, beta) = (opt(&args, 3), opt(&args, 4), opt(&args, 5));
    let rule = node.attr_str("update_rule").unwrap_or("gated_delta");
    let (gating, delta) = match rule {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        r => bail!("update_rule `{r}` is not one of linear, gated, delta, gated_delta"),
    };
    if gating != decay.is_some() || delta != beta.is_some() {
        bail!("update_rule `{rule}` needs decay {gating} and beta {delta}");
    }
    let hq = node.attr_int("q_num_heads", 0);
    let hkv = node.attr_int("kv_num_heads", 0);
    if hq < 1 || hkv < 1 || hq % hkv != 0 {
        bail!("q_num_heads {hq} must be a positive multiple of kv_num_heads {hkv}");
    }
    let (hq, hkv) = (hq as usize, hkv as usize);
    let (b, t, qw) = q.dims3()?;
    let (kb, kt, kw) = k.dims3()?;
    let (vb, vt, vw) = v.dims3()?;
    if kb != b || vb != b || kt != t || vt != t || qw % hq != 0 || vw % hkv != 0 {
        bail!(
            "Q {:?}, K {:?} and V {:?} do not match",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let (dk, dv) = (qw / hq, vw / hkv);
    if kw != hkv * dk {
        bail!("K {:?} is not [{b}, {t}, {}]", k.dims(), hkv * dk);
    }
    let group = hq / hkv;
    let state_shape = [b, hkv, dk, dv];
    cx.fits("its state", &state_shape, DType::F32)?;
    cx.fits("its output", &[b, t, hq * dv], DType::F32)?;
    let host = |t: &Tensor| -> R<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (qs, ks, vs) = (host(q)?, host(k)?, host(v)?);
    // decay: per kv head (last dim hkv) or per key dim (hkv * dk); beta: per kv head or one.
    let decay = match decay {
        Some(d) => {
            let last = *d.dims().last().unwrap_or(&0);
            if d.dims() != [b, t, last] || (last != hkv && last != hkv * dk) {
                bail!(
                    "decay {:?} is not [{b}, {t}, {hkv} or {}]",
                    d.dims(),
                    hkv * dk
                );
            }
            Some((host(d)?, last == hkv))
        }
        None => None,
    };
    let beta = match beta {
        Some(d) => {
            let last = *d.dims().last().unwrap_or(&0);
            if d.dims() != [b, t, last] || (last != hkv && last != 1) {
                bail!("beta {:?} is not [{b}, {t}, {hkv} or 1]", d.dims());
            }
            Some((host(d)?, last))
        }
        None => None,
    };
    let (mut state, state_dtype) = match past {
        Some(p) => {
            if p.dims() != state_shape {
                bail!("past_state {:?} is not {state_shape:?}", p.dims());
            }
            (host(p)?, p.dtype())
        }
        None => (vec![0f32; b * hkv * dk * dv], q.dtype()),
    };
    let scale = node.attr_float("scale", 0.0);
    let scale = if scale == 0.0 {
        1.0 / (dk as f32).sqrt()
    } else {
        scale
    };
    let mut out = vec![0f32; b * t * hq * dv];
    let mut vt_row = vec![0f32; dv];
    for bi in 0..b {
        for ti in 0..t {
            for h in 0..hkv {
                let st = &mut state[(bi * hkv + h) * dk * dv..][..dk * dv];
                let krow = &ks[(bi * t + ti) * hkv * dk + h * dk..][..dk];
                vt_row.copy_from_slice(&vs[(bi * t + ti) * hkv * dv + h * dv..][..dv]);
                if let Some((dec, per_head)) = &decay {
                    for d in 0..dk {
                        let g = if *per_head {
                            dec[(bi * t + ti) * hkv + h]
                        } else {
                            dec[(bi * t + ti) * hkv * dk + h * dk + d]
                        };
                        let f = g.exp();
                        st[d * dv..(d + 1) * dv].iter_mut().for_each(|x| *x *= f);
                    }
                }
                if let Some((bt, last)) = &beta {
                    let bv = bt[(bi * t + ti) * last + if *last == 1 { 0 } else { h }];
                    for (m, x) in vt_row.iter_mut().enumerate() {
                        let retrieved: f32 = (0..dk).map(|d| st[d * dv + m] * krow[d]).sum();
                        *x = bv * (*x - retrieved);
                    }
                }
                for d in 0..dk {
                    for m in 0..dv {
                        st[d * dv + m] += krow[d] * vt_row[m];
                    }
                }
                for g in 0..group {
                    let qh = h * group + g;
                    let qrow = &qs[(bi * t + ti) * hq * dk + qh * dk..][..dk];
                    let orow = &mut out[(bi * t + ti) * hq * dv + qh * dv..][..dv];
                    for (m, o) in orow.iter_mut().enumerate() {
                        *o = scale * (0..dk).map(|d| qrow[d] * st[d * dv + m]).sum::<f32>();
                    }
                }
            }
        }
    }
    let dev = q.device();
    Ok(vec![
        Tensor::from_vec(out, (b, t, hq * dv), dev)?.to_dtype(q.dtype())?,
        Tensor::from_vec(state, state_shape.as_slice(), dev)?.to_dtype(state_dtype)?,
    ])
}
