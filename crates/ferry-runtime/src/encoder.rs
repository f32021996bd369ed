//! BERT encoders, run by candle-transformers' `BertModel` over ferry's weights.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use candle_transformers::models::bert::{BertModel, Config};

use crate::error::Result;
use crate::weights::Weights;

/// A loaded encoder.
pub struct Encoder {
    model: BertModel,
    cfg: Config,
}

impl Encoder {
    /// Loads the encoder described by `cfg` from `w` (Hugging Face names, with or without a
    /// `bert.` prefix).
    pub fn load(w: &Arc<Weights>, cfg: &Config) -> Result<Encoder> {
        let model = BertModel::load(w.var_builder(), cfg)?;
        Ok(Encoder {
            model,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The last hidden state `[batch, seq, hidden]` for `ids` (`[batch, seq]`, u32) with an
    /// optional `mask` (1 for real tokens).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let types = ids.zeros_like()?;
        Ok(self.model.forward(ids, &types, mask)?)
    }
}

/// Mean of `hidden` (`[batch, seq, hidden]`) over the positions `mask` keeps: the
/// sentence-transformers pooling of all-MiniLM and kin.
pub fn mean_pool(hidden: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let Some(mask) = mask else {
        return Ok(hidden.mean(1)?);
    };
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}
