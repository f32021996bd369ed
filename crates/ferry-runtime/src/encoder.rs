//! BERT encoders, run by candle-transformers' `BertModel` over ferry's weights.

use std::sync::Arc;

use candle_core::Tensor;
use candle_transformers::models::bert::{BertModel, Config};

use crate::error::Result;
use crate::weights::Weights;

/// A loaded encoder.
pub struct Encoder {
    model: BertModel,
}

impl Encoder {
    /// Loads the encoder described by `cfg` from `w` (Hugging Face names, with or without a
    /// `bert.` prefix).
    pub fn load(w: &Arc<Weights>, cfg: &Config) -> Result<Encoder> {
        let model = BertModel::load(w.var_builder(), cfg)?;
        Ok(Encoder { model })
    }

    /// The last hidden state `[batch, seq, hidden]` for `ids` (`[batch, seq]`, u32) with an
    /// optional `mask` (1 for real tokens).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let types = ids.zeros_like()?;
        Ok(self.model.forward(ids, &types, mask)?)
    }
}
