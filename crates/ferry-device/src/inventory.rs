//! What this machine has: the CPU and its RAM, every CUDA and Metal device, and which backends
//! this build has (`ferry devices`).

use serde::Serialize;

use crate::spec::{compiled_backends, DeviceSpec};

/// The host CPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuInfo {
    /// The CPU's brand string, when the OS says.
    pub name: String,
    /// Physical cores (logical when the OS does not say).
    pub cores: usize,
    /// Logical CPUs this process may use.
    pub threads: usize,
    /// Total RAM in bytes.
    pub total_bytes: u64,
    /// RAM available to a new allocation in bytes (the OS's "available", not "free").
    pub available_bytes: u64,
}

/// One accelerator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuInfo {
    /// `cuda:N` or `metal:N`.
    pub device: DeviceSpec,
    /// The device's name.
    pub name: String,
    /// CUDA compute capability (major, minor); `None` for Metal.
    pub compute_capability: Option<(u32, u32)>,
    /// Total memory in bytes (Metal: the unified RAM).
    pub total_bytes: u64,
    /// Free memory in bytes.
    pub free_bytes: u64,
}

/// Everything [`Inventory::detect`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inventory {
    /// The host.
    pub cpu: CpuInfo,
    /// CUDA devices, in index order.
    pub cuda: Vec<GpuInfo>,
    /// Metal devices, in index order.
    pub metal: Vec<GpuInfo>,
    /// Backends compiled into this build (`cpu`, `cuda`, `metal`).
    pub compiled: Vec<&'static str>,
    /// Why a compiled-in backend shows no device (no driver, a stub library...).
    pub notes: Vec<String>,
}

impl Inventory {
    /// Looks at this machine: RAM and cores through `sysinfo`, CUDA devices through the driver
    /// (cudarc, as candle links it), Metal devices through candle.
    pub fn detect() -> Inventory {
        let mut notes = Vec::new();
        let cuda = cuda_devices(&mut notes);
        let cpu = cpu_info();
        let metal = metal_devices(&cpu, &mut notes);
        Inventory {
            cpu,
            cuda,
            metal,
            compiled: compiled_backends(),
            notes,
        }
    }

    /// Every device, accelerators first (CUDA, then Metal), the CPU last: the order `auto`
    /// placement fills them in.
    pub fn devices(&self) -> Vec<DeviceSpec> {
        self.cuda
            .iter()
            .chain(&self.metal)
            .map(|g| g.device)
            .chain([DeviceSpec::CPU])
            .collect()
    }

    /// The accelerator `spec`, if this inventory has it.
    pub fn gpu(&self, spec: DeviceSpec) -> Option<&GpuInfo> {
        self.cuda
            .iter()
            .chain(&self.metal)
            .find(|g| g.device == spec)
    }

    /// `(total, free)` bytes of `spec`: the CPU's total and available RAM, an accelerator's
    /// total and free memory; `None` for a device not in the inventory.
    pub fn memory(&self, spec: DeviceSpec) -> Option<(u64, u64)> {
        if spec == DeviceSpec::CPU {
            return Some((self.cpu.total_bytes, self.cpu.available_bytes));
        }
        self.gpu(spec).map(|g| (g.total_bytes, g.free_bytes))
    }
}

fn cpu_info() -> CpuInfo {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    CpuInfo {
        name: sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        cores: sysinfo::System::physical_core_count().unwrap_or(threads),
        threads,
        total_bytes: sys.total_memory(),
        available_bytes: sys.available_memory(),
    }
}

#[cfg(feature = "cuda")]
fn cuda_devices(notes: &mut Vec<String>) -> Vec<GpuInfo> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    let n = match CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => {
            notes.push(format!("cuda: no device usable ({e})"));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let info = CudaContext::new(i).and_then(|ctx| {
            let (major, minor) = ctx.compute_capability()?;
            let (free, total) = ctx.mem_get_info()?;
            Ok(GpuInfo {
                device: DeviceSpec::cuda(i),
                name: ctx.name()?,
                compute_capability: Some((major.max(0) as u32, minor.max(0) as u32)),
                total_bytes: total as u64,
                free_bytes: free as u64,
            })
        });
        match info {
            Ok(g) => out.push(g),
            Err(e) => notes.push(format!("cuda:{i}: {e}")),
        }
    }
    out
}

#[cfg(not(feature = "cuda"))]
fn cuda_devices(_notes: &mut [String]) -> Vec<GpuInfo> {
    Vec::new()
}

/// The Metal device as candle opens it (`metal:0`, the system's default: candle 0.11 panics on
/// an index past the last device, so no other is probed). Apple GPUs share the host's RAM, so
/// its memory is the CPU's (total and available).
fn metal_devices(cpu: &CpuInfo, notes: &mut Vec<String>) -> Vec<GpuInfo> {
    if !cfg!(feature = "metal") {
        return Vec::new();
    }
    match candle_core::Device::new_metal(0) {
        Ok(_) => vec![GpuInfo {
            device: DeviceSpec::metal(0),
            name: "Apple GPU".into(),
            compute_capability: None,
            total_bytes: cpu.total_bytes,
            free_bytes: cpu.available_bytes,
        }],
        Err(e) => {
            notes.push(format!("metal: no device usable ({e})"));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_cpu_with_ram_and_lists_it_last() {
        let inv = Inventory::detect();
        assert!(inv.cpu.cores >= 1 && inv.cpu.threads >= 1);
        assert!(inv.cpu.total_bytes > 0);
        assert!(inv.cpu.available_bytes <= inv.cpu.total_bytes);
        assert_eq!(inv.devices().last(), Some(&DeviceSpec::CPU));
        assert_eq!(inv.compiled[0], "cpu");
        let json = serde_json::to_value(&inv).unwrap();
        assert_eq!(json["cpu"]["total_bytes"], inv.cpu.total_bytes);
    }
}
