//! ferry-io: every tensor format ferry reads and writes, behind one [`Checkpoint`] view.
//!
//! - [`Checkpoint::open`] detects the format from the content and lists tensors lazily.
//! - [`formats`] holds one module per container format (readers and writers).
//! - [`cast`], [`quant`] and [`rename`] transform tensors; [`convert`] plans a conversion and
//!   streams it into a writer; [`compare`] checks tensors against each other.
//! - [`imatrix`] reads and writes llama.cpp's importance matrices and quantizes with them.
//! - Every write is atomic ([`atomic`]).
#![warn(missing_docs)]

pub mod arch;
pub mod atomic;
pub mod budget;
pub mod cast;
pub mod checkpoint;
pub mod compare;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod formats;
pub mod hub;
pub mod imatrix;
pub mod meta;
mod open;
pub mod quant;
pub mod rename;
pub mod tensor;
pub mod units;
pub mod write;

pub use checkpoint::{Checkpoint, Format};
pub use dtype::DType;
pub use error::{Error, FileError, FileProblem, Result};
pub use meta::{MetaValue, Metadata};
pub use tensor::{Layout, Storage, TensorEntry};
pub use write::OutTensor;
