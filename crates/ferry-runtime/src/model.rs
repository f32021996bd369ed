//! One entry point for every model the runtime runs: [`Model::load`] detects the format and
//! the architecture, and [`Model::forward`] runs a batch of token ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use ferry_io::arch::{relayout, LayoutReport};
use ferry_io::formats::gguf::names::{ArchLayout, Direction};
use ferry_io::{Checkpoint, Format, Metadata};

use crate::activations::ActivationStats;
use crate::classifier::{self, Classifier};
use crate::config::{self, ArchConfig, ClassifierConfig, GraphConfig};
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::graph::{self, GraphInfo, GraphNet};
use crate::placement::Placement;
use crate::tokenizer::Tokenizer;
use crate::weights::{Kernels, Weights};

/// The network a model runs.
pub enum Net {
    /// A causal decoder (next-token logits).
    Decoder(Decoder),
    /// A BERT-family encoder (hidden states); boxed, as it holds one `BertEncoder` per block.
    Encoder(Box<Encoder>),
    /// A classifier trained by ferry (class logits).
    Classifier(Box<Classifier>),
    /// An ONNX graph taking token ids.
    Graph(Box<GraphNet>),
}

/// A model ready to run.
pub struct Model {
    /// What was opened, as given (a path or a hub id).
    pub path: PathBuf,
    /// Where it is on disk: `path` itself, or the cache folder a hub id resolved to.
    pub source: PathBuf,
    /// Its container format (`safetensors`, `gguf`, `onnx`...).
    pub format: &'static str,
    /// The architecture and its hyper-parameters.
    pub config: ArchConfig,
    /// How a GGUF's llama.cpp names and layouts were read back, if they were.
    pub layout: Option<LayoutReport>,
    /// The `tokenizer.json` found with the model, if any.
    pub tokenizer: Option<PathBuf>,
    /// A GGUF's `tokenizer.ggml.*` keys, to rebuild its tokenizer when no file is found.
    gguf_tokenizer: Option<Metadata>,
    /// The network.
    pub net: Net,
}

/// What a forward pass returns.
pub struct Output {
    /// Decoders: next-token logits `[batch, seq, vocab]`. Encoders: the last hidden state
    /// `[batch, seq, hidden]`. Classifiers: class logits `[batch, classes]`.
    pub values: Tensor,
    /// Per-layer hidden states, when asked for and available. Decoders: after the
    /// embedding, after each block, after the final norm. Encoders: after the embedding and
    /// after each block (the last is `values`).
    pub taps: Vec<Tensor>,
}

impl Model {
    /// The architecture of the model at `path`, without loading its weights: what
    /// [`Model::load`] would run, or the error saying why it cannot.
    pub fn probe(path: &Path) -> Result<ArchConfig> {
        if classifier::is_classifier(path) {
            return Ok(ArchConfig::Classifier(Classifier::config(path)?));
        }
        if graph::is_onnx(path) {
            let (_, info) = GraphInfo::read(path)?;
            return Ok(ArchConfig::Graph(graph_config(path, &info)));
        }
        Ok(resolve(path)?.config)
    }

    /// Opens `path` (a Hugging Face folder or hub id from the local cache, a checkpoint file
    /// with a `config.json` beside it, a GGUF, or a model folder written by `ferry train` or
    /// `ferry migrate`) and loads it on `device` in f32; GGML-quantized matrices are
    /// multiplied with `kernels` (a ferry classifier's weights are always dequantized at load).
    pub fn load(path: &Path, device: &Device, kernels: Kernels) -> Result<Model> {
        Model::load_placed(
            path,
            &Placement::single(device.clone(), DType::F32),
            kernels,
        )
    }

    /// As [`Model::load`], each unit on the device and in the dtype `place` gives it (see
    /// [`crate::placement`]): a decoder split by blocks across devices, an encoder or a
    /// classifier on one device (classifiers compute in f32), a graph's nodes on their units'
    /// devices.
    pub fn load_placed(path: &Path, place: &Placement, kernels: Kernels) -> Result<Model> {
        Model::load_inner(path, place, kernels, None)
    }

    /// As [`Model::load`], with `edit` applied to the float weights it wants as they are read
    /// (a checkpoint's tensor names, e.g. `model.layers.0.mlp.down_proj.weight`): the model as
    /// it would compute after that change, without writing it anywhere. Llama-family decoders
    /// and BERT-family encoders only.
    pub fn load_edited(
        path: &Path,
        device: &Device,
        kernels: Kernels,
        edit: Arc<dyn crate::weights::WeightEdit>,
    ) -> Result<Model> {
        if classifier::is_classifier(path) || graph::is_onnx(path) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: "weights are edited in checkpoints of the runtime's architectures (Llama-family decoders, BERT-family encoders), not in ferry classifiers or ONNX graphs".into(),
            });
        }
        let place = Placement::single(device.clone(), DType::F32);
        Model::load_inner(path, &place, kernels, Some(edit))
    }

    fn load_inner(
        path: &Path,
        place: &Placement,
        kernels: Kernels,
        edit: Option<Arc<dyn crate::weights::WeightEdit>>,
    ) -> Result<Model> {
        if classifier::is_classifier(path) {
            return Model::load_classifier(path, place.input_device());
        }
        if graph::is_onnx(path) {
            return Model::load_graph(path, place);
        }
        let r = resolve(path)?;
        let source = if path.exists() {
            path.to_path_buf()
        } else {
            r.ck.path
                .parent()
                .map_or_else(|| path.to_path_buf(), Path::to_path_buf)
        };
        let mut weights = Weights::new(r.ck, place.input_device().clone(), kernels);
        if let Some(e) = edit {
            weights = weights.with_edit(e);
        }
        let weights = Arc::new(weights);
        let net = match &r.config {
            ArchConfig::Decoder(c) => Net::Decoder(Decoder::load(&weights, c, place)?),
            ArchConfig::Encoder(c) => Net::Encoder(Box::new(Encoder::load(&weights, c, place)?)),
            other => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    msg: format!("a {} is not loaded from a checkpoint", other.name()),
                })
            }
        };
        Ok(Model {
            path: path.to_path_buf(),
            source,
            format: r.format.name(),
            config: r.config,
            layout: r.layout,
            tokenizer: r.tokenizer,
            gguf_tokenizer: r.gguf_tokenizer,
            net,
        })
    }

    /// A ferry model folder: its card, weights (any format `ferry migrate` writes) and
    /// tokenizer.
    fn load_classifier(dir: &Path, device: &Device) -> Result<Model> {
        let config = Classifier::config(dir)?;
        let weights = ferry_train::model_dir::weights_file(dir).ok_or_else(|| Error::Config {
            path: dir.to_path_buf(),
            msg: "has no model.safetensors (or model.gguf/.npz/.pth)".into(),
        })?;
        let format = Checkpoint::open(&weights)?.format.name();
        let net = Net::Classifier(Box::new(Classifier::load(dir, device)?));
        let tokenizer = dir.join(ferry_train::model_dir::TOKENIZER);
        Ok(Model {
            path: dir.to_path_buf(),
            source: dir.to_path_buf(),
            format,
            config: ArchConfig::Classifier(config),
            layout: None,
            tokenizer: tokenizer.is_file().then_some(tokenizer),
            gguf_tokenizer: None,
            net,
        })
    }

    /// An ONNX graph, with the `tokenizer.json` beside it.
    fn load_graph(path: &Path, place: &Placement) -> Result<Model> {
        let net = GraphNet::load(path, place)?;
        let config = graph_config(path, net.info());
        let tokenizer = path.with_file_name("tokenizer.json");
        Ok(Model {
            path: path.to_path_buf(),
            source: path.to_path_buf(),
            format: "onnx",
            config: ArchConfig::Graph(config),
            layout: None,
            tokenizer: tokenizer.is_file().then_some(tokenizer),
            gguf_tokenizer: None,
            net: Net::Graph(Box::new(net)),
        })
    }

    /// Where [`Model::load_tokenizer`] reads from: the `tokenizer.json`, else the model itself.
    pub fn tokenizer_source(&self) -> PathBuf {
        self.tokenizer
            .clone()
            .unwrap_or_else(|| self.source.clone())
    }

    /// The model's tokenizer: its `tokenizer.json`, else the one its GGUF carries.
    pub fn load_tokenizer(&self) -> Result<Tokenizer> {
        match (&self.tokenizer, &self.gguf_tokenizer) {
            (Some(p), _) => Ok(Tokenizer::from_file(p)?
                .with_special_tokens(self.classifier().is_none_or(|c| c.add_special_tokens))),
            (None, Some(meta)) => Tokenizer::from_gguf(meta, &self.path),
            (None, None) => Err(Error::Tokenizer {
                path: self.path.clone(),
                msg: "no tokenizer.json with the model; pass --tokenizer".into(),
            }),
        }
    }

    /// Whether the model predicts next tokens (logits) rather than hidden states.
    pub fn is_decoder(&self) -> bool {
        matches!(self.net, Net::Decoder(_))
    }

    /// What the model outputs: `decoder` (next-token logits), `encoder` (hidden states) or
    /// `classifier` (class logits).
    pub fn kind(&self) -> &'static str {
        match self.net {
            Net::Decoder(_) => "decoder",
            Net::Encoder(_) => "encoder",
            Net::Classifier(_) => "classifier",
            Net::Graph(_) => match &self.config {
                ArchConfig::Graph(g) if g.decoder => "decoder",
                _ => "encoder",
            },
        }
    }

    /// The classes, when the model is a ferry classifier.
    pub fn classifier(&self) -> Option<&ClassifierConfig> {
        match &self.config {
            ArchConfig::Classifier(c) => Some(c),
            _ => None,
        }
    }

    /// Runs `ids` (`[batch, seq]`, u32) with an optional `mask` (`[batch, seq]`, 1 for real
    /// tokens, padding on the right). Classifiers have no taps.
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>, taps: bool) -> Result<Output> {
        match &self.net {
            Net::Decoder(d) => {
                let o = d.forward(ids, mask, taps)?;
                Ok(Output {
                    values: o.logits,
                    taps: o.taps,
                })
            }
            Net::Graph(g) => Ok(Output {
                values: g.forward(ids, mask)?,
                taps: Vec::new(),
            }),
            Net::Classifier(c) => Ok(Output {
                values: c.forward(ids, mask)?,
                taps: Vec::new(),
            }),
            Net::Encoder(e) => {
                let o = e.forward(ids, mask, taps)?;
                Ok(Output {
                    values: o.hidden,
                    taps: o.taps,
                })
            }
        }
    }
}

impl Model {
    /// As [`Model::forward`] without taps, adding the input of every linear layer the model
    /// runs to `stats` (see [`crate::activations`]): decoders and encoders only, the models
    /// whose layers the runtime composes; a classifier or an ONNX graph is refused by name.
    pub fn forward_collecting(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        stats: &mut ActivationStats,
    ) -> Result<Output> {
        let values = match &self.net {
            Net::Decoder(d) => d.forward_collecting(ids, mask, stats)?.logits,
            Net::Encoder(e) => e.forward_collecting(ids, mask, stats)?.hidden,
            Net::Classifier(_) | Net::Graph(_) => {
                return Err(Error::Config {
                    path: self.path.clone(),
                    msg: format!(
                        "a {} ({}) has no linear layers ferry's runtime observes; calibration \
                         runs Llama-family decoders and BERT-family encoders",
                        self.kind(),
                        self.config.name()
                    ),
                })
            }
        };
        Ok(Output {
            values,
            taps: Vec::new(),
        })
    }
}

/// How a graph's output is judged: as the `config.json` beside it says (a decoder's logits or
/// an encoder's hidden states), else by the output's name.
fn graph_config(path: &Path, info: &GraphInfo) -> GraphConfig {
    let beside = path.with_file_name("config.json");
    let decoder = match config::from_config_json(&beside) {
        Ok(ArchConfig::Decoder(_)) => true,
        Ok(_) => false,
        Err(_) => info.output.name == "logits",
    };
    GraphConfig {
        output: info.output.name.clone(),
        decoder,
    }
}

/// A model opened, its weights not read yet.
pub(crate) struct Resolved {
    pub(crate) ck: Checkpoint,
    format: Format,
    pub(crate) config: ArchConfig,
    layout: Option<LayoutReport>,
    tokenizer: Option<PathBuf>,
    gguf_tokenizer: Option<Metadata>,
}

/// Opens the checkpoint, detects the architecture, and reads a GGUF back to Hugging Face
/// names and layouts.
pub(crate) fn resolve(path: &Path) -> Result<Resolved> {
    let ck = Checkpoint::open(path)?;
    let format = ck.format;
    let tokenizer = find_beside(&ck, "tokenizer.json");
    if format == Format::Gguf {
        let has_output = ck.get("output.weight").is_some();
        let vocab = ck
            .get("token_embd.weight")
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0);
        let config = config::from_gguf(&ck.metadata, vocab, has_output, path)?;
        let (ck, layout) = match ArchLayout::from_gguf(&ck.metadata, has_output) {
            Some(l) => {
                let (hf, report) = relayout(&ck, l, Direction::ToHf)?;
                (hf, Some(report))
            }
            None => (ck, None),
        };
        let gguf_tokenizer = Some(
            ck.metadata
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer.ggml."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        return Ok(Resolved {
            ck,
            format,
            config,
            layout,
            tokenizer,
            gguf_tokenizer,
        });
    }
    let cfg = find_beside(&ck, "config.json").ok_or_else(|| Error::Config {
        path: path.to_path_buf(),
        msg: "no config.json with the weights: the runtime needs it to know the architecture \
              (put the model's config.json beside the file)"
            .into(),
    })?;
    let config = config::from_config_json(&cfg)?;
    Ok(Resolved {
        ck,
        format,
        config,
        layout: None,
        tokenizer,
        gguf_tokenizer: None,
    })
}

/// A companion file of the checkpoint, else a file of that name beside it.
fn find_beside(ck: &Checkpoint, name: &str) -> Option<PathBuf> {
    ck.companion(name).cloned().or_else(|| {
        let p = ck.path.parent()?.join(name);
        p.is_file().then_some(p)
    })
}
