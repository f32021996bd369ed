//! ferry-train: training and per-language evaluation on candle.
//!
//! - [`models`]: the seed's bag of embeddings, a transformer encoder classifier and a
//!   pretrained BERT-family encoder with a head; every parameter named, seeded, trainable.
//! - [`ops`]: softmax and layer norm with a backward pass (candle's fused ones have none).
//! - [`optim`]: AdamW and SGD with PyTorch's update rules as fused CPU kernels, schedules.
//! - [`grads`]: gradient collection, accumulation and global-norm clipping.
//! - [`loss`]: cross entropy with label smoothing, NLL.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod feed;
pub mod grads;
pub mod loss;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod params;
pub mod report;
pub mod run;

pub use error::{Error, Result};

pub use ferry_kernels::init_cpu_runtime;
