//! Errors of ferry-data: each names the file (and line) it is about and, where there is one,
//! the fix.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading, tokenizing, sampling or batching a corpus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record that breaks the corpus format, under `--on-error fail`.
    #[error("{0}")]
    BadRecord(crate::issues::Issue),
    /// A file or folder whose layout ferry cannot read.
    #[error("{path}: {msg}")]
    Format {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong, and the fix.
        msg: String,
    },
    /// A tokenizer that cannot be loaded, trained, saved or applied.
    #[error("tokenizer {path}: {msg}")]
    Tokenizer {
        /// The tokenizer file (or `<memory>`).
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Invalid settings (sampling, batching, ...).
    #[error("{0}")]
    Invalid(String),
    /// A failure writing an output file atomically.
    #[error(transparent)]
    Write(#[from] ferry_io::Error),
    /// A candle failure while building batch tensors.
    #[error("building batch tensors: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
