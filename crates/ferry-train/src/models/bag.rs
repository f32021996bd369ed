//! The seed's MultiLanguageModel: `Embedding -> mean over tokens -> Linear`.

use candle_core::{Module, Tensor};

use super::{pool, Pooling};
use crate::nn::{Builder, Embedding, Linear};
use crate::Result;

/// A bag of embeddings (`embedding.weight`, `fc.weight`, `fc.bias`).
#[derive(Debug, Clone)]
pub struct Bag {
    embedding: Embedding,
    fc: Linear,
}

impl Bag {
    /// A new model.
    pub fn new(b: &mut Builder<'_>, vocab: usize, dim: usize, classes: usize) -> Result<Self> {
        Ok(Bag {
            embedding: Embedding::new(b, "embedding", vocab, dim)?,
            fc: Linear::new(b, "fc", dim, classes)?,
        })
    }

    /// Logits for `ids` with padding `mask`.
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let e = self.embedding.forward(ids)?;
        self.fc.forward(&pool(&e, mask, Pooling::Mean)?)
    }
}
