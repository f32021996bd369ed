//! Errors of a verification.

/// A verification error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading or running a model failed.
    #[error(transparent)]
    Runtime(#[from] ferry_runtime::Error),
    /// Reading or writing a file failed (the message names it).
    #[error(transparent)]
    Io(#[from] ferry_io::Error),
    /// The probe texts could not be read or selected.
    #[error("probes: {0}")]
    Probes(String),
    /// The options are inconsistent.
    #[error("{0}")]
    Options(String),
    /// The two models cannot be compared.
    #[error("{0}")]
    Mismatch(String),
    /// A report or an input could not be read or written.
    #[error(transparent)]
    File(#[from] ferry_io::FileError),
    /// An error raised inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The verification's result type.
pub type Result<T> = std::result::Result<T, Error>;
