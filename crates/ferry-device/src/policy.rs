//! The dtype each device computes in.

use candle_core::DType;

use crate::inventory::Inventory;
use crate::spec::{DeviceKind, DeviceSpec};

/// Compute dtype per device: f32 on the CPU, bf16 on CUDA devices of compute capability 8.0
/// and newer (Ampere on), f16 on older CUDA devices and on Metal; `force` overrides every
/// device (`--dtype`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DTypePolicy {
    /// One dtype for every device, when given.
    pub force: Option<DType>,
}

impl DTypePolicy {
    /// The dtype `spec` computes in; `inventory` gives a CUDA device's compute capability
    /// (unknown capability: bf16, what every CUDA device candle's kernels target runs).
    pub fn dtype(&self, spec: DeviceSpec, inventory: Option<&Inventory>) -> DType {
        if let Some(d) = self.force {
            return d;
        }
        match spec.kind {
            DeviceKind::Cpu => DType::F32,
            DeviceKind::Metal => DType::F16,
            DeviceKind::Cuda => {
                let cc = inventory
                    .and_then(|i| i.gpu(spec))
                    .and_then(|g| g.compute_capability);
                match cc {
                    Some((major, _)) if major < 8 => DType::F16,
                    _ => DType::BF16,
                }
            }
        }
    }

    /// Parses `--dtype` (`f32`, `f16`, `bf16`); `auto` or nothing is the per-device default.
    pub fn parse(s: Option<&str>) -> crate::Result<DTypePolicy> {
        let force = match s.map(str::to_ascii_lowercase).as_deref() {
            None | Some("auto") => None,
            Some("f32") => Some(DType::F32),
            Some("f16") => Some(DType::F16),
            Some("bf16") => Some(DType::BF16),
            Some(other) => {
                return Err(crate::Error::Option(format!(
                    "--dtype {other}: expected auto, f32, f16 or bf16"
                )))
            }
        };
        Ok(DTypePolicy { force })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{CpuInfo, GpuInfo};

    #[test]
    fn each_device_gets_its_dtype_unless_forced() {
        let gpu = |i, cc| GpuInfo {
            device: DeviceSpec::cuda(i),
            name: "test".into(),
            compute_capability: Some(cc),
            total_bytes: 1 << 30,
            free_bytes: 1 << 30,
        };
        let inv = Inventory {
            cpu: CpuInfo {
                name: String::new(),
                cores: 2,
                threads: 2,
                total_bytes: 1 << 34,
                available_bytes: 1 << 34,
            },
            cuda: vec![gpu(0, (9, 0)), gpu(1, (7, 5))],
            metal: Vec::new(),
            compiled: vec!["cpu"],
            notes: Vec::new(),
        };
        let p = DTypePolicy::default();
        assert_eq!(p.dtype(DeviceSpec::CPU, Some(&inv)), DType::F32);
        assert_eq!(p.dtype(DeviceSpec::cuda(0), Some(&inv)), DType::BF16);
        assert_eq!(p.dtype(DeviceSpec::cuda(1), Some(&inv)), DType::F16);
        assert_eq!(p.dtype(DeviceSpec::metal(0), None), DType::F16);
        let bf16 = DTypePolicy::parse(Some("bf16")).unwrap();
        assert_eq!(bf16.dtype(DeviceSpec::CPU, Some(&inv)), DType::BF16);
        assert!(DTypePolicy::parse(Some("q4")).is_err());
        assert_eq!(DTypePolicy::parse(Some("auto")).unwrap(), p);
    }
}
