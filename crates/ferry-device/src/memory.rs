//! How many bytes a model takes on a device: its weights as the runtime holds them, per
//! placement unit, the KV cache and the activations of a forward pass.
//!
//! The formulas (element counts; times the device's compute dtype size unless said):
//! - **A weight**: a float tensor, and a GGML-quantized one the runtime dequantizes (a norm,
//!   an embedding table, any with f32 kernels), is held in the compute dtype: `numel x size`.
//!   A quantized matrix kept quantized, and an ONNX initializer (graphs run in their own
//!   dtypes), take the bytes their [`Keep::Fixed`] states.
//! - **KV cache** of a decoder block: `2 x kv_heads x head_dim x context x batch`.
//! - **Activations**, the peak of one unit's forward (a device holds the largest of its units'):
//!   embeddings `B T H`; a block `2 B T H + 3 B T I` (the residual and normed states, the
//!   feed-forward's gate, up and product) plus `3 B T heads head_dim + 2 B heads T^2` (Q/K/V
//!   with K/V repeated to every head, the attention scores and their softmax), the attention
//!   in f32 when the architecture computes it so ([`ArchShape::attention_f32`], a decoder, which
//!   then also holds its `B T^2` f32 mask); the head `B T H` plus the logits `B T V`, in the
//!   compute dtype and again in f32 when that is narrower.
//! - Not counted: candle's CPU matrix multiply in bf16/f16 converts both operands to f32 for
//!   the call (a transient copy of one weight matrix at a time).

use candle_core::DType;
use serde::Serialize;

use crate::spec::DeviceSpec;

/// How the runtime holds one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// In the device's compute dtype.
    Compute,
    /// In f32 whatever the device computes in (models the runtime runs in f32 only).
    F32,
    /// Bytes that do not follow the compute dtype: a GGML matrix kept quantized (on the CPU
    /// ferry's int8 repack, on accelerators its GGML blocks), an ONNX initializer as stored.
    Fixed {
        /// Bytes on the CPU.
        cpu_bytes: u64,
        /// Bytes on a CUDA or Metal device.
        accelerator_bytes: u64,
    },
}

/// One tensor's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorCost {
    /// The tensor's name in the checkpoint.
    pub name: String,
    /// Its element count.
    pub numel: u64,
    /// How it is held.
    pub keep: Keep,
}

impl TensorCost {
    /// Bytes on `device` computing in `dtype`.
    pub fn bytes(&self, device: DeviceSpec, dtype: DType) -> u64 {
        match self.keep {
            Keep::Compute => self.numel * dtype.size_in_bytes() as u64,
            Keep::F32 => self.numel * 4,
            Keep::Fixed {
                cpu_bytes,
                accelerator_bytes,
            } => {
                if device.is_accelerator() {
                    accelerator_bytes
                } else {
                    cpu_bytes
                }
            }
        }
    }
}

/// What a unit is, for its activations and its KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Token (and position) embeddings.
    Embed,
    /// A transformer block.
    Block,
    /// Final norm and output head.
    Head,
    /// A whole model that is not split (a classifier, a graph).
    Whole,
}

/// A placement unit: what is never split across devices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unit {
    /// Its name (`embed`, `layers.3`, `head`), what `--map` regexes match.
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Its tensors (a tensor two units use, such as a tied head, is in both: each holds a copy
    /// on its device).
    pub tensors: Vec<TensorCost>,
}

impl Unit {
    /// Weight bytes on `device` computing in `dtype`.
    pub fn weight_bytes(&self, device: DeviceSpec, dtype: DType) -> u64 {
        self.tensors.iter().map(|t| t.bytes(device, dtype)).sum()
    }
}

/// The sizes the KV-cache and activation formulas need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArchShape {
    /// Hidden size `H`.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Feed-forward size `I`.
    pub intermediate: usize,
    /// Output classes or vocabulary `V` for a head producing logits; `None` for hidden states.
    pub vocab: Option<usize>,
    /// Whether generation keeps a KV cache (causal decoders).
    pub kv_cache: bool,
    /// Whether attention (scores, softmax, their product with V, the mask) is computed in f32
    /// whatever the compute dtype (ferry's decoders).
    pub attention_f32: bool,
}

/// The batch and context a placement is sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Sequences per forward pass.
    pub batch: usize,
    /// Tokens per sequence.
    pub context: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            batch: 1,
            context: 4096,
        }
    }
}

impl ArchShape {
    /// A decoder block's KV cache in bytes: `2 x kv_heads x head_dim x context x batch x size`.
    pub fn kv_bytes(&self, w: Workload, dtype: DType) -> u64 {
        if !self.kv_cache {
            return 0;
        }
        2 * (self.kv_heads * self.head_dim) as u64
            * w.context as u64
            * w.batch as u64
            * dtype.size_in_bytes() as u64
    }

    /// The peak activation bytes of one unit of `role` (see the module's formulas).
    pub fn activation_bytes(&self, role: Role, w: Workload, dtype: DType) -> u64 {
        let (b, t) = (w.batch as u64, w.context as u64);
        let (h, nh, hd, i) = (
            self.hidden as u64,
            self.heads as u64,
            self.head_dim as u64,
            self.intermediate as u64,
        );
        let size = dtype.size_in_bytes() as u64;
        let (att_size, mask) = if self.attention_f32 {
            (4, b * t * t * 4)
        } else {
            (size, 0)
        };
        match role {
            Role::Embed => b * t * h * size,
            Role::Block => {
                (2 * b * t * h + 3 * b * t * i) * size
                    + (3 * b * t * nh * hd + 2 * b * nh * t * t) * att_size
                    + mask
            }
            Role::Head => {
                let f32_copy = if size == 4 { 0 } else { 4 };
                b * t * h * size + b * t * self.vocab.unwrap_or(0) as u64 * (size + f32_copy)
            }
            Role::Whole => 0,
        }
    }
}

/// A model's units and shape, what the planner places.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCost {
    /// The architecture's name, for messages.
    pub arch: String,
    /// Units in forward order.
    pub units: Vec<Unit>,
    /// The sizes for KV cache and activations; `None` when unknown (counted as 0).
    pub shape: Option<ArchShape>,
    /// Whether units may go to different devices (the Llama family's runtime moves the hidden
    /// state between blocks; other models run on one device).
    pub splittable: bool,
    /// The dtype the model computes in on every device, when it is its own rather than the
    /// device's (a ferry classifier: f32; an ONNX graph: its weights' float type).
    #[serde(serialize_with = "dtype_or_none")]
    pub dtype: Option<DType>,
}

fn dtype_or_none<S: serde::Serializer>(
    d: &Option<DType>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(d.as_str()),
        None => s.serialize_none(),
    }
}

impl ModelCost {
    /// Every tensor's bytes on `device` in `dtype`, summed over units.
    pub fn weight_bytes(&self, device: DeviceSpec, dtype: DType) -> u64 {
        self.units
            .iter()
            .map(|u| u.weight_bytes(device, dtype))
            .sum()
    }
}

/// Bytes as MiB, rounded up, for messages.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_count_what_they_say() {
        // SmolLM2-135M's shape.
        let s = ArchShape {
            hidden: 576,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            intermediate: 1536,
            vocab: Some(49152),
            kv_cache: true,
            attention_f32: true,
        };
        let w = Workload {
            batch: 2,
            context: 128,
        };
        assert_eq!(s.kv_bytes(w, DType::F32), 2 * 3 * 64 * 128 * 2 * 4);
        assert_eq!(s.kv_bytes(w, DType::BF16), 2 * 3 * 64 * 128 * 2 * 2);
        let (states, attention, mask) = (
            2 * 2 * 128 * 576 + 3 * 2 * 128 * 1536,
            3 * 2 * 128 * 9 * 64 + 2 * 2 * 9 * 128 * 128,
            2 * 128 * 128,
        );
        assert_eq!(
            s.activation_bytes(Role::Block, w, DType::F32),
            (states + attention + mask) * 4
        );
        // bf16: the states in bf16, the attention and its mask in f32.
        assert_eq!(
            s.activation_bytes(Role::Block, w, DType::BF16),
            states * 2 + (attention + mask) * 4
        );
        assert_eq!(
            s.activation_bytes(Role::Head, w, DType::BF16),
            2 * 128 * 576 * 2 + 2 * 128 * 49152 * (2 + 4)
        );
        assert_eq!(
            s.activation_bytes(Role::Head, w, DType::F32),
            (2 * 128 * 576 + 2 * 128 * 49152) * 4
        );
        let enc = ArchShape {
            kv_cache: false,
            attention_f32: false,
            ..s
        };
        assert_eq!(enc.kv_bytes(w, DType::F32), 0);
        assert_eq!(
            enc.activation_bytes(Role::Block, w, DType::BF16),
            (states + attention) * 2
        );
        let t = TensorCost {
            name: "w".into(),
            numel: 1000,
            keep: Keep::Fixed {
                cpu_bytes: 1375,
                accelerator_bytes: 563,
            },
        };
        assert_eq!(t.bytes(DeviceSpec::CPU, DType::F32), 1375);
        assert_eq!(t.bytes(DeviceSpec::cuda(0), DType::BF16), 563);
        let f = TensorCost {
            keep: Keep::Compute,
            ..t
        };
        assert_eq!(f.bytes(DeviceSpec::cuda(0), DType::BF16), 2000);
    }
}
