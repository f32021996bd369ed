//! ferry-migrate: the `ferry migrate` pipeline as a library.
//!
//! A migration is a list of stages run in order — resolve the input, convert it, verify every
//! output tensor against its source, write the report — each timed and recorded in a
//! [`MigrationReport`] that renders as Markdown for people and JSON for machines. Later
//! stages (placement) slot into the same list. An `.onnx` input is migrated as a graph:
//! optimized with ferry-graph's passes (each verified), written back as ONNX, and checked end
//! to end against the original.
//! A model folder written by `ferry train` also gets a task-level check: per-language
//! accuracy of the original and the migrated weights on its evaluation data.
#![warn(missing_docs)]

mod embedded;
mod graph;
mod outputs;
mod pipeline;
mod report;
mod run;
mod task_eval;
mod tensors;

pub use embedded::{embedded_default, write_embedded, EMBEDDED_NAME};
pub use graph::is_graph;
pub use outputs::{implied_budget, OutputCheck, OutputsRecord};
pub use pipeline::{Event, Input, MigrateOptions, Target};
pub use report::{FileRecord, GraphRecord, MigrationReport, StageRecord, TensorRecord};
pub use run::migrate;
pub use task_eval::{LanguageDelta, TaskEval};

/// Errors of the migration pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor-format error.
    #[error(transparent)]
    Io(#[from] ferry_io::Error),
    /// Reading, optimizing, running or writing a graph failed.
    #[error(transparent)]
    Graph(#[from] ferry_graph::Error),
    /// The options do not fit the input.
    #[error("{0}")]
    Usage(String),
    /// Running or comparing the original and migrated models failed.
    #[error(transparent)]
    Verify(Box<ferry_verify::Error>),
    /// Loading or evaluating a model trained by ferry failed.
    #[error(transparent)]
    Train(Box<ferry_train::Error>),
    /// A file or folder that could not be read or written outside ferry-io's readers and
    /// writers.
    #[error(transparent)]
    File(#[from] ferry_io::FileError),
}

impl From<ferry_runtime::Error> for Error {
    fn from(e: ferry_runtime::Error) -> Self {
        Error::Verify(Box::new(ferry_verify::Error::Runtime(e)))
    }
}

impl From<ferry_verify::Error> for Error {
    fn from(e: ferry_verify::Error) -> Self {
        Error::Verify(Box::new(e))
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

ferry_io::file_error_constructors!(Error);
