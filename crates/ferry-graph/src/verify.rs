//! Comparing graph outputs, and making inputs to compare them on.
//!
//! Tolerances are relative to the reference's scale: an output passes `rel` when every
//! element satisfies `|got - ref| <= rel * (max |ref| + |ref|)`. Pure element-wise relative
//! error is meaningless next to zeros, and pure absolute error depends on the model.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ferry_io::compare::{compare_tensors, TensorComparison, Tolerance};
use indexmap::IndexMap;

use crate::error::{Error, Result};
use crate::exec::MemoryBudget;
use crate::ir::{entry_from_candle, Dim, Graph};

/// The tolerance for `reference` at relative level `rel`.
pub fn scaled_tolerance(reference: &Tensor, rel: f64) -> Result<Tolerance> {
    let scale = reference
        .to_dtype(DType::F64)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()
        .unwrap_or(0.0);
    Ok(Tolerance {
        atol: rel * scale,
        rtol: rel,
        min_cosine: None,
    })
}

/// Compares each output of `got` with the same-named one of `reference`.
pub fn compare_outputs(
    reference: &IndexMap<String, Tensor>,
    got: &IndexMap<String, Tensor>,
    rel: f64,
) -> Result<Vec<TensorComparison>> {
    let mut out = Vec::new();
    for (name, r) in reference {
        let Some(g) = got.get(name) else {
            return Err(crate::Error::Invalid(format!("output `{name}` is missing")));
        };
        let tol = if r.dtype().is_float() {
            scaled_tolerance(r, rel)?
        } else {
            Tolerance::EXACT
        };
        let (ra, ga) = (entry_from_candle(name, r)?, entry_from_candle(name, g)?);
        out.push(compare_tensors(&ra, &ga, Some(tol))?);
    }
    Ok(out)
}

/// Sizes for symbolic dimensions: each distinct name gets the next value of `sizes`
/// (cycled); unknown dimensions get their own.
pub fn symbol_sizes(graph: &Graph, sizes: &[usize]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    let mut next = 0;
    for vi in &graph.inputs {
        for (axis, d) in vi.shape.iter().flatten().enumerate() {
            let key = match d {
                Dim::Symbolic(s) => s.clone(),
                Dim::Unknown => format!("{}:{axis}", vi.name),
                Dim::Fixed(_) => continue,
            };
            m.entry(key).or_insert_with(|| {
                let v = sizes[next % sizes.len()];
                next += 1;
                v
            });
        }
    }
    m
}

/// Seeded inputs for `graph` with symbolic dimensions sized by `sizes` (see
/// [`symbol_sizes`]). Floats are uniform in [-1, 1); integers that index a table (a Gather's
/// indices) are uniform over its rows; other integers (masks) are 1. An input whose declared
/// dimensions exceed the memory budget ([`MemoryBudget::from_env`]) is an
/// [`Error::InputOverBudget`], before anything is allocated.
pub fn synth_inputs(
    graph: &Graph,
    sizes: &HashMap<String, usize>,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let budget = MemoryBudget::from_env();
    let mut out = HashMap::new();
    for vi in &graph.inputs {
        let dims: Vec<usize> = vi
            .shape
            .iter()
            .flatten()
            .enumerate()
            .map(|(axis, d)| match d {
                Dim::Fixed(n) => *n,
                Dim::Symbolic(s) => sizes.get(s).copied().unwrap_or(1),
                Dim::Unknown => sizes
                    .get(&format!("{}:{axis}", vi.name))
                    .copied()
                    .unwrap_or(1),
            })
            .collect();
        let dtype = vi.dtype.unwrap_or(ferry_io::DType::F32);
        // Made as f32 (f64 stays f64) or i64 first, then cast.
        let made = match dtype.to_candle() {
            Some(DType::F64) => DType::F64,
            _ if dtype.is_float() => DType::F32,
            _ => DType::I64,
        };
        budget
            .check("its declared shape", &dims, made)
            .map_err(|exceeded| Error::InputOverBudget {
                input: vi.name.clone(),
                exceeded: Box::new(exceeded),
            })?;
        let n: usize = dims.iter().product();
        let t = if dtype.is_float() {
            let v: Vec<f32> = (0..n).map(|_| (next() * 2.0 - 1.0) as f32).collect();
            Tensor::from_vec(v, dims, &Device::Cpu)?
                .to_dtype(dtype.to_candle().unwrap_or(DType::F32))?
        } else {
            let rows = gather_rows(graph, &vi.name);
            let v: Vec<i64> = (0..n)
                .map(|_| match rows {
                    Some(r) => (next() * r as f64) as i64,
                    None => 1,
                })
                .collect();
            let t = Tensor::from_vec(v, dims, &Device::Cpu)?;
            match dtype {
                ferry_io::DType::I64 => t,
                ferry_io::DType::I32 => t.to_dtype(DType::I32)?,
                _ => t.to_dtype(DType::U8)?,
            }
        };
        out.insert(vi.name.clone(), t);
    }
    Ok(out)
}

/// The row count of the smallest table `name` indexes through Gather (directly or through
/// Cast/Unsqueeze/Reshape), when it does.
fn gather_rows(graph: &Graph, name: &str) -> Option<usize> {
    let mut names = vec![name.to_string()];
    let mut rows: Option<usize> = None;
    for node in &graph.nodes {
        if !node.inputs.iter().any(|i| names.contains(i)) {
            continue;
        }
        match node.op_type.as_str() {
            "Cast" | "Unsqueeze" | "Reshape" | "Flatten" => {
                names.extend(node.outputs.iter().cloned())
            }
            "Gather" if node.input(1).is_some_and(|i| names.iter().any(|n| n == i)) => {
                let axis = node.attr_int("axis", 0);
                if let Some(t) = node.input(0).and_then(|d| graph.initializers.get(d)) {
                    let r = t.shape.get(axis.max(0) as usize).copied().unwrap_or(1);
                    rows = Some(rows.map_or(r, |x: usize| x.min(r)));
                }
            }
            _ => {}
        }
    }
    rows
}
