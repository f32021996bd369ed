//! Runs a graph on candle.
//!
//! [`Executor::new`] checks every op against the registry first and lists all unsupported
//! ones at once; it loads the initializers onto their devices. [`Executor::run`] then walks
//! the nodes in order. A node with its own [`Node::device`](crate::ir::Node) runs there; its
//! inputs are moved when they live elsewhere (counted in [`RunStats::transfers`]). Values are
//! dropped after their last use.

mod device;
mod ops;
mod util;

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use indexmap::IndexMap;

pub use device::parse_device;
pub use ops::is_supported;
pub use ops::reshape_dims;
use ops::OpCx;

use crate::error::{Error, Result};
use crate::ir::{entry_to_candle, Graph, Model, Node};

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
    /// For each node, the values whose last reader it is.
    frees: Vec<Vec<String>>,
}

impl Executor {
    /// Prepares `model` to run on `device` (nodes with their own device run there).
    pub fn new(model: &Model, device: &Device) -> Result<Self> {
        let graph = model.graph.clone();
        let opset = model.opset();
        let unsupported: Vec<String> = graph
            .nodes
            .iter()
            .filter(|n| !is_supported(n))
            .map(|n| {
                format!(
                    "  op `{}` at node `{}` (opset {opset})",
                    n.qualified_op(),
                    n.name
                )
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(Error::Unsupported(unsupported));
        }
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
                    let d = parse_device(spec).map_err(|e| Error::node(n, e.to_string()))?;
                    devices.insert(spec.clone(), d.clone());
                    Ok(d)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // Initializers go where their first reader runs.
        let mut consts = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            for inp in &n.inputs {
                if consts.contains_key(inp) {
                    continue;
                }
                if let Some(e) = graph.initializers.get(inp) {
                    consts.insert(inp.clone(), entry_to_candle(e, &node_devices[i])?);
                }
            }
        }
        for o in &graph.outputs {
            if let Some(e) = graph.initializers.get(&o.name) {
                consts.insert(o.name.clone(), entry_to_candle(e, device)?);
            }
        }
        let frees = last_uses(&graph);
        Ok(Executor {
            graph,
            opset,
            device: device.clone(),
            node_devices,
            consts,
            frees,
        })
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
                let t = values
                    .get(name)
                    .or_else(|| self.consts.get(name))
                    .ok_or_else(|| Error::node(node, format!("input `{name}` is not available")))?;
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
            };
            let start = profile.then(std::time::Instant::now);
            let outs = ops::run(node, &cx, args).map_err(|e| Error::node(node, e.to_string()))?;
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
                return Err(Error::node(
                    node,
                    format!("output {i} (`{name}`) is not supported by ferry's implementation"),
                ));
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

/// For each node, the non-initializer values it is the last reader of.
fn last_uses(g: &Graph) -> Vec<Vec<String>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
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

/// Runs one node on its own: inputs as given, outputs returned (used by constant folding).
pub fn run_node(node: &Node, opset: i64, inputs: Vec<Option<Tensor>>) -> Result<Vec<Tensor>> {
    let cx = OpCx {
        opset,
        device: &Device::Cpu,
    };
    ops::run(node, &cx, inputs).map_err(|e| Error::node(node, e.to_string()))
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
