//! ferry-device: the devices ferry runs on, and where a model goes on them.
//!
//! - [`DeviceSpec`] names a device (`cpu`, `cuda:0`, `metal:0`) and opens it as a candle
//!   [`candle_core::Device`]; a device whose backend was not compiled in is an error that says
//!   how to build it ([`open`]).
//! - [`Inventory`] lists what this machine has: the CPU (cores, total and available RAM), every
//!   CUDA device (name, compute capability, total and free memory) and Metal device, and which
//!   backends this build has.
//! - [`memory`] counts bytes: per tensor as the runtime holds it on a device, per placement unit
//!   (embeddings, each block, final norm + head), the KV cache and the activations of a
//!   forward pass for a batch and context.
//! - [`plan`] places units on devices: `auto` fills devices in order keeping a reserve, never
//!   splits a unit and spills to the CPU; regex maps and memory caps override it; a model that
//!   cannot fit is an error that says by how much and what would fit.
//! - [`DTypePolicy`] picks each device's compute dtype (f32 on CPU, bf16 on CUDA 8.0+, f16 on
//!   older CUDA and Metal), overridable.
#![warn(missing_docs)]

pub mod error;
pub mod inventory;
pub mod memory;
pub mod plan;
pub mod policy;
pub mod spec;

pub use error::{Error, Result};
pub use inventory::{CpuInfo, GpuInfo, Inventory};
pub use memory::{ArchShape, Keep, ModelCost, TensorCost, Unit, Workload};
pub use plan::{DevicePlan, Plan, PlanOptions, Reserve};
pub use policy::DTypePolicy;
pub use spec::{open, DeviceKind, DeviceSpec};
