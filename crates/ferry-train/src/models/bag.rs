//! The seed's MultiLanguageModel: `Embedding -> mean over tokens -> Linear`, optionally started
//! as multinomial naive Bayes.

use candle_core::{Module, Tensor};
use ferry_data::batch::Example;

use super::{pool, Pooling};
use crate::nn::{Builder, Embedding, Linear};
use crate::params::Params;
use crate::{Error, Result};

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

    /// Sets the embedding to `table` (`[vocab, classes]`, from [`naive_bayes_table`]), `fc` to
    /// the identity and its bias to zero: the logits are then the mean over the tokens of
    /// `log P(token | class)`, naive Bayes's decision (with uniform class priors) divided by
    /// the token count.
    pub(crate) fn set_naive_bayes(&self, params: &Params, table: Tensor) -> Result<()> {
        let var = |name: &str| {
            params
                .get(name)
                .ok_or_else(|| Error::Invalid(format!("bag model without {name}")))
        };
        let emb = var("embedding.weight")?;
        if emb.dims() != table.dims() {
            return Err(Error::Invalid(format!(
                "naive Bayes table {:?} does not fit embedding.weight {:?}",
                table.dims(),
                emb.dims()
            )));
        }
        let c = table.dim(1)?;
        emb.set(&table.to_device(emb.device())?)?;
        var("fc.bias")?.set(&Tensor::zeros(c, candle_core::DType::F32, emb.device())?)?;
        self.set_naive_bayes_scale(params, 1.0)
    }

    /// Sets `fc` to `scale` times the identity.
    pub(crate) fn set_naive_bayes_scale(&self, params: &Params, scale: f64) -> Result<()> {
        let fc = params
            .get("fc.weight")
            .ok_or_else(|| Error::Invalid("bag model without fc.weight".into()))?;
        let c = fc.dim(0)?;
        let eye = Tensor::eye(c, candle_core::DType::F32, fc.device())?;
        fc.set(&(eye * scale)?)?;
        Ok(())
    }
}

/// Token counts per class for a multinomial naive Bayes start, added example by example (a
/// streamed corpus is counted without being held): `[vocab x classes]` f64s.
#[derive(Debug, Clone)]
pub struct NaiveBayesCounts {
    vocab: usize,
    classes: usize,
    counts: Vec<f64>,
    totals: Vec<f64>,
}

impl NaiveBayesCounts {
    /// Zero counts for `vocab` tokens and `classes` classes.
    pub fn new(vocab: usize, classes: usize) -> Self {
        NaiveBayesCounts {
            vocab,
            classes,
            counts: vec![0.0; vocab * classes],
            totals: vec![0.0; classes],
        }
    }

    /// (vocabulary size, classes).
    pub fn dims(&self) -> (usize, usize) {
        (self.vocab, self.classes)
    }

    /// Counts `examples` (those without a label are skipped).
    pub fn add<'a>(&mut self, examples: impl IntoIterator<Item = &'a Example>) -> Result<()> {
        let (vocab, classes) = (self.vocab, self.classes);
        for e in examples {
            let Some(label) = e.label else { continue };
            let c = label as usize;
            if c >= classes {
                return Err(Error::Invalid(format!(
                    "label {c} is out of range for {classes} classes"
                )));
            }
            for &t in &e.ids {
                let t = t as usize;
                if t >= vocab {
                    return Err(Error::Invalid(format!(
                        "token id {t} is out of range for a vocabulary of {vocab}"
                    )));
                }
                self.counts[t * classes + c] += 1.0;
                self.totals[c] += 1.0;
            }
        }
        Ok(())
    }

    /// The log-likelihood table `[vocab, classes]`: entry `(t, c)` is
    /// `ln((n(t, c) + alpha) / (N(c) + alpha * vocab))`, where `n(t, c)` counts token `t` in
    /// the examples of class `c` and `N(c)` all of that class's tokens; each row is then
    /// centered (its mean over the classes subtracted), which changes no decision and keeps
    /// the weights small.
    pub fn table(&self, alpha: f64) -> Result<Tensor> {
        let (vocab, classes) = (self.vocab, self.classes);
        let denom: Vec<f64> = self
            .totals
            .iter()
            .map(|n| (n + alpha * vocab as f64).ln())
            .collect();
        let mut table = vec![0f32; vocab * classes];
        for (row, out) in self.counts.chunks(classes).zip(table.chunks_mut(classes)) {
            let logp: Vec<f64> = row
                .iter()
                .zip(&denom)
                .map(|(n, d)| (n + alpha).ln() - d)
                .collect();
            let mean = logp.iter().sum::<f64>() / classes as f64;
            for (o, l) in out.iter_mut().zip(&logp) {
                *o = (l - mean) as f32;
            }
        }
        Ok(Tensor::from_vec(
            table,
            (vocab, classes),
            &candle_core::Device::Cpu,
        )?)
    }
}

/// The naive Bayes table ([`NaiveBayesCounts::table`]) of `examples`.
pub fn naive_bayes_table(
    examples: &[Example],
    vocab: usize,
    classes: usize,
    alpha: f64,
) -> Result<Tensor> {
    let mut counts = NaiveBayesCounts::new(vocab, classes);
    counts.add(examples)?;
    counts.table(alpha)
}

/// The scale `s` of `logits` minimizing the mean cross entropy of `softmax(s * logits)`
/// against the labels (temperature scaling; the loss is convex in `s`): a golden-section search
/// over `ln s` in `[ln 0.01, ln 10^5]`.
pub(crate) fn temperature(rows: &[(Vec<f32>, usize)]) -> f64 {
    let nll = |ln_s: f64| {
        let s = ln_s.exp();
        rows.iter()
            .map(|(l, y)| {
                let m = l.iter().fold(f64::MIN, |m, &x| m.max(s * x as f64));
                let z: f64 = l.iter().map(|&x| (s * x as f64 - m).exp()).sum();
                m + z.ln() - s * l[*y] as f64
            })
            .sum::<f64>()
    };
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (0.01f64.ln(), 1e5f64.ln());
    for _ in 0..80 {
        let (x1, x2) = (b - phi * (b - a), a + phi * (b - a));
        if nll(x1) <= nll(x2) {
            b = x2;
        } else {
            a = x1;
        }
    }
    ((a + b) / 2.0).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], label: u32) -> Example {
        Example {
            ids: ids.to_vec(),
            lang: String::new(),
            label: Some(label),
            target: None,
        }
    }

    #[test]
    fn the_table_is_centered_log_likelihoods() {
        // Class 0 saw tokens 0,0,1; class 1 saw token 2. alpha 1, vocab 3.
        let t = naive_bayes_table(&[ex(&[0, 0, 1], 0), ex(&[2], 1)], 3, 2, 1.0).unwrap();
        let t: Vec<Vec<f32>> = t.to_vec2().unwrap();
        let l = |n: f64, total: f64| (n + 1.0).ln() - (total + 3.0).ln();
        let row0 = [l(2.0, 3.0), l(0.0, 1.0)];
        let mean = (row0[0] + row0[1]) / 2.0;
        assert!((t[0][0] as f64 - (row0[0] - mean)).abs() < 1e-6);
        assert!((t[0][1] as f64 - (row0[1] - mean)).abs() < 1e-6);
        for r in &t {
            assert!((r[0] + r[1]).abs() < 1e-6, "rows are centered: {r:?}");
        }
        // Token 2 belongs to class 1, token 0 to class 0.
        assert!(t[2][1] > t[2][0] && t[0][0] > t[0][1]);
    }

    #[test]
    fn temperature_finds_the_scale_of_a_known_calibration() {
        // Two classes, logits (x, -x) with x = 1: a scale s gives P(right) = 1/(1+e^(-2s)).
        // With 3 right and 1 wrong the optimum has P(right) = 3/4: s = ln(3)/2.
        let rows = vec![
            (vec![1.0, -1.0], 0),
            (vec![1.0, -1.0], 0),
            (vec![1.0, -1.0], 0),
            (vec![1.0, -1.0], 1),
        ];
        let s = temperature(&rows);
        assert!((s - 3f64.ln() / 2.0).abs() < 1e-6, "{s}");
    }

    #[test]
    fn out_of_range_ids_and_labels_are_errors() {
        assert!(naive_bayes_table(&[ex(&[5], 0)], 3, 2, 1.0).is_err());
        assert!(naive_bayes_table(&[ex(&[0], 2)], 3, 2, 1.0).is_err());
    }
}
