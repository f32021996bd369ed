//! ferry-graph: the model graph.
//!
//! - [`ir`]: nodes, values, symbolic shapes and initializers (held as ferry-io tensors, so
//!   large weights stay memory-mapped), with a validator that names the first inconsistency.
//! - [`onnx`]: reading `.onnx` files (external data included) into the IR and writing it back.
//! - [`exec`]: a candle executor; every node may carry its own device.
//! - [`passes`]: optimization and fusion passes, each reporting what it matched and why it
//!   left a candidate alone, and a pass manager that verifies numerics after each pass.
//! - [`verify`]: output comparison with named tolerances.
#![warn(missing_docs)]

pub mod error;
pub mod exec;
pub mod feeds;
pub mod ir;
pub mod onnx;
pub mod passes;
pub mod verify;

pub use error::{Error, Result};
pub use exec::Executor;
pub use ir::{Attr, Dim, Graph, Node, OnnxModel, ValueInfo};
