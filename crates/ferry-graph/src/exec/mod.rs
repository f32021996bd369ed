//! Runs a graph on candle.
//!
//! [`Executor::new`] checks every op against the registry first and lists all unsupported
//! ones at once; it loads the initializers onto their devices. [`Executor::run`] then walks
//! the nodes in order. A node with its own [`Node::device`](crate::ir::Node) runs there; its
//! inputs are moved when they live elsewhere (counted in [`RunStats::transfers`]). Values are
//! dropped after their last use. No op makes a tensor over the [`MemoryBudget`] from what the
//! graph asks for: it is an [`Error::NodeOverBudget`] instead.
//!
//! If, Loop and Scan run their subgraphs here (see `control`): each subgraph is an executor
//! of its own, prepared with the enclosing one, and reads the enclosing values it captures.

mod budget;
mod control;
mod device;
mod ops;
mod types;
mod util;

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use indexmap::IndexMap;

pub use budget::MemoryBudget;
pub use control::MAX_ITERATIONS;
pub use device::parse_device;
pub use ops::is_supported;
pub use ops::reshape_dims;
use ops::OpCx;
pub(crate) use types::{elem_types, input_types};
use util::OpError;

use crate::error::{Error, Result};
use crate::ir::{entry_to_candle, Graph, Node, OnnxModel};

/// What a run did besides computing outputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    /// Tensors moved between devices because consecutive nodes ran on different ones.
    pub transfers: usize,
    /// Per op type: (nodes run, seconds), when profiling was asked for.
    pub profile: std::collections::BTreeMap<String, (usize, f64)>,
}

/// A graph ready to run.
pub struct Executor {
    graph: Graph,
    opset: i64,
    device: Device,
    node_devices: Vec<Device>,
    consts: HashMap<String, Tensor>,
    /// Constant weights packed once for the nodes that multiply by them (CPU, f32, 2-D, on
    /// CPUs with AVX-512). A weight only such nodes read is not kept in `consts` as well.
    packed: HashMap<String, ferry_kernels::PackedMatrix>,
    /// For each node, the values whose last reader it is.
    frees: Vec<Vec<String>>,
    /// For each node, the declared ONNX element types of its inputs ([`types`]).
    in_types: Vec<Vec<Option<i32>>>,
    /// For each node, its subgraphs prepared to run (If, Loop, Scan).
    bodies: Vec<Option<control::Bodies>>,
    budget: MemoryBudget,
    max_iterations: u64,
}

impl Executor {
    /// Prepares `model` to run on `device` (nodes with their own device run there), under the
    /// memory budget of [`MemoryBudget::from_env`] and at most [`MAX_ITERATIONS`] Loop and
    /// Scan body iterations per run. Every unsupported op, in subgraphs too, is listed at once.
    pub fn new(model: &OnnxModel, device: &Device) -> Result<Self> {
        let opset = model.opset();
        let mut unsupported = Vec::new();
        list_unsupported(&model.graph, opset, "", &mut unsupported);
        if !unsupported.is_empty() {
            return Err(Error::Unsupported(unsupported));
        }
        Self::prepare(model.graph.clone(), opset, device)
    }

    /// Prepares `graph` (whose ops are supported) to run, a subgraph's with it.
    fn prepare(graph: Graph, opset: i64, device: &Device) -> Result<Self> {
        let mut devices: HashMap<String, Device> = HashMap::new();
        let node_devices = graph
            .nodes
            .iter()
            .map(|n| match &n.device {
                None => Ok(device.clone()),
                Some(spec) => {
                    if let Some(d) = devices.get(spec) {
                        return Ok(d.clone());
                    }
                    let d = parse_device(spec).map_err(|e| n.error(e.to_string()))?;
                    devices.insert(spec.clone(), d.clone());
                    Ok(d)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // Initializers go where their first reader runs.
        let mut consts = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            for inp in n.reads() {
                if consts.contains_key(inp) {
                    continue;
                }
                if let Some(e) = graph.initializers.get(inp) {
                    consts.insert(inp.to_string(), entry_to_candle(e, &node_devices[i])?);
                }
            }
        }
        for o in &graph.outputs {
            if let Some(e) = graph.initializers.get(&o.name) {
                consts.insert(o.name.clone(), entry_to_candle(e, device)?);
            }
        }
        let packed = pack_weights(&graph, &node_devices, &mut consts)?;
        let frees = last_uses(&graph);
        let codes = elem_types(&graph);
        let in_types = graph.nodes.iter().map(|n| input_types(n, &codes)).collect();
        let bodies = graph
            .nodes
            .iter()
            .zip(&node_devices)
            .map(|(n, dev)| control::prepare(n, opset, dev))
            .collect::<Result<Vec<_>>>()?;
        Ok(Executor {
            graph,
            opset,
            device: device.clone(),
            node_devices,
            consts,
            packed,
            frees,
            in_types,
            bodies,
            budget: MemoryBudget::from_env(),
            max_iterations: MAX_ITERATIONS,
        })
    }

    /// Lets one run take `n` Loop and Scan body iterations (nested ones counted together)
    /// instead of [`MAX_ITERATIONS`].
    pub fn with_max_iterations(mut self, n: u64) -> Self {
        self.max_iterations = n;
        self
    }

    /// Runs under `budget` instead.
    pub fn with_budget(mut self, budget: MemoryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Runs the graph; returns its outputs in graph order.
    pub fn run(&self, inputs: &HashMap<String, Tensor>) -> Result<IndexMap<String, Tensor>> {
        let (mut values, _) = self.run_keep(inputs, &|_| false)?;
        self.graph
            .outputs
            .iter()
            .map(|o| {
                values
                    .remove(&o.name)
                    .map(|t| (o.name.clone(), t))
                    .ok_or_else(|| Error::Invalid(format!("output `{}` was not computed", o.name)))
            })
            .collect()
    }

    /// Runs the graph and returns every graph output plus the intermediate values `keep`
    /// selects (for per-layer comparison), with the run's statistics.
    pub fn run_keep(
        &self,
        inputs: &HashMap<String, Tensor>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        self.run_inner(inputs, keep, false)
    }

    /// Runs the graph timing each op type (see [`RunStats::profile`]).
    pub fn run_profiled(
        &self,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        self.run_inner(inputs, &|_| false, true)
    }

    fn run_inner(
        &self,
        inputs: &HashMap<String, Tensor>,
        keep: &dyn Fn(&str) -> bool,
        profile: bool,
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        let mut values: HashMap<String, Tensor> = HashMap::new();
        for vi in &self.graph.inputs {
            let t = inputs.get(&vi.name).ok_or_else(|| {
                Error::Invalid(format!(
                    "input `{}` {} was not given (inputs: {})",
                    vi.name,
                    vi.shape_text(),
                    self.graph
                        .inputs
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            check_input(vi, t)?;
            values.insert(vi.name.clone(), t.to_device(&self.device)?);
        }
        let limits = control::Limits::new(self.budget, self.max_iterations);
        self.run_values(values, keep, profile, &limits)
    }

    /// Runs the nodes from `values` (the graph's inputs; a subgraph's captured values too)
    /// under `limits`; returns every value left, the outputs included.
    fn run_values(
        &self,
        mut values: HashMap<String, Tensor>,
        keep: &dyn Fn(&str) -> bool,
        profile: bool,
        limits: &control::Limits,
    ) -> Result<(HashMap<String, Tensor>, RunStats)> {
        let outputs: HashSet<&str> = self.graph.outputs.iter().map(|o| o.name.as_str()).collect();
        let mut stats = RunStats::default();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let dev = &self.node_devices[i];
            let mut args = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                if name.is_empty() {
                    args.push(None);
                    continue;
                }
                let Some(t) = values.get(name).or_else(|| self.consts.get(name)) else {
                    if self.packed.contains_key(name) {
                        args.push(None); // read through OpCx::packed
                        continue;
                    }
                    return Err(node.error(format!("input `{name}` is not available")));
                };
                if !t.device().same_device(dev) {
                    stats.transfers += 1;
                    args.push(Some(t.to_device(dev)?));
                } else {
                    args.push(Some(t.clone()));
                }
            }
            let cx = OpCx {
                opset: self.opset,
                device: dev,
                packed: (ops::packs_weight(node) && dev.is_cpu())
                    .then(|| node.inputs.get(1).and_then(|w| self.packed.get(w)))
                    .flatten(),
                budget: limits.budget,
                in_types: &self.in_types[i],
            };
            let start = profile.then(std::time::Instant::now);
            let outs = match &self.bodies[i] {
                Some(bodies) => {
                    let outer =
                        |name: &str| values.get(name).or_else(|| self.consts.get(name)).cloned();
                    let scope = control::Scope {
                        outer: &outer,
                        limits,
                        stats: &mut stats,
                    };
                    control::run(node, bodies, &cx, args, scope)?
                }
                None => ops::run(node, &cx, args).map_err(|e| op_error(node, e))?,
            };
            if let Some(t) = start {
                let e = stats.profile.entry(node.qualified_op()).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += t.elapsed().as_secs_f64();
            }
            if let Some((i, name)) = node
                .outputs
                .iter()
                .enumerate()
                .skip(outs.len())
                .find(|(_, n)| !n.is_empty())
            {
                return Err(node.error(format!(
                    "output {i} (`{name}`) is not supported by ferry's implementation"
                )));
            }
            for (name, t) in node.outputs.iter().zip(outs) {
                if !name.is_empty() {
                    values.insert(name.clone(), t);
                }
            }
            for name in &self.frees[i] {
                if !outputs.contains(name.as_str()) && !keep(name) {
                    values.remove(name);
                }
            }
        }
        for o in &self.graph.outputs {
            if let Some(c) = self.consts.get(&o.name) {
                values.insert(o.name.clone(), c.clone());
            }
        }
        Ok((values, stats))
    }
}

/// Lists, into `out`, every node of `graph` and of the subgraphs of its supported nodes whose
/// op is not supported; `within` says where `graph` sits (empty for the main graph).
fn list_unsupported(graph: &Graph, opset: i64, within: &str, out: &mut Vec<String>) {
    for n in &graph.nodes {
        if !is_supported(n) {
            out.push(format!(
                "  op `{}` at node `{}`{within} (opset {opset})",
                n.qualified_op(),
                n.name
            ));
            continue;
        }
        for (attr, g) in n.subgraphs() {
            let within = format!(" in `{attr}` of node `{}`{within}", n.name);
            list_unsupported(g, opset, &within, out);
        }
    }
}

/// Checks a tensor against the shape `vi` declares (fixed dimensions and rank).
fn check_input(vi: &crate::ir::ValueInfo, t: &Tensor) -> Result<()> {
    let Some(shape) = &vi.shape else {
        return Ok(());
    };
    let dims = t.dims();
    let bad = dims.len() != shape.len()
        || shape
            .iter()
            .zip(dims)
            .any(|(d, &n)| matches!(d, crate::ir::Dim::Fixed(f) if *f != n));
    if bad {
        return Err(Error::Invalid(format!(
            "input `{}` has shape {dims:?} but the graph expects {}",
            vi.name,
            vi.shape_text()
        )));
    }
    Ok(())
}

/// Packs the constant weights of the nodes that can take them packed ([`ops::packs_weight`]):
/// f32 2-D initializers read on CPU, when the CPU has the packed kernel. A weight read only by
/// such nodes (and not a graph output) leaves `consts`, so it is held once.
fn pack_weights(
    graph: &Graph,
    node_devices: &[Device],
    consts: &mut HashMap<String, Tensor>,
) -> Result<HashMap<String, ferry_kernels::PackedMatrix>> {
    let mut packed = HashMap::new();
    if !ferry_kernels::avx512_available() {
        return Ok(packed);
    }
    for (n, dev) in graph.nodes.iter().zip(node_devices) {
        let Some(w) = n.inputs.get(1) else { continue };
        if !ops::packs_weight(n) || !dev.is_cpu() || packed.contains_key(w) {
            continue;
        }
        let Some(t) = consts.get(w) else { continue };
        if t.dtype() != candle_core::DType::F32 || !t.device().is_cpu() {
            continue;
        }
        let Ok((k, cols)) = t.dims2() else { continue };
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        if let Some(p) = ferry_kernels::PackedMatrix::pack(&values, k, cols) {
            packed.insert(w.clone(), p);
        }
    }
    let outputs: HashSet<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
    for name in packed.keys() {
        // Any reader that does not take it packed: another input slot, another op, or a
        // fused node on another device (it runs the unpacked path).
        let other_reader =
            graph.nodes.iter().zip(node_devices).any(|(n, dev)| {
                n.inputs.iter().enumerate().any(|(i, inp)| {
                    inp == name && !(i == 1 && ops::packs_weight(n) && dev.is_cpu())
                }) || n.captured_inputs().contains(&name.as_str())
            });
        if !other_reader && !outputs.contains(name.as_str()) {
            consts.remove(name);
        }
    }
    Ok(packed)
}

/// For each node, the non-initializer values it is the last reader of (values its subgraphs
/// capture are read by the node).
fn last_uses(g: &Graph) -> Vec<Vec<String>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for inp in n.reads() {
            last.insert(inp, i);
        }
    }
    let mut frees = vec![Vec::new(); g.nodes.len()];
    for (name, i) in last {
        if !g.initializers.contains_key(name) {
            frees[i].push(name.to_string());
        }
    }
    frees
}

/// Runs one node on its own under `budget`: inputs as given, with their declared ONNX
/// element types where known, outputs returned (used by constant folding).
pub fn run_node(
    node: &Node,
    opset: i64,
    budget: MemoryBudget,
    in_types: &[Option<i32>],
    inputs: Vec<Option<Tensor>>,
) -> Result<Vec<Tensor>> {
    let cx = OpCx {
        opset,
        device: &Device::Cpu,
        packed: None,
        budget,
        in_types,
    };
    ops::run(node, &cx, inputs).map_err(|e| op_error(node, e))
}

/// An op's failure as an error naming its node.
fn op_error(node: &Node, e: OpError) -> Error {
    match e {
        OpError::Candle(e) => node.error(e.to_string()),
        OpError::OverBudget(exceeded) => Error::NodeOverBudget {
            node: node.name.clone(),
            op: node.op_type.clone(),
            exceeded,
        },
    }
}

/// The first element of a tensor as f64.
pub fn scalar_f64(t: &Tensor) -> candle_core::Result<f64> {
    t.flatten_all()?
        .get(0)?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()
}

/// A tensor's values as i64.
pub fn ints(t: &Tensor) -> Result<Vec<i64>> {
    Ok(util::ints_of(t)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{entry_from_candle, Dim, ValueInfo};
    use crate::onnx::FERRY_DOMAIN;

    fn vi(name: &str, dims: &[usize]) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype: Some(ferry_io::DType::F32),
            shape: Some(dims.iter().map(|d| Dim::Fixed(*d)).collect()),
        }
    }

    /// `y1 = MatMulBias(x, w, b)`, `y2 = MatMulBiasGelu(x, w2, b)`, `y3 = MatMul(x, w2)`, and
    /// `w` itself as an output: the executor packs both weights, keeps `w2` (another node reads
    /// it) and `w` (an output) as tensors too, and every output matches the composed ops.
    #[test]
    fn packed_weights_give_the_same_outputs_and_stay_where_others_read_them() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 40), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (40, 70), &dev).unwrap();
        let w2 = Tensor::randn(0f32, 1.0, (40, 70), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 70, &dev).unwrap();
        let fused = |name: &str, op: &str, wn: &str, out: &str| {
            let mut n = Node::new(
                name,
                op,
                vec!["x".into(), wn.into(), "b".into()],
                vec![out.into()],
            );
            n.domain = FERRY_DOMAIN.into();
            n
        };
        let mut graph = Graph {
            name: "packed".into(),
            inputs: vec![vi("x", &[2, 5, 40])],
            outputs: vec![
                vi("y1", &[2, 5, 70]),
                vi("y2", &[2, 5, 70]),
                vi("y3", &[2, 5, 70]),
                vi("w", &[40, 70]),
            ],
            nodes: vec![
                fused("n1", "MatMulBias", "w", "y1"),
                fused("n2", "MatMulBiasGelu", "w2", "y2"),
                Node::new(
                    "n3",
                    "MatMul",
                    vec!["x".into(), "w2".into()],
                    vec!["y3".into()],
                ),
            ],
            ..Graph::default()
        };
        for (name, t) in [("w", &w), ("w2", &w2), ("b", &b)] {
            graph
                .initializers
                .insert(name.into(), entry_from_candle(name, t).unwrap());
        }
        let model = OnnxModel {
            graph,
            opsets: [(String::new(), 17), (FERRY_DOMAIN.to_string(), 1)]
                .into_iter()
                .collect(),
            ir_version: 8,
            ..OnnxModel::default()
        };
        let exec = Executor::new(&model, &dev).unwrap();
        assert_eq!(
            exec.packed.len(),
            if ferry_kernels::avx512_available() {
                2
            } else {
                0
            }
        );
        assert!(exec.consts.contains_key("w") && exec.consts.contains_key("w2"));
        let out = exec
            .run(&[("x".to_string(), x.clone())].into_iter().collect())
            .unwrap();
        let y = x.broadcast_matmul(&w).unwrap().broadcast_add(&b).unwrap();
        let y2 = x
            .broadcast_matmul(&w2)
            .unwrap()
            .broadcast_add(&b)
            .unwrap()
            .gelu_erf()
            .unwrap();
        let y3 = x.broadcast_matmul(&w2).unwrap();
        for (name, want) in [("y1", &y), ("y2", &y2), ("y3", &y3), ("w", &w)] {
            let diff = (&out[name] - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "{name}");
        }
        // A weight only fused nodes read is held packed alone.
        let mut only = model.clone();
        only.graph.nodes.truncate(1);
        only.graph.outputs = vec![vi("y1", &[2, 5, 70])];
        only.graph.initializers.shift_remove("w2");
        let exec = Executor::new(&only, &dev).unwrap();
        assert_eq!(
            exec.consts.contains_key("w"),
            !ferry_kernels::avx512_available()
        );
        let out = exec
            .run(&[("x".to_string(), x)].into_iter().collect())
            .unwrap();
        let diff = (&out["y1"] - &y).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }
}
