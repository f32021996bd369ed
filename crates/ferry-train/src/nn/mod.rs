//! Layers, built on [`crate::params::Params`] so every weight is named, seeded and trainable.

mod attention;
mod basic;
mod encoder;

pub use attention::{key_padding_bias, MultiheadAttention};
pub use basic::{Embedding, LayerNorm, Linear};
pub use encoder::{EncoderLayer, EncoderLayerConfig};
pub use ferry_kernels::Activation;

/// Seeded creation context: the parameter store, the random stream and the device.
pub struct Builder<'a> {
    /// Where parameters are created.
    pub params: &'a mut crate::params::Params,
    /// The random stream initial values are drawn from.
    pub rng: &'a mut ferry_data::rng::Rng,
    /// The device parameters live on.
    pub device: &'a candle_core::Device,
}

impl Builder<'_> {
    /// Creates parameter `name` of `shape` filled by `init`.
    pub fn create(
        &mut self,
        name: &str,
        shape: &[usize],
        init: crate::params::Init,
    ) -> crate::Result<candle_core::Tensor> {
        self.params.create(name, shape, init, self.rng, self.device)
    }
}
