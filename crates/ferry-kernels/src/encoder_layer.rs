//! A whole transformer encoder layer (self-attention and feed-forward, each with its residual
//! and layer norm, post- or pre-norm) as one op with its backward written out.
//!
//! Composed from the per-part ops ([`crate::linear`], [`crate::self_attention`],
//! [`crate::add_layer_norm`]), a layer makes seven graph nodes (post-norm; nine pre-norm), and
//! candle's backward gives every input of every node its gradient as
//! `zeros_like(input) + grad`: a zero fill and an addition per activation, about 15 MB per
//! layer at batch 32 x 64, width 128. Here the activations' gradients stay inside the op, in
//! buffers it writes once; candle sees one node with two inputs, the layer input and its
//! parameters.
//!
//! The parameters travel as one flat vector (a custom op takes at most three inputs), built
//! by a differentiable `cat` of the flattened tensors, so each parameter still gets its own
//! gradient from candle. That costs a copy of the parameters forward and two passes over
//! their gradients backward: small next to the activations at width 128 (200k parameters
//! against 3.7M activation values per layer at batch 32 x 64), about even at BERT-base width
//! with short batches (7.1M parameters per layer).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention::{self, Spec, HEAD_SIZES};
use super::linear::{self, Tape};
use super::{f32_slice, fast_path, host_slices, layer_norm, Activation};

/// The form of a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderLayerSpec {
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Normalize before each block (pre-norm) instead of after (post-norm).
    pub norm_first: bool,
    /// Layer-norm epsilon.
    pub eps: f64,
}

/// A layer's parameters as `(weight, bias)` pairs in PyTorch's layout (`nn.Linear` weights
/// `[out, in]`; layer norms `(gamma, beta)`).
#[derive(Debug, Clone, Copy)]
pub struct EncoderLayerParams<'a> {
    /// `[3 dim, dim]`, `[3 dim]`: the packed query/key/value projection.
    pub in_proj: (&'a Tensor, &'a Tensor),
    /// `[dim, dim]`, `[dim]`.
    pub out_proj: (&'a Tensor, &'a Tensor),
    /// The attention block's layer norm, `[dim]` each.
    pub norm1: (&'a Tensor, &'a Tensor),
    /// `[ff, dim]`, `[ff]`.
    pub linear1: (&'a Tensor, &'a Tensor),
    /// `[dim, ff]`, `[dim]`.
    pub linear2: (&'a Tensor, &'a Tensor),
    /// The feed-forward block's layer norm, `[dim]` each.
    pub norm2: (&'a Tensor, &'a Tensor),
}

impl EncoderLayerParams<'_> {
    /// The tensors in flat order, with the shape each must have for width `d` and
    /// feed-forward width `ff`.
    fn expected(&self, d: usize, ff: usize) -> [(&Tensor, Vec<usize>, &'static str); 12] {
        let p = self;
        [
            (p.in_proj.0, vec![3 * d, d], "in_proj weight"),
            (p.in_proj.1, vec![3 * d], "in_proj bias"),
            (p.out_proj.0, vec![d, d], "out_proj weight"),
            (p.out_proj.1, vec![d], "out_proj bias"),
            (p.norm1.0, vec![d], "norm1 weight"),
            (p.norm1.1, vec![d], "norm1 bias"),
            (p.linear1.0, vec![ff, d], "linear1 weight"),
            (p.linear1.1, vec![ff], "linear1 bias"),
            (p.linear2.0, vec![d, ff], "linear2 weight"),
            (p.linear2.1, vec![d], "linear2 bias"),
            (p.norm2.0, vec![d], "norm2 weight"),
            (p.norm2.1, vec![d], "norm2 bias"),
        ]
    }
}

/// One encoder layer over `x` `[batch, seq, dim]` as a single op, or `None` where it does
/// not apply (not CPU f32, or a head size without a kernel): the caller then composes the
/// layer from its parts, which computes the same function. `key_bias` `[batch, seq]` is
/// added to every query's scores (see `self_attention`).
///
/// A parameter of the wrong shape is an error naming it.
pub fn encoder_layer(
    x: &Tensor,
    params: &EncoderLayerParams<'_>,
    spec: &EncoderLayerSpec,
    key_bias: Option<&Tensor>,
) -> candle_core::Result<Option<Tensor>> {
    let (b, s, d) = x.dims3()?;
    let ff = params.linear1.0.dim(0)?;
    let expected = params.expected(d, ff);
    let tensors: Vec<&Tensor> = expected.iter().map(|e| e.0).collect();
    let head_ok = spec.heads > 0 && d % spec.heads == 0 && HEAD_SIZES.contains(&(d / spec.heads));
    if !head_ok || !fast_path(&[x]) || !fast_path(&tensors) {
        return Ok(None);
    }
    for (t, dims, name) in &expected {
        if t.dims() != dims.as_slice() {
            candle_core::bail!(
                "encoder layer: {name} is {:?}, expected {dims:?} for width {d}, feed-forward {ff}",
                t.dims()
            );
        }
    }
    let bias = attention::key_bias_values(key_bias, (b, s))?;
    let flat = Tensor::cat(
        &tensors
            .iter()
            .map(|t| t.flatten_all())
            .collect::<candle_core::Result<Vec<_>>>()?,
        0,
    )?;
    let op = Layer {
        spec: *spec,
        ff,
        bias,
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op2(&flat, op).map(Some)
}

struct Layer {
    spec: EncoderLayerSpec,
    ff: usize,
    bias: Option<Vec<f32>>,
    /// The forward's intermediate values, for the backward.
    saved: Mutex<Option<Saved>>,
}

/// Intermediate values of the forward pass. Post-norm keeps `a` and `f` (the residual
/// branches, which the layer norms' backward adds back in); pre-norm keeps `n1` and `n2`
/// (the normalized inputs of the two blocks).
#[derive(Default)]
struct Saved {
    qkv: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    x1: Vec<f32>,
    h: Vec<f32>,
    h_pre: Vec<f32>,
    a: Vec<f32>,
    f: Vec<f32>,
    n1: Vec<f32>,
    n2: Vec<f32>,
}

impl Saved {
    /// The tape of the first feed-forward linear layer, given its input.
    fn linear1_tape<'a>(&'a self, x: &'a [f32], w: &'a [f32]) -> Tape<'a> {
        Tape {
            x,
            w,
            y: &self.h,
            pre: &self.h_pre,
        }
    }
}

/// The flat parameter vector cut into its parts (the order of
/// [`EncoderLayerParams::expected`]; each norm's gamma and beta stay together, as the layer
/// norm kernels take them).
struct Parts<'a> {
    in_w: &'a [f32],
    in_b: &'a [f32],
    out_w: &'a [f32],
    out_b: &'a [f32],
    norm1: &'a [f32],
    l1_w: &'a [f32],
    l1_b: &'a [f32],
    l2_w: &'a [f32],
    l2_b: &'a [f32],
    norm2: &'a [f32],
}

impl<'a> Parts<'a> {
    fn new(flat: &'a [f32], d: usize, ff: usize) -> candle_core::Result<Self> {
        let want = 4 * d * d + 4 * d + 2 * ff * d + ff + 5 * d;
        if flat.len() != want {
            candle_core::bail!("encoder layer: {} parameters, expected {want}", flat.len());
        }
        let mut rest = flat;
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        };
        Ok(Parts {
            in_w: take(3 * d * d),
            in_b: take(3 * d),
            out_w: take(d * d),
            out_b: take(d),
            norm1: take(2 * d),
            l1_w: take(ff * d),
            l1_b: take(ff),
            l2_w: take(d * ff),
            l2_b: take(d),
            norm2: take(2 * d),
        })
    }
}

/// `a + b`, element by element, in parallel.
fn sum(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = a.to_vec();
    out.par_chunks_mut(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .for_each(|(o, b)| o.iter_mut().zip(b).for_each(|(o, b)| *o += b));
    out
}

impl Layer {
    fn attention_spec(&self, (b, s, d): (usize, usize, usize)) -> Spec {
        Spec::self_attention(self.spec.heads, (b, s, 3 * d))
    }

    /// The forward over host slices: the output and what the backward needs.
    fn forward(&self, x: &[f32], p: &Parts, shape: (usize, usize, usize)) -> (Vec<f32>, Saved) {
        let (b, s, d) = shape;
        let (n, ff, eps) = (b * s, self.ff, self.spec.eps);
        let act = Some(self.spec.activation);
        let mut sv = Saved::default();
        let attn = |sv: &mut Saved, input: &[f32]| {
            sv.qkv = linear::forward_host(input, p.in_w, p.in_b, (n, d, 3 * d), None).0;
            let spec = self.attention_spec(shape);
            (sv.ctx, sv.probs) =
                attention::forward_host(&sv.qkv, &spec, self.bias.as_deref(), true);
            linear::forward_host(&sv.ctx, p.out_w, p.out_b, (n, d, d), None).0
        };
        let y = if self.spec.norm_first {
            let n1 = layer_norm::forward(x, None, p.norm1, eps);
            let a = attn(&mut sv, &n1);
            sv.n1 = n1;
            sv.x1 = sum(x, &a);
            sv.n2 = layer_norm::forward(&sv.x1, None, p.norm2, eps);
            (sv.h, sv.h_pre) = linear::forward_host(&sv.n2, p.l1_w, p.l1_b, (n, d, ff), act);
            let f = linear::forward_host(&sv.h, p.l2_w, p.l2_b, (n, ff, d), None).0;
            sum(&sv.x1, &f)
        } else {
            sv.a = attn(&mut sv, x);
            sv.x1 = layer_norm::forward(x, Some(&sv.a), p.norm1, eps);
            (sv.h, sv.h_pre) = linear::forward_host(&sv.x1, p.l1_w, p.l1_b, (n, d, ff), act);
            sv.f = linear::forward_host(&sv.h, p.l2_w, p.l2_b, (n, ff, d), None).0;
            layer_norm::forward(&sv.x1, Some(&sv.f), p.norm2, eps)
        };
        (y, sv)
    }

    /// The backward over host slices: `dx` and the flat parameter gradient.
    fn backward(
        &self,
        (x, dy): (&[f32], &[f32]),
        p: &Parts,
        sv: &Saved,
        shape: (usize, usize, usize),
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let (b, s, d) = shape;
        let (n, ff, eps) = (b * s, self.ff, self.spec.eps);
        let act = Some(self.spec.activation);
        let spec = self.attention_spec(shape);
        // The attention block's backward from the gradient of its output `a`: d(input of
        // in_proj) and the gradients of in_proj and out_proj.
        let attn_back = |da: &[f32], input: &[f32]| -> candle_core::Result<_> {
            let (dctx, dow, dob) =
                linear::backward_host(&Tape::plain(&sv.ctx, p.out_w), da, (n, d, d), None);
            let dqkv = attention::backward_host(&sv.qkv, &sv.probs, &dctx, &spec)?;
            let (din, diw, dib) =
                linear::backward_host(&Tape::plain(input, p.in_w), &dqkv, (n, d, 3 * d), None);
            Ok((din, [diw, dib, dow, dob]))
        };
        let (dx, dattn, dn1, dff, dn2) = if self.spec.norm_first {
            let (dh, dl2w, dl2b) =
                linear::backward_host(&Tape::plain(&sv.h, p.l2_w), dy, (n, ff, d), None);
            let (dn2_in, dl1w, dl1b) =
                linear::backward_host(&sv.linear1_tape(&sv.n2, p.l1_w), &dh, (n, d, ff), act);
            let (dx1_ln, dn2) = layer_norm::backward(&sv.x1, None, p.norm2, &dn2_in, eps);
            let dx1 = sum(dy, &dx1_ln);
            let (dn1_in, dattn) = attn_back(&dx1, &sv.n1)?;
            let (dx_ln, dn1) = layer_norm::backward(x, None, p.norm1, &dn1_in, eps);
            (sum(&dx1, &dx_ln), dattn, dn1, [dl1w, dl1b, dl2w, dl2b], dn2)
        } else {
            let (d2, dn2) = layer_norm::backward(&sv.x1, Some(&sv.f), p.norm2, dy, eps);
            let (dh, dl2w, dl2b) =
                linear::backward_host(&Tape::plain(&sv.h, p.l2_w), &d2, (n, ff, d), None);
            let (dx1_ff, dl1w, dl1b) =
                linear::backward_host(&sv.linear1_tape(&sv.x1, p.l1_w), &dh, (n, d, ff), act);
            let dx1 = sum(&d2, &dx1_ff);
            let (d1, dn1) = layer_norm::backward(x, Some(&sv.a), p.norm1, &dx1, eps);
            let (dxa, dattn) = attn_back(&d1, x)?;
            (sum(&d1, &dxa), dattn, dn1, [dl1w, dl1b, dl2w, dl2b], dn2)
        };
        let [diw, dib, dow, dob] = dattn;
        let [dl1w, dl1b, dl2w, dl2b] = dff;
        let dflat = [diw, dib, dow, dob, dn1, dl1w, dl1b, dl2w, dl2b, dn2].concat();
        Ok((dx, dflat))
    }
}

impl CustomOp2 for Layer {
    fn name(&self) -> &'static str {
        "ferry-encoder-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let flat = f32_slice(s2, l2, self.name())?;
        let shape = l1.shape().dims3()?;
        let parts = Parts::new(flat, shape.2, self.ff)?;
        let (y, saved) = self.forward(x, &parts, shape);
        *self.saved.lock().expect("encoder layer cache") = Some(saved);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        flat: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().expect("encoder layer cache").take();
        let Some(saved) = saved else {
            candle_core::bail!("encoder layer backward ran twice or without its forward");
        };
        let shape = x.dims3()?;
        let (dx, dflat) = host_slices(&[x, flat, g], |sl| {
            let parts = Parts::new(sl[1], shape.2, self.ff)?;
            self.backward((sl[0], sl[2]), &parts, &saved, shape)
        })??;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dflat, flat.shape(), flat.device())?),
        ))
    }
}
