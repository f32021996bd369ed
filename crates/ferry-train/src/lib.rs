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
pub mod grads;
pub mod loss;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod params;
pub mod report;
pub mod run;

pub use error::{Error, Result};

/// Process-wide settings for CPU training, to call once at program start before any tensor
/// work (the `ferry` binary and the benchmarks do): candle's barrier-pool workers spin 25 000
/// times before sleeping, which on a machine with as many threads as cores steals a core
/// from the matrix multiplies (measured: 5-15% of a transformer step on 2 cores). A value the
/// user set in `CANDLE_BARRIER_POOL_SPIN_LIMIT` is kept.
pub fn init_cpu_runtime() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: called at start-up, before any thread is spawned.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100") };
    }
}
