//! Errors of ferry-train: each names the file, tensor or setting it is about and the fix.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong building, training, checkpointing or evaluating a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a weights file failed.
    #[error(transparent)]
    Io(#[from] ferry_io::Error),
    /// Reading, tokenizing or batching data failed.
    #[error(transparent)]
    Data(#[from] ferry_data::Error),
    /// A file that could not be read or written, or a config, checkpoint or model file that
    /// does not make sense.
    #[error(transparent)]
    File(#[from] ferry_io::FileError),
    /// Invalid settings or shapes.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The operating system refused `source` on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::File(ferry_io::FileError::io(path, source))
    }

    /// The content of `path` does not make sense: `msg` says how, and the fix.
    pub fn malformed(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File(ferry_io::FileError::malformed(path, msg))
    }
}
