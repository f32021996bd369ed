//! Device names (`cpu`, `cuda:0`, `metal:0`) and opening them as candle devices.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

/// A device family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// An NVIDIA GPU through candle's CUDA backend.
    Cuda,
    /// An Apple GPU through candle's Metal backend.
    Metal,
}

/// One device: a family and an index (`cuda:1`). The CPU is always index 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceSpec {
    /// The family.
    pub kind: DeviceKind,
    /// The index within the family.
    pub index: usize,
}

impl DeviceSpec {
    /// The CPU.
    pub const CPU: DeviceSpec = DeviceSpec {
        kind: DeviceKind::Cpu,
        index: 0,
    };

    /// CUDA device `index`.
    pub fn cuda(index: usize) -> DeviceSpec {
        DeviceSpec {
            kind: DeviceKind::Cuda,
            index,
        }
    }

    /// Metal device `index`.
    pub fn metal(index: usize) -> DeviceSpec {
        DeviceSpec {
            kind: DeviceKind::Metal,
            index,
        }
    }

    /// Whether this is an accelerator (not the CPU).
    pub fn is_accelerator(&self) -> bool {
        self.kind != DeviceKind::Cpu
    }

    /// The spec of an open candle device.
    pub fn of(device: &Device) -> DeviceSpec {
        match device.location() {
            candle_core::DeviceLocation::Cpu => DeviceSpec::CPU,
            candle_core::DeviceLocation::Cuda { gpu_id } => DeviceSpec::cuda(gpu_id),
            candle_core::DeviceLocation::Metal { gpu_id } => DeviceSpec::metal(gpu_id),
        }
    }
}

/// The backends this build has: `cpu`, and `cuda` / `metal` when compiled in.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "metal") {
        v.push("metal");
    }
    v
}

/// Whether this build has `kind`'s backend.
pub fn compiled(kind: DeviceKind) -> bool {
    match kind {
        DeviceKind::Cpu => true,
        DeviceKind::Cuda => cfg!(feature = "cuda"),
        DeviceKind::Metal => cfg!(feature = "metal"),
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.index),
            DeviceKind::Metal => write!(f, "metal:{}", self.index),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu`, `cuda` (= `cuda:0`), `cuda:N`, `metal`, `metal:N`.
    fn from_str(s: &str) -> Result<DeviceSpec> {
        let bad = |msg: &str| Error::Spec {
            spec: s.to_string(),
            msg: msg.to_string(),
        };
        let (kind, index) = match s.trim().split_once(':') {
            Some((k, i)) => (
                k,
                i.parse::<usize>()
                    .map_err(|_| bad(&format!("`{i}` is not a device index")))?,
            ),
            None => (s.trim(), 0),
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "cpu" if index == 0 => DeviceKind::Cpu,
            "cpu" => return Err(bad("there is one CPU device, `cpu`")),
            "cuda" | "gpu" => DeviceKind::Cuda,
            "metal" | "mps" if index == 0 => DeviceKind::Metal,
            // candle opens the system's default Metal device only (a Mac has one GPU).
            "metal" | "mps" => return Err(bad("there is one Metal device, `metal:0`")),
            _ => return Err(bad("expected cpu, cuda:N or metal:N")),
        };
        Ok(DeviceSpec { kind, index })
    }
}

/// Opens `spec` as a candle device. A device whose backend this build lacks is
/// [`Error::NotCompiled`], naming the feature and the build command.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    if !compiled(spec.kind) {
        return Err(not_compiled(spec));
    }
    let r = match spec.kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(spec.index),
        DeviceKind::Metal => Device::new_metal(spec.index),
    };
    r.map_err(|e| Error::Open {
        spec: spec.to_string(),
        // The message, not the backtrace candle attaches to it.
        msg: e.to_string().lines().next().unwrap_or_default().to_string(),
    })
}

/// The error for `spec` when this build lacks its backend: the feature and how to build it.
pub(crate) fn not_compiled(spec: DeviceSpec) -> Error {
    let (feature, how) = match spec.kind {
        DeviceKind::Cuda => (
            "cuda",
            "rebuild with `cargo build --release --features cuda` on a machine with the CUDA \
             toolkit (or scripts/cuda-toolchain.sh DIR; source DIR/env.sh first), or pass \
             --device cpu",
        ),
        _ => (
            "metal",
            "rebuild on macOS with `cargo build --release --features metal`, or pass \
             --device cpu",
        ),
    };
    Error::NotCompiled {
        spec: spec.to_string(),
        feature,
        how,
    }
}

/// Parses a comma-separated device list (`cuda:0,cuda:1,cpu`), keeping order, without repeats.
pub fn parse_list(s: &str) -> Result<Vec<DeviceSpec>> {
    let mut out: Vec<DeviceSpec> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d: DeviceSpec = part.parse()?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.is_empty() {
        return Err(Error::Spec {
            spec: s.to_string(),
            msg: "no device named".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for s in ["cpu", "cuda:0", "cuda:3", "metal:0"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::cuda(0));
        assert!("cpu:1".parse::<DeviceSpec>().is_err());
        assert!("metal:1".parse::<DeviceSpec>().is_err());
        assert!("tpu:0".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(
            parse_list("cuda:1, cpu,cuda:1").unwrap(),
            vec![DeviceSpec::cuda(1), DeviceSpec::CPU]
        );
    }

    #[test]
    fn a_backend_not_built_in_is_named_with_the_build_command() {
        assert!(open(DeviceSpec::CPU).unwrap().is_cpu());
        if !compiled(DeviceKind::Cuda) {
            let e = open(DeviceSpec::cuda(0)).unwrap_err().to_string();
            assert!(e.contains("`cuda` feature"), "{e}");
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
