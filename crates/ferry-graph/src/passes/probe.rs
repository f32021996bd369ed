//! Running a graph on small seeded inputs to learn what static analysis would need a full
//! shape inference for: the dimensions of every value, and which shape computations depend
//! only on input shapes.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::exec::Executor;
use crate::ir::OnnxModel;
use crate::verify::{symbol_sizes, synth_inputs};

/// Symbolic-dimension sizes of the two probes: different primes, so a dimension that equals
/// an input's size in both probes is that size, not a coincidence.
pub(crate) const PROBE_SIZES: [&[usize]; 2] = [&[2, 7, 3, 5], &[3, 11, 5, 13]];

/// Every value of one run of `model` at `sizes`.
pub(crate) fn run_all(model: &OnnxModel, sizes: &[usize]) -> Result<HashMap<String, Tensor>> {
    let exec = Executor::new(model, &Device::Cpu)?;
    let dims = symbol_sizes(&model.graph, sizes);
    let inputs = synth_inputs(&model.graph, &dims, 7)?;
    let (values, _) = exec.run_keep(&inputs, &|_| true)?;
    let mut all = values;
    all.extend(inputs);
    Ok(all)
}

/// The dimensions of every value in one probe run.
pub(crate) fn dims(model: &OnnxModel) -> Result<HashMap<String, Vec<usize>>> {
    let mut out: HashMap<String, Vec<usize>> = run_all(model, PROBE_SIZES[0])?
        .into_iter()
        .map(|(k, v)| (k, v.dims().to_vec()))
        .collect();
    for (k, e) in &model.graph.initializers {
        out.insert(k.clone(), e.shape.clone());
    }
    Ok(out)
}
