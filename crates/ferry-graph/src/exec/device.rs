//! Device names (`cpu`, `cuda:0`, `metal:0`) to candle devices, through ferry-device.

use candle_core::Device;

/// The candle device a name describes. CUDA and Metal need ferry built with that feature:
/// the error says how.
pub fn parse_device(spec: &str) -> candle_core::Result<Device> {
    let open = |s: &str| ferry_device::open(s.parse()?);
    open(spec).map_err(|e: ferry_device::Error| candle_core::Error::Msg(e.to_string()))
}
