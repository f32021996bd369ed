//! The one error type of ferry-io. Every variant names the file, and the tensor where there is one.

use std::path::PathBuf;

/// Result alias used throughout ferry-io.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while reading, transforming or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that could not be read, written or understood.
    #[error(transparent)]
    File(#[from] FileError),
    /// A pickle asked for a global that ferry does not allow; nothing was imported or called.
    #[error(
        "{}: refused to load: the pickle references `{global}`, which is not on ferry's allow-list \
         (ferry never imports or calls code from a checkpoint; if you trust this file, re-save it \
         with plain tensors, e.g. `torch.save(model.state_dict(), ...)`)",
        path.display()
    )]
    UnsafePickle {
        /// The file involved.
        path: PathBuf,
        /// The refused global, as `module name` (for example `posix system`).
        global: String,
    },
    /// One tensor cannot be handled (unsupported type, shape, size).
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    Tensor {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong, in words.
        msg: String,
    },
    /// The format of a file could not be recognised from its content.
    #[error("{}: unrecognised format ({msg}); ferry reads PyTorch .pth/.bin (zip and legacy), TorchScript .pt, safetensors (single and sharded), GGUF, .npy/.npz and Hugging Face folders", path.display())]
    UnknownFormat {
        /// The file involved.
        path: PathBuf,
        /// What was seen.
        msg: String,
    },
    /// Reading the input would build more than a memory budget allows (see [`crate::budget`]).
    #[error(
        "{}: {what} needs {} but the {name} memory budget is {}; nothing was allocated. If the \
         file is trusted and the machine has the memory, raise the budget: {env}=BYTES (e.g. 16GiB)",
        path.display(),
        crate::units::human(*needed),
        crate::units::human(*budget)
    )]
    OverBudget {
        /// The file involved.
        path: PathBuf,
        /// What needed the memory, in words (names the tensor where there is one).
        what: String,
        /// Bytes it needed (at least).
        needed: u64,
        /// The budget, in bytes.
        budget: u64,
        /// The budget's name.
        name: &'static str,
        /// The environment variable that raises it.
        env: &'static str,
    },
    /// A request that does not make sense (bad rule, bad option value).
    #[error("{0}")]
    Invalid(String),
    /// An error raised inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// A [`Error::Tensor`] for `tensor` in `path`.
    pub fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            msg: msg.into(),
        }
    }
}

crate::file_error_constructors!(Error);

/// Gives a crate's error enum, which carries file problems as `File(FileError)`, the two
/// constructors every ferry crate makes them with: `Error::io(path, source)` for the operating
/// system's refusal and `Error::malformed(path, msg)` for content that is wrong.
#[macro_export]
macro_rules! file_error_constructors {
    ($error:ty) => {
        impl $error {
            /// The operating system refused `source` on `path`.
            pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
                Self::File($crate::FileError::io(path, source))
            }

            /// `path`'s content is wrong (truncated, corrupt, inconsistent, a layout ferry
            /// cannot read): `msg` says how, and the fix where there is one.
            pub fn malformed(path: impl Into<std::path::PathBuf>, msg: impl Into<String>) -> Self {
                Self::File($crate::FileError::malformed(path, msg))
            }
        }
    };
}

/// A file that could not be read, written or understood, with its path. Every ferry crate
/// carries file problems in this one shape (its error enum's `File` variant), so a message
/// always starts with the file, and a caller tells the operating system's refusals from bad
/// content by its [`FileProblem`].
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct FileError {
    /// The file (or folder) involved.
    pub path: PathBuf,
    /// What went wrong.
    pub problem: FileProblem,
}

/// What went wrong with a file. The message is part of [`FileError`]'s own, so neither variant
/// is reported again as a source.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// The operating system refused a read, write, rename or map.
    #[error("{0}")]
    Io(std::io::Error),
    /// The content is not what its format says (truncated, corrupt, inconsistent, a layout
    /// ferry cannot read); the message says what is wrong and the fix where there is one.
    #[error("{0}")]
    Malformed(String),
}

impl FileError {
    /// The operating system refused `source` on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FileError {
            path: path.into(),
            problem: FileProblem::Io(source),
        }
    }

    /// `path`'s content is wrong: `msg` says how.
    pub fn malformed(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        FileError {
            path: path.into(),
            problem: FileProblem::Malformed(msg.into()),
        }
    }
}
