//! ferry-runtime: runs the real models ferry migrates, from any checkpoint ferry reads.
//!
//! - [`Model::load`] opens a Hugging Face folder, a checkpoint file with its `config.json`, or
//!   a llama.cpp GGUF (read back to Hugging Face names and layouts by `ferry_io::arch`), and
//!   detects the architecture from `config.json` (`model_type`) or `general.architecture`.
//! - Llama-family decoders ([`decoder`]) run every position and keep per-layer hidden states;
//!   GGML-quantized weights stay quantized with [`Kernels::Ggml`] (ferry-kernels' int8 GEMM
//!   on CPUs with AVX-512 VNNI or AVX2 + FMA, else candle's `QMatMul`) or are dequantized at load with
//!   [`Kernels::F32`]. BERT-family encoders ([`encoder`]: BERT, XLM-RoBERTa, DistilBERT) run
//!   candle-transformers' `BertEncoder` one layer at a time, for per-layer taps.
//! - Classifiers trained by ferry ([`classifier`]: a `ferry train` or `ferry migrate` model
//!   folder) and ONNX graphs taking token ids ([`graph`], ferry-graph's executor) run behind
//!   the same [`Model`], so verification has one shape for every model.
//! - [`placement`]: each unit (embedding, block, head) on the device and in the dtype a
//!   ferry-device plan gives it, and the units' costs read before loading.
//! - [`activations`]: the per-column statistics of every linear layer's inputs that
//!   [`Model::forward_collecting`] gathers for calibration (llama.cpp's importance matrix).
//! - [`weights::Weights`] serves any ferry checkpoint to candle, including as a
//!   `candle_nn::VarBuilder`, with errors that name the missing or misshapen tensor.
#![warn(missing_docs)]

pub mod activations;
pub mod classifier;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod graph;
pub mod model;
pub mod placement;
pub mod planning;
pub mod tokenizer;
pub mod weights;

pub use activations::ActivationStats;
pub use config::ArchConfig;
pub use error::{Error, Result};
pub use model::{Model, Output};
pub use placement::Placement;
pub use tokenizer::Tokenizer;
pub use weights::Kernels;
