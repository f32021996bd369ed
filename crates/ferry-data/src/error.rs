//! Errors of ferry-data: each names the file (and line) it is about and, where there is one,
//! the fix.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading, tokenizing, sampling or batching a corpus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that could not be read or written, or whose layout ferry cannot read.
    #[error(transparent)]
    File(#[from] ferry_io::FileError),
    /// A record that breaks the corpus format, under `--on-error fail`.
    #[error("{0}")]
    BadRecord(crate::issues::Issue),
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

ferry_io::file_error_constructors!(Error);
