//! ONNX files: [`read_model`] decodes a `.onnx` file (and its external-data files) into the
//! IR without copying weights; [`read_tensor`] decodes one serialized `TensorProto` (ONNX's
//! test data); [`write_model`] writes the IR back as ONNX that onnxruntime
//! and the ONNX checker accept.
//!
//! The protobuf messages in [`proto`] are generated ahead of time from `proto/onnx.proto` by
//! `scripts/onnx-proto-gen` (pure Rust), so building needs no `protoc`.

mod dtype;
mod export;
mod functions;
mod import;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto;

pub use dtype::{dtype_from_onnx, dtype_to_onnx};
pub use export::{write_model, ExportOptions, ExternalData, INLINE_LIMIT};
pub use functions::FERRY_DOMAIN;
pub use import::{decode_model, read_model, read_tensor};
