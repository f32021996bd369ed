//! Device names (`cpu`, `cuda:0`, `metal:0`) to candle devices.

use candle_core::Device;

/// The candle device a name describes. CUDA and Metal need ferry built with that feature.
pub fn parse_device(spec: &str) -> candle_core::Result<Device> {
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => (
            k,
            i.parse::<usize>().map_err(|_| {
                candle_core::Error::Msg(format!("device `{spec}`: `{i}` is not a device index"))
            })?,
        ),
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(index),
        "metal" => Device::new_metal(index),
        _ => candle_core::bail!("unknown device `{spec}` (cpu, cuda:N, metal:N)"),
    }
}
