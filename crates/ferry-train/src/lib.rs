//! ferry-train: training and per-language evaluation on candle.
//!
//! - [`models`]: the seed's bag of embeddings, a transformer encoder classifier and a
//!   pretrained BERT-family encoder with a head; every parameter named, seeded, trainable.
//! - [`nn`]: layers over named, seeded parameters; their fused CPU kernels (with backward
//!   passes) live in ferry-kernels.
//! - [`optim`]: AdamW and SGD with PyTorch's update rules as fused CPU kernels, schedules.
//! - [`grads`]: gradient collection, accumulation and global-norm clipping.
//! - [`loss`]: cross entropy with label smoothing, NLL.
//! - [`model_dir`]: model folders and the training checkpoints that resume a run.
//! - [`data`] and [`feed`]: corpora to labelled examples; micro-batches drawn from memory or
//!   streamed from a folder per language.
//! - [`run`]: a whole run (prepare, start or resume, the loop, the final report).
//! - [`eval`], [`report`], [`metrics`]: per-language evaluation and its reports.
#![warn(missing_docs)]

pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod feed;
pub mod grads;
mod host;
pub mod loss;
pub mod metrics;
pub mod model_dir;
pub mod models;
pub mod nn;
pub mod optim;
pub mod params;
pub mod report;
pub mod run;

pub use error::{Error, Result};

pub use ferry_kernels::init_cpu_runtime;
