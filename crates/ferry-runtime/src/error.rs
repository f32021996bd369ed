//! Errors of the runtime: each names the file, the tensor or the setting at fault.

use std::path::PathBuf;

/// A runtime error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a checkpoint failed (the message names the file and tensor).
    #[error(transparent)]
    Io(#[from] ferry_io::Error),
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] ferry_io::FileError),
    /// A model's configuration is missing or wrong.
    #[error("{path}: {msg}")]
    Config {
        /// The config file (or checkpoint) at fault.
        path: PathBuf,
        /// What is wrong, and the fix where there is one.
        msg: String,
    },
    /// The architecture is not one the runtime runs.
    #[error("{path}: architecture `{arch}` is not supported; ferry runs {supported}")]
    Unsupported {
        /// The model.
        path: PathBuf,
        /// What the model says it is.
        arch: String,
        /// What ferry runs.
        supported: &'static str,
    },
    /// A tensor is missing or has the wrong shape.
    #[error("{path}: tensor `{tensor}`: {msg}")]
    Tensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// Tokenization failed or no tokenizer was found.
    #[error("{path}: {msg}")]
    Tokenizer {
        /// The tokenizer file (or the model it was looked for beside).
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Loading or running a classifier trained by ferry failed.
    #[error(transparent)]
    Train(#[from] Box<ferry_train::Error>),
    /// An error raised inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A device that cannot be opened or a placement that cannot be made.
    #[error(transparent)]
    Device(#[from] ferry_device::Error),
}

/// The runtime's result type.
pub type Result<T> = std::result::Result<T, Error>;
