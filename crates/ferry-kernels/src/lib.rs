//! ferry-kernels: fast CPU kernels on candle, shared by training (ferry-train, which needs
//! their backward passes) and graph execution (ferry-graph, which runs fused ops with them):
//! softmax, layer normalization, embedding lookup (with or without positions), linear layers,
//! self-attention, and a whole transformer encoder layer as one op.
//!
//! candle's fused `softmax_last_dim`, `layer_norm` and `rms_norm` have no backward pass
//! (candle issues #2168, #2977, #3011): gradients through them silently vanish. These ops
//! have one. On CPU with f32 they run as single-pass custom kernels whose backward is also a
//! kernel; elsewhere they are composed from candle primitives, which autograd differentiates.
//! Both paths are tested against each other and against finite differences.

#![warn(missing_docs)]

mod activation;
mod attention;
mod causal_attention;
pub mod cpu;
mod embedding;
mod encoder_layer;
mod fast_exp;
mod gemm;
mod host;
mod inference;
mod layer_norm;
mod linear;
mod packed_gemm;
pub mod qgemm;
mod softmax;
#[cfg(test)]
mod tests;

pub use activation::Activation;
pub use attention::{attention_inference, self_attention};
pub use causal_attention::{causal_attention, CausalMask, Rotary};
pub use embedding::{embedding, embedding_with_positions};
pub use encoder_layer::{encoder_layer, EncoderLayerParams, EncoderLayerSpec};
pub use inference::{erf_fast, gelu_erf, linear_in_out, linear_packed, linear_q8, silu_mul};
pub use layer_norm::{add_layer_norm, layer_norm};
pub use linear::linear;
pub use packed_gemm::{avx512_available, gemm_packed, PackedMatrix};
pub use softmax::{log_softmax, softmax_last_dim};

pub(crate) use host::{f32_slice, fast_path, host_slices};

/// Process-wide settings for CPU work (training and graph execution), to call once at program start before any tensor
/// work (the `ferry` binary and the benchmarks do): candle's barrier-pool workers spin 25 000
/// times before sleeping, which on a machine with as many threads as cores steals a core
/// from the matrix multiplies (measured: 5-15% of a transformer step on 2 cores). A value the
/// user set in `CANDLE_BARRIER_POOL_SPIN_LIMIT` is kept.
pub fn init_cpu_runtime() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: called at start-up, before any thread is spawned.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100") };
    }
}
