//! Classifiers: the seed's bag of embeddings, a transformer encoder, and a pretrained
//! BERT-family encoder with a classification head. All return logits `[batch, classes]`.

mod bag;
mod bert;
mod transformer;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferry_data::batch::Example;
use ferry_data::rng::Rng;
use serde::{Deserialize, Serialize};

pub use bag::{naive_bayes_table, Bag, NaiveBayesCounts};
pub use bert::{Bert, BertConfig};
pub use transformer::TransformerClassifier;

use crate::nn::{Activation, Builder};
use crate::params::Params;
use crate::{Error, Result};

/// How token states become one vector per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean over real (unpadded) tokens.
    #[default]
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
}

fn default_max_len() -> usize {
    128
}

/// A transformer encoder classifier's shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Model width.
    pub dim: usize,
    /// Feed-forward width.
    pub ff: usize,
    /// Longest sequence (learned positions); longer inputs are truncated.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Feed-forward activation.
    #[serde(default)]
    pub activation: Activation,
    /// Pre-norm layers.
    #[serde(default)]
    pub norm_first: bool,
    /// Pooling.
    #[serde(default)]
    pub pooling: Pooling,
}

/// A model as a config file names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// The seed's MultiLanguageModel: embedding, mean over tokens, linear.
    Bag {
        /// Embedding width (with `init = naive_bayes`: the class count, its default).
        #[serde(default)]
        dim: Option<usize>,
        /// How the weights start.
        #[serde(default)]
        init: BagInit,
    },
    /// A transformer encoder classifier with learned positions.
    Transformer(TransformerConfig),
    /// A pretrained BERT-family encoder (a Hugging Face folder with `config.json`) plus a
    /// classification head.
    Bert {
        /// The model folder.
        path: PathBuf,
        /// Pooling.
        #[serde(default)]
        pooling: Pooling,
        /// Train only the head (and keep the encoder as loaded).
        #[serde(default)]
        freeze_encoder: bool,
    },
}

/// How a bag model's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BagInit {
    /// Random (PyTorch's initialization).
    #[default]
    Random,
    /// Multinomial naive Bayes counted over the training examples: row `t` of the embedding is
    /// `log P(t | class)` with additive smoothing `alpha` (centered over the classes), `fc` is
    /// the identity, so the untrained model already classifies; training then refines it.
    NaiveBayes {
        /// Additive smoothing of the token counts.
        #[serde(default = "default_nb_alpha")]
        alpha: f64,
    },
}

fn default_nb_alpha() -> f64 {
    0.1
}

/// A model fully resolved: architecture, vocabulary size and classes. Saved with every
/// checkpoint so the model can be rebuilt without its original files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The architecture.
    pub arch: Arch,
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Class names; logits index this list.
    pub classes: Vec<String>,
}

/// The architecture with every dimension known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arch {
    /// See [`ModelConfig::Bag`].
    Bag {
        /// Embedding width.
        dim: usize,
    },
    /// See [`ModelConfig::Transformer`].
    Transformer(TransformerConfig),
    /// See [`ModelConfig::Bert`].
    Bert {
        /// The encoder's `config.json` values.
        config: BertConfig,
        /// Pooling.
        pooling: Pooling,
    },
}

impl ModelConfig {
    /// Resolves the architecture (reading `config.json` for BERT).
    pub fn resolve(&self, vocab_size: usize, classes: Vec<String>) -> Result<ModelSpec> {
        let arch = match self.clone() {
            ModelConfig::Bag { dim, init } => Arch::Bag {
                dim: bag_dim(dim, init, classes.len())?,
            },
            ModelConfig::Transformer(t) => Arch::Transformer(t),
            ModelConfig::Bert { path, pooling, .. } => Arch::Bert {
                config: BertConfig::load(&path)?,
                pooling,
            },
        };
        Ok(ModelSpec {
            arch,
            vocab_size,
            classes,
        })
    }

    /// How a bag model starts (`Random` for other models).
    pub fn bag_init(&self) -> BagInit {
        match self {
            ModelConfig::Bag { init, .. } => *init,
            _ => BagInit::Random,
        }
    }

    /// The pretrained weights to start from, if any.
    pub fn pretrained(&self) -> Option<&Path> {
        match self {
            ModelConfig::Bert { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A bag model's width: as given, or the class count for a naive Bayes start (which needs
/// exactly that).
fn bag_dim(dim: Option<usize>, init: BagInit, classes: usize) -> Result<usize> {
    match (dim, init) {
        (Some(0), _) => Err(Error::Invalid("[model] dim must be at least 1".into())),
        (Some(d), BagInit::NaiveBayes { .. }) if d != classes => Err(Error::Invalid(format!(
            "[model] init = naive_bayes needs dim = {classes} (the class count; leave dim out), \
             not {d}"
        ))),
        (Some(d), _) => Ok(d),
        (None, BagInit::NaiveBayes { .. }) => Ok(classes),
        (None, BagInit::Random) => Err(Error::Invalid(
            "[model] kind = \"bag\" needs dim (or init = { kind = \"naive_bayes\" })".into(),
        )),
    }
}

/// Architecture-specific layers.
#[derive(Debug, Clone)]
enum Net {
    Bag(Bag),
    Transformer(TransformerClassifier),
    Bert(Bert),
}

/// A classifier and its parameters.
#[derive(Debug, Clone)]
pub struct Classifier {
    spec: ModelSpec,
    params: Params,
    net: Net,
}

impl Classifier {
    /// A freshly initialized model (seeded), on `device`.
    pub fn new(spec: &ModelSpec, seed: u64, device: &Device) -> Result<Self> {
        if spec.classes.is_empty() {
            return Err(Error::Invalid(
                "a classifier needs at least one class".into(),
            ));
        }
        let mut params = Params::new();
        let mut rng = Rng::new(seed);
        let mut b = Builder {
            params: &mut params,
            rng: &mut rng,
            device,
        };
        let c = spec.classes.len();
        let net = match &spec.arch {
            Arch::Bag { dim } => Net::Bag(Bag::new(&mut b, spec.vocab_size, *dim, c)?),
            Arch::Transformer(_) => Net::Transformer(TransformerClassifier::new(&mut b, spec, c)?),
            Arch::Bert { config, pooling } => Net::Bert(Bert::new(&mut b, config, *pooling, c)?),
        };
        Ok(Classifier {
            spec: spec.clone(),
            params,
            net,
        })
    }

    /// A model whose encoder starts from pretrained weights (BERT) and whose other
    /// parameters are freshly initialized. Names without the `bert.` prefix and with it are
    /// both accepted.
    pub fn from_pretrained(
        spec: &ModelSpec,
        weights: &Path,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let model = Classifier::new(spec, seed, device)?;
        let mut tensors = crate::params::load_tensors(weights, device)?;
        let prefixed: Vec<String> = tensors
            .keys()
            .filter(|k| k.starts_with("bert."))
            .cloned()
            .collect();
        for k in prefixed {
            let t = tensors.remove(&k).expect("listed");
            tensors.insert(k["bert.".len()..].to_string(), t);
        }
        for (name, var, _) in model.params.iter() {
            if name.starts_with("classifier.") {
                continue;
            }
            let t = tensors.get(name).ok_or_else(|| {
                Error::malformed(
                    weights,
                    format!(
                        "has no tensor {name}, which a {} model needs",
                        spec.arch.name()
                    ),
                )
            })?;
            if t.dims() != var.dims() {
                return Err(Error::malformed(
                    weights,
                    format!(
                        "tensor {name} has shape {:?}, config.json implies {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(candle_core::DType::F32)?)?;
        }
        Ok(model)
    }

    /// The resolved architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Mutable parameters (to freeze some).
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The longest input the model takes, if it has a limit.
    pub fn max_len(&self) -> Option<usize> {
        match &self.spec.arch {
            Arch::Bag { .. } => None,
            Arch::Transformer(t) => Some(t.max_len),
            Arch::Bert { config, .. } => Some(config.max_position_embeddings),
        }
    }

    /// Logits `[batch, classes]` for `ids` `[batch, seq]` (u32) with `mask` `[batch, seq]`
    /// (1 = token, 0 = padding; `None`: no padding).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        match &self.net {
            Net::Bag(m) => m.forward(ids, mask),
            Net::Transformer(m) => m.forward(ids, mask),
            Net::Bert(m) => m.forward(ids, mask),
        }
    }
}

impl Arch {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Bag { .. } => "bag",
            Arch::Transformer(_) => "transformer",
            Arch::Bert { .. } => "bert",
        }
    }
}

/// Pools `[batch, seq, dim]` states to `[batch, dim]`. The mean is a batched product with
/// per-token weights (mask / count): one small GEMM forward and backward, where candle's
/// reduction over the middle dimension walks the tensor with strides (1.6 ms for 32 x 64 x
/// 128 on this machine).
pub(crate) fn pool(
    x: &Tensor,
    mask: Option<&Tensor>,
    pooling: Pooling,
) -> candle_core::Result<Tensor> {
    let (b, s, _) = x.dims3()?;
    match pooling {
        Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean => {
            let w = match mask {
                None => Tensor::full(1.0 / s as f32, (b, 1, s), x.device())?,
                Some(mask) => {
                    let m = mask.to_dtype(candle_core::DType::F32)?;
                    let count = m.sum_keepdim(1)?.clamp(1f32, f32::MAX)?;
                    m.broadcast_div(&count)?.reshape((b, 1, s))?
                }
            };
            w.matmul(&x.contiguous()?)?.squeeze(1)
        }
    }
}

impl Classifier {
    /// Starts a bag model as multinomial naive Bayes from `counts` (made over the training
    /// examples): see [`BagInit::NaiveBayes`]. With `calibration`
    /// examples (held out from `examples`), `fc` becomes `s * I` with the one scale `s` that
    /// minimizes their cross entropy (temperature scaling), so the softmax is a usable
    /// confidence; the decisions do not change. Returns `s`.
    pub fn init_naive_bayes(
        &self,
        counts: &NaiveBayesCounts,
        calibration: &[&Example],
        alpha: f64,
        device: &Device,
    ) -> Result<f64> {
        let Net::Bag(bag) = &self.net else {
            return Err(Error::Invalid(format!(
                "init = naive_bayes is for bag models, not {}",
                self.spec.arch.name()
            )));
        };
        if !(alpha > 0.0 && alpha.is_finite()) {
            return Err(Error::Invalid(format!(
                "[model] init alpha must be positive, not {alpha}"
            )));
        }
        let dims = (self.spec.vocab_size, self.spec.classes.len());
        if counts.dims() != dims {
            return Err(Error::Invalid(format!(
                "naive Bayes counts of {:?} (vocabulary, classes) for a model of {dims:?}",
                counts.dims()
            )));
        }
        let table = counts.table(alpha)?;
        bag.set_naive_bayes(&self.params, table)?;
        let labelled: Vec<&Example> = calibration
            .iter()
            .copied()
            .filter(|e| e.label.is_some())
            .collect();
        if labelled.is_empty() {
            return Ok(1.0);
        }
        let mut rows = Vec::with_capacity(labelled.len());
        for chunk in labelled.chunks(256) {
            let cfg = ferry_data::batch::BatchConfig {
                size: ferry_data::batch::BatchSize::Examples(chunk.len()),
                bucket: false,
                shuffle: None,
                pad_id: 0,
                side: ferry_data::batch::PadSide::Right,
                pad_to_multiple_of: None,
            };
            let b = ferry_data::batch::collate(chunk, &cfg, device)?;
            let logits: Vec<Vec<f32>> = self
                .forward(&b.input_ids, Some(&b.attention_mask))?
                .to_vec2()?;
            for (e, l) in chunk.iter().zip(logits) {
                rows.push((l, e.label.expect("filtered") as usize));
            }
        }
        let scale = bag::temperature(&rows);
        bag.set_naive_bayes_scale(&self.params, scale)?;
        Ok(scale)
    }

    /// The BERT encoder, when the model is one.
    pub fn bert(&self) -> Option<&Bert> {
        match &self.net {
            Net::Bert(b) => Some(b),
            _ => None,
        }
    }
}
