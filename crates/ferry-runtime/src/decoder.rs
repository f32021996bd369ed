//! Llama-family decoders (Llama, Mistral, SmolLM2, Qwen2) over candle-nn's kernels (RMS norm,
//! rotary embedding, softmax), candle's `QMatMul` for GGML-quantized weights, and ferry's
//! packed AVX-512 GEMM (`ferry_kernels::PackedMatrix`, packed once at load) for f32 ones.
//!
//! candle-transformers' `llama` and `quantized_llama` return the last position's logits only and
//! keep their blocks private; verification needs every position's logits and every block's
//! hidden state, so the blocks are composed here from the same pieces. Weights use Hugging
//! Face names and layouts (a llama.cpp GGUF is read through `ferry_io::arch`, its Q/K rows put
//! back), so the rotary embedding is the half-split one (`candle_nn::rotary_emb::rope`).

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::ops::{rms_norm, softmax_last_dim};
use candle_nn::rotary_emb::rope;
use candle_transformers::utils::repeat_kv;
use ferry_kernels::qgemm::PackedQ8;
use ferry_kernels::{
    causal_attention, linear_packed, linear_q8, silu_mul, CausalMask, PackedMatrix, Rotary,
};

use crate::activations::{token_flags, ActivationStats};
use crate::config::DecoderConfig;
use crate::error::Result;
use crate::placement::Placement;
use crate::weights::Weights;

/// One projection `x W^T (+ b)`: f32 weights packed once for ferry's AVX-512 GEMM on CPUs that
/// have it (the bias is the product's starting value); GGML weights kept quantized packed for
/// ferry's int8 GEMM on CPUs with AVX-512 VNNI or AVX2 + FMA (activations in 8 bits per block of 32, as
/// llama.cpp's CPU path); candle's `QMatMul` otherwise (types the int8 kernel does not read,
/// other devices).
enum Proj {
    Packed { w: PackedMatrix, bias: Tensor },
    Int8 { w: PackedQ8, bias: Option<Tensor> },
    Candle { w: QMatMul, bias: Option<Tensor> },
}

impl Proj {
    /// The matrix `name` (`[out, in]`) with an optional bias `[out]`, on `device` in `dtype`.
    fn load(
        w: &Weights,
        name: &str,
        (out, inp): (usize, usize),
        bias: Option<Tensor>,
        (device, dtype): (&Device, DType),
    ) -> Result<Proj> {
        if let Some(q) = w.packed_q8(name, &[out, inp], device)? {
            return Ok(Proj::Int8 {
                w: q,
                bias: bias.map(|b| b.to_dtype(DType::F32)).transpose()?,
            });
        }
        let m = w.matmul_on(name, &[out, inp], device, dtype)?;
        if let (QMatMul::Tensor(t), true, DType::F32) = (&m, device.is_cpu(), dtype) {
            let wt: Vec<f32> = t.t()?.contiguous()?.flatten_all()?.to_vec1()?;
            if let Some(packed) = PackedMatrix::pack(&wt, inp, out) {
                let bias = match bias {
                    Some(b) => b,
                    None => Tensor::zeros(out, DType::F32, device)?,
                };
                return Ok(Proj::Packed { w: packed, bias });
            }
        }
        Ok(Proj::Candle { w: m, bias })
    }

    /// `x W^T (+ b)` in `x`'s dtype (quantized weights take f32 inputs: the product is cast
    /// back).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let f32 = || x.to_dtype(DType::F32)?.contiguous();
        Ok(match self {
            Proj::Packed { w, bias } => linear_packed(&x.contiguous()?, w, bias, None)?,
            Proj::Int8 { w, bias } => linear_q8(&f32()?, w, bias.as_ref())?.to_dtype(dt)?,
            Proj::Candle { w, bias } => {
                let y = match w {
                    QMatMul::Tensor(t) if t.dtype() == dt => w.forward(x)?,
                    _ => w.forward(&f32()?)?.to_dtype(dt)?,
                };
                match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
        })
    }
}

/// One transformer block, on its device in its dtype.
struct Block {
    /// Its index (`model.layers.N`), which names its projections for calibration.
    index: usize,
    device: Device,
    dtype: DType,
    attn_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    ffn_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
}

/// A loaded decoder: the embedding, each block and the head on the device and in the dtype
/// its [`Placement`] gives (`embed`, `layers.N`, `head`); the hidden state moves between
/// devices where consecutive units differ.
pub struct Decoder {
    cfg: DecoderConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    head: Proj,
    /// The head's device and dtype.
    head_at: (Device, DType),
}

/// What a forward pass returns.
pub struct DecoderOutput {
    /// Next-token logits at every position, `[batch, seq, vocab]`, f32.
    pub logits: Tensor,
    /// Hidden states `[batch, seq, hidden]`: after the embedding, after each block, and after
    /// the final norm (empty unless asked for).
    pub taps: Vec<Tensor>,
}

impl Decoder {
    /// Loads the decoder described by `cfg` from `w` (Hugging Face names), each unit where
    /// `place` says.
    pub fn load(w: &Weights, cfg: &DecoderConfig, place: &Placement) -> Result<Decoder> {
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let (q_out, kv_out) = (cfg.heads * hd, cfg.kv_heads * hd);
        // Not preallocated: the layer count comes from the file.
        let mut blocks = Vec::new();
        for i in 0..cfg.layers {
            let at = place.of(&format!("layers.{i}"));
            // `{stem}.weight` `[out, inp]` and its bias when present; Q/K/V biases are
            // required where the architecture has them (Qwen2), any other is read if there
            // (Llama's `attention_bias`, which covers `o_proj` too).
            let proj = |stem: &str, out: usize, inp: usize, required: bool| -> Result<Proj> {
                let stem = format!("model.layers.{i}.{stem}");
                let b = format!("{stem}.bias");
                let bias = (required || w.has(&b))
                    .then(|| w.tensor_on(&b, &[out], at.0, at.1))
                    .transpose()?;
                Proj::load(w, &format!("{stem}.weight"), (out, inp), bias, at)
            };
            let norm = |name: &str| {
                w.tensor_on(&format!("model.layers.{i}.{name}.weight"), &[h], at.0, at.1)
            };
            let (ff, qkv) = (cfg.intermediate, cfg.qkv_bias);
            blocks.push(Block {
                index: i,
                device: at.0.clone(),
                dtype: at.1,
                attn_norm: norm("input_layernorm")?,
                q: proj("self_attn.q_proj", q_out, h, qkv)?,
                k: proj("self_attn.k_proj", kv_out, h, qkv)?,
                v: proj("self_attn.v_proj", kv_out, h, qkv)?,
                o: proj("self_attn.o_proj", h, q_out, false)?,
                ffn_norm: norm("post_attention_layernorm")?,
                gate: proj("mlp.gate_proj", ff, h, false)?,
                up: proj("mlp.up_proj", ff, h, false)?,
                down: proj("mlp.down_proj", h, ff, false)?,
            });
        }
        let embed_name = "model.embed_tokens.weight";
        // Untied models must have their head: an absent one is an error naming it, not a
        // silent tie.
        let head_name = if cfg.tied {
            embed_name
        } else {
            "lm_head.weight"
        };
        let (ed, et) = place.of("embed");
        let head_at = place.of("head");
        Ok(Decoder {
            cfg: cfg.clone(),
            embed: w.tensor_on(embed_name, &[cfg.vocab, h], ed, et)?,
            blocks,
            norm: w.tensor_on("model.norm.weight", &[h], head_at.0, head_at.1)?,
            head: Proj::load(w, head_name, (cfg.vocab, h), None, head_at)?,
            head_at: (head_at.0.clone(), head_at.1),
        })
    }

    /// Rotary cos/sin tables `[seq, head_dim / 2]`, computed in f32 on the CPU the way
    /// transformers' `LlamaRotaryEmbedding` does.
    fn rotary(&self, seq: usize) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim;
        let theta = self.cfg.rope_theta as f32;
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        let mut cos = Vec::with_capacity(seq * hd / 2);
        let mut sin = Vec::with_capacity(seq * hd / 2);
        for t in 0..seq {
            for f in &inv {
                let a = t as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (seq, hd / 2), &Device::Cpu)?,
            Tensor::from_vec(sin, (seq, hd / 2), &Device::Cpu)?,
        ))
    }

    /// Additive attention mask `[batch, 1, seq, seq]` (f32, on the CPU): causal, keys at or
    /// beyond the sliding window (Mistral's) and padded keys (mask 0) hidden.
    fn attention_mask(&self, b: usize, t: usize, keep: Option<&[u8]>) -> Result<Tensor> {
        let window = self.cfg.sliding_window.unwrap_or(usize::MAX);
        let mut out = vec![0f32; b * t * t];
        for bi in 0..b {
            for i in 0..t {
                for j in 0..t {
                    if j > i || i - j >= window || keep.is_some_and(|k| k[bi * t + j] == 0) {
                        out[(bi * t + i) * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, (b, 1, t, t), &Device::Cpu)?)
    }

    /// Runs `ids` (`[batch, seq]`, u32) with an optional `mask` (`[batch, seq]`, 1 for real
    /// tokens; padding on the right). With `taps`, every block's hidden state is kept.
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        taps: bool,
    ) -> Result<DecoderOutput> {
        self.run(ids, mask, taps, None)
    }

    /// As [`Decoder::forward`] (no taps), adding every projection's input to `stats` (real
    /// tokens only): Q/K/V, O, gate/up and down of each block under their Hugging Face names,
    /// and an untied head's (`lm_head.weight`; a head tied to the embedding table is left out,
    /// as llama.cpp's imatrix leaves `token_embd` out).
    pub fn forward_collecting(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        stats: &mut ActivationStats,
    ) -> Result<DecoderOutput> {
        self.run(ids, mask, false, Some(stats))
    }

    /// The forward pass behind [`Decoder::forward`] and [`Decoder::forward_collecting`]:
    /// every block's hidden state kept with `taps`, projection inputs fed to `stats` when
    /// given.
    fn run(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        taps: bool,
        stats: Option<&mut ActivationStats>,
    ) -> Result<DecoderOutput> {
        // The mask as host flags, read once: the attention and the statistics share them.
        let keep = token_flags(mask)?;
        let (b, t) = ids.dims2()?;
        if let Some(k) = keep.as_deref().filter(|k| k.len() != b * t) {
            return Err(candle_core::Error::Msg(format!(
                "the attention mask has {} values for ids of batch {b} x seq {t}",
                k.len()
            ))
            .into());
        }
        let mut pass = Pass {
            b,
            t,
            keep: keep.as_deref(),
            stats,
        };
        let c = &self.cfg;
        let (cos, sin) = self.rotary(t)?;
        let bias = self.attention_mask(b, t, keep.as_deref())?;
        // The rotary tables on each block's device in its dtype (the mask in f32, with the
        // scores), made once per placement change.
        let mut tables: Option<(Device, DType, [Tensor; 3])> = None;
        let mut x = self
            .embed
            .embedding(&ids.flatten_all()?.to_device(self.embed.device())?)?
            .reshape((b, t, c.hidden))?;
        let mut kept = Vec::new();
        if taps {
            kept.push(x.to_dtype(DType::F32)?);
        }
        for blk in &self.blocks {
            x = x.to_device(&blk.device)?.to_dtype(blk.dtype)?;
            let on_block = block_tables(&mut tables, blk, [&cos, &sin, &bias])?;
            x = self.block(blk, x, on_block, &mut pass)?;
            if taps {
                kept.push(x.to_dtype(DType::F32)?);
            }
        }
        let x = x.to_device(&self.head_at.0)?.to_dtype(self.head_at.1)?;
        let x = rms_norm(&x, &self.norm, c.rms_eps as f32)?;
        if taps {
            kept.push(x.to_dtype(DType::F32)?);
        }
        if !c.tied {
            pass.observe(None, &["lm_head"], &x)?;
        }
        let logits = self.head.forward(&x)?.to_dtype(DType::F32)?;
        debug_assert_eq!(logits.dim(D::Minus1)?, c.vocab);
        Ok(DecoderOutput { logits, taps: kept })
    }

    /// Block `blk` on `x` (on its device in its dtype): attention, then the gated MLP, each
    /// added to the residual stream; the projections' inputs go to `pass`'s statistics.
    fn block(
        &self,
        blk: &Block,
        x: Tensor,
        tables: &[Tensor; 3],
        pass: &mut Pass,
    ) -> Result<Tensor> {
        let eps = self.cfg.rms_eps as f32;
        let h = rms_norm(&x, &blk.attn_norm, eps)?;
        let at = Some(blk.index);
        pass.observe(
            at,
            &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            &h,
        )?;
        let y = self.attention(blk, &h, tables, pass)?;
        pass.observe(at, &["self_attn.o_proj"], &y)?;
        let x = (x + blk.o.forward(&y)?)?;
        let h = rms_norm(&x, &blk.ffn_norm, eps)?;
        pass.observe(at, &["mlp.gate_proj", "mlp.up_proj"], &h)?;
        let ff = silu_mul(&blk.gate.forward(&h)?, &blk.up.forward(&h)?)?;
        pass.observe(at, &["mlp.down_proj"], &ff)?;
        Ok((x + blk.down.forward(&ff)?)?)
    }

    /// Block `blk`'s self-attention on its normed input `h` `[batch, seq, hidden]`, with the
    /// rotary tables and mask on its device: the context `[batch, seq, heads * head_dim]` in
    /// the block's dtype, before the output projection.
    fn attention(
        &self,
        blk: &Block,
        h: &Tensor,
        [cos, sin, bias]: &[Tensor; 3],
        pass: &Pass,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (nh, nkv, hd) = (c.heads, c.kv_heads, c.head_dim);
        let (b, t) = (pass.b, pass.t);
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = (blk.q.forward(h)?, blk.k.forward(h)?, blk.v.forward(h)?);
        // bf16/f16 blocks keep the composed form their agreement with f32 was measured on
        // (docs/benchmarks.md): with ~60 probe tokens per language, one top-1 that flips
        // moves a language across the bf16 preset's 0.9, and the kernel's different (not
        // worse) f32 rounding flipped two in Portuguese.
        let y = if blk.device.is_cpu() && blk.dtype == DType::F32 {
            // ferry's kernel: the heads read from the projections and rotated as they are
            // gathered (candle's rope, the same bits), keys and values shared by their query
            // heads, only the visible keys weighed, the context written merged.
            let mask = CausalMask {
                keep: pass.keep,
                window: c.sliding_window,
            };
            let rotary = Rotary { cos, sin };
            causal_attention(&q, &k, &v, (nh, nkv), Some(rotary), scale as f32, mask)?
        } else {
            let heads = |x: Tensor, n: usize| -> Result<Tensor> {
                Ok(x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
            };
            // Q, K and V in the block's dtype; the attention itself (scores, softmax, their
            // product with V) in f32, as PyTorch's fused attention accumulates in any dtype.
            let f32 = |x: Tensor| x.to_dtype(DType::F32);
            let q = f32(rope(&heads(q, nh)?, cos, sin)?)?;
            let k = f32(rope(&heads(k, nkv)?, cos, sin)?)?;
            let v = f32(heads(v, nkv)?)?;
            let k = repeat_kv(k, nh / nkv)?.contiguous()?;
            let v = repeat_kv(v, nh / nkv)?.contiguous()?;
            let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
            softmax_last_dim(&att)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, nh * hd))?
        };
        Ok(y.to_dtype(blk.dtype)?)
    }
}

/// One forward pass's batch shape, mask flags and statistics, shared by its blocks.
struct Pass<'a> {
    /// Batch size.
    b: usize,
    /// Sequence length.
    t: usize,
    /// The mask as host flags (1 for real tokens), when given.
    keep: Option<&'a [u8]>,
    /// Where projection inputs are recorded, when collecting.
    stats: Option<&'a mut ActivationStats>,
}

impl Pass<'_> {
    /// Feeds `x` to the statistics of the named projections of block `i` (top-level names
    /// without one), when collecting.
    fn observe(&mut self, i: Option<usize>, stems: &[&str], x: &Tensor) -> Result<()> {
        let Some(s) = self.stats.as_deref_mut() else {
            return Ok(());
        };
        let names: Vec<String> = stems
            .iter()
            .map(|stem| match i {
                Some(i) => format!("model.layers.{i}.{stem}.weight"),
                None => format!("{stem}.weight"),
            })
            .collect();
        s.record(&names, x, self.keep)
    }
}

/// The rotary tables and mask (`[cos, sin, mask]`, CPU f32) on `blk`'s device, the tables in
/// its dtype and the mask in f32: `cache`'s when made for the same device and dtype, else
/// made again and kept there.
fn block_tables<'a>(
    cache: &'a mut Option<(Device, DType, [Tensor; 3])>,
    blk: &Block,
    [cos, sin, mask]: [&Tensor; 3],
) -> Result<&'a [Tensor; 3]> {
    let stale = cache
        .as_ref()
        .is_none_or(|(d, t, _)| !d.same_device(&blk.device) || *t != blk.dtype);
    if stale {
        let on = |t: &Tensor| t.to_device(&blk.device)?.to_dtype(blk.dtype);
        let mask = mask.to_device(&blk.device)?;
        *cache = Some((blk.device.clone(), blk.dtype, [on(cos)?, on(sin)?, mask]));
    }
    Ok(&cache.as_ref().expect("set above").2)
}
