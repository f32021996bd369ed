//! Activation statistics for calibration: for every linear layer a forward pass runs, the sum
//! over tokens of each input column's square (llama.cpp's importance matrix, before dividing by
//! the count).
//!
//! A [`ActivationStats`] is handed to [`crate::Model::forward_collecting`]; the projections
//! feed it their inputs. A plain forward pass takes no collector and pays nothing. Memory is
//! one `f64` per input column per linear layer (SmolLM2-135M: 210 matrices, 1.2 MB), whatever
//! the number of tokens.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Per-column sums of one linear layer's squared inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    /// Sum over the rows seen of each input column's square (f64: exact enough for any
    /// token count, and the order of addition is fixed, so repeated runs agree bit for bit).
    pub sum_sq: Vec<f64>,
    /// Rows (tokens) seen.
    pub count: u64,
}

impl ColumnStats {
    /// The mean of each column's square (zeros before any row).
    pub fn mean_sq(&self) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum_sq.iter().map(|s| s / n).collect()
    }
}

/// The statistics of every linear layer seen, keyed by its weight's Hugging Face name as the
/// runtime loads it (`model.layers.0.self_attn.q_proj.weight`; encoders under BERT's names,
/// `encoder.layer.0.attention.self.query.weight`, whatever the family).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivationStats {
    entries: BTreeMap<String, ColumnStats>,
}

impl ActivationStats {
    /// No statistics yet.
    pub fn new() -> Self {
        ActivationStats::default()
    }

    /// Every layer's statistics, by weight name.
    pub fn entries(&self) -> &BTreeMap<String, ColumnStats> {
        &self.entries
    }

    /// Adds the rows of `x` (`[..., columns]`, any float dtype and device) to the statistics
    /// of each layer in `names` (layers fed the same input, such as Q, K and V), skipping the
    /// rows whose `keep` flag is 0 (padding; every row when `keep` is `None`).
    pub fn record(&mut self, names: &[String], x: &Tensor, keep: Option<&[u8]>) -> Result<()> {
        let cols = x.dim(candle_core::D::Minus1)?;
        let values: Vec<f32> = x
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1()?;
        let rows = values.len() / cols.max(1);
        if let Some(k) = keep {
            if k.len() != rows {
                return Err(candle_core::Error::Msg(format!(
                    "activation statistics: {} row flags for {rows} rows",
                    k.len()
                ))
                .into());
            }
        }
        let mut sums = vec![0f64; cols];
        let mut count = 0u64;
        for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
            if keep.is_some_and(|k| k[r] == 0) {
                continue;
            }
            count += 1;
            for (s, &v) in sums.iter_mut().zip(row) {
                let v = f64::from(v);
                *s += v * v;
            }
        }
        for name in names {
            let e = self
                .entries
                .entry(name.clone())
                .or_insert_with(|| ColumnStats {
                    sum_sq: vec![0.0; cols],
                    count: 0,
                });
            if e.sum_sq.len() != cols {
                return Err(candle_core::Error::Msg(format!(
                    "activation statistics: `{name}` had {} input columns, now {cols}",
                    e.sum_sq.len()
                ))
                .into());
            }
            for (a, b) in e.sum_sq.iter_mut().zip(&sums) {
                *a += b;
            }
            e.count += count;
        }
        Ok(())
    }
}

/// An attention mask (`[batch, seq]`, 1 for real tokens, 0 for padding) as host flags, read
/// once per forward and shared by the attention and the statistics.
pub(crate) fn token_flags(mask: Option<&Tensor>) -> Result<Option<Vec<u8>>> {
    let Some(m) = mask else {
        return Ok(None);
    };
    Ok(Some(
        m.to_dtype(DType::U8)?
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_squares_per_column_skipping_padding() {
        let x = Tensor::from_vec(
            vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0],
            (1, 3, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mut s = ActivationStats::new();
        let names = ["a".to_string(), "b".to_string()];
        s.record(&names, &x, Some(&[1, 0, 1])).unwrap();
        s.record(&names[..1], &x, None).unwrap();
        let a = &s.entries()["a"];
        assert_eq!(a.count, 5);
        assert_eq!(
            a.sum_sq,
            vec![
                1.0 + 25.0 + 1.0 + 9.0 + 25.0,
                4.0 + 36.0 + 4.0 + 16.0 + 36.0
            ]
        );
        let b = &s.entries()["b"];
        assert_eq!((b.count, b.sum_sq.clone()), (2, vec![26.0, 40.0]));
        assert_eq!(b.mean_sq(), vec![13.0, 20.0]);
        let wide = Tensor::zeros((1, 1, 3), DType::F32, &candle_core::Device::Cpu).unwrap();
        let err = s.record(&names[..1], &wide, None).unwrap_err().to_string();
        assert!(err.contains("`a` had 2 input columns, now 3"), "{err}");
    }
}
