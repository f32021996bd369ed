//! Helpers shared by the integration tests.

use candle_core::Tensor;

/// The largest absolute element-wise difference of two tensors of one shape.
#[allow(dead_code)] // each test binary includes this module; not every one compares tensors
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar())
        .expect("tensors of the same shape")
}

/// Each step's (step, loss as f32 bits) from a run folder's `metrics.jsonl`: what two runs
/// must share bit for bit.
#[allow(dead_code)] // each test binary includes this module; not every one trains
pub fn step_losses(dir: &std::path::Path) -> Vec<(u64, u32)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            let loss = v["loss"].as_f64().unwrap() as f32;
            (v["step"].as_u64().unwrap(), loss.to_bits())
        })
        .collect()
}
