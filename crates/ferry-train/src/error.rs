//! Errors of ferry-train: each names the file, tensor or setting it is about and the fix.

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

ferry_io::file_error_constructors!(Error);
