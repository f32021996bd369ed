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
    /// A file-system error on a named file.
    #[error("{path}: {source}")]
    Fs {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A config, checkpoint or model file that does not make sense.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        msg: String,
    },
    /// Invalid settings or shapes.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A file-system error on `path`.
    pub fn fs(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Fs {
            path: path.into(),
            source,
        }
    }

    /// A problem with the content of `path`.
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
