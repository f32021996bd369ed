//! Matching helpers: who produces and who reads a value, constants, and rewriting a set of
//! matched nodes into new ones.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use ferry_io::TensorEntry;

use crate::error::Result;
use crate::ir::{entry_from_candle, Attr, Graph, Node};

/// Producers and consumers of every value of a graph (a snapshot: rebuild after rewriting).
pub(crate) struct Index {
    pub producer: HashMap<String, usize>,
    pub consumers: HashMap<String, Vec<usize>>,
    outputs: HashSet<String>,
}

impl Index {
    pub fn new(g: &Graph) -> Self {
        Index {
            producer: g
                .producers()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            consumers: g
                .consumers()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            outputs: g.outputs.iter().map(|o| o.name.clone()).collect(),
        }
    }

    /// The node producing `value` when its op is `op`.
    pub fn producer_op<'g>(
        &self,
        g: &'g Graph,
        value: &str,
        op: &str,
    ) -> Option<(usize, &'g Node)> {
        let &i = self.producer.get(value)?;
        let n = &g.nodes[i];
        (n.op_type == op && n.domain.is_empty()).then_some((i, n))
    }

    /// The only reader of `value`, when it has exactly one and is not a graph output.
    pub fn sole_consumer<'g>(&self, g: &'g Graph, value: &str) -> Option<(usize, &'g Node)> {
        if self.outputs.contains(value) {
            return None;
        }
        match self.consumers.get(value).map(Vec::as_slice) {
            Some([i]) => Some((*i, &g.nodes[*i])),
            _ => None,
        }
    }

    /// Checks that a matched set of `nodes` is self-contained: every value they produce,
    /// except the pattern's output `out`, is read only inside the set and is not a graph
    /// output. Returns the first value that escapes.
    pub fn escaping<'g>(&self, g: &'g Graph, nodes: &[usize], out: &str) -> Option<&'g str> {
        nodes
            .iter()
            .flat_map(|&n| g.nodes[n].outputs.iter())
            .filter(|v| !v.is_empty() && v.as_str() != out)
            .find(|v| {
                self.outputs.contains(v.as_str())
                    || self.consumers_of(v).iter().any(|c| !nodes.contains(c))
            })
            .map(String::as_str)
    }

    /// Readers of `value`.
    pub fn consumers_of(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map_or(&[], Vec::as_slice)
    }
}

/// The constant behind `value` (an initializer or a Constant node's tensor), on the CPU.
pub(crate) fn constant(g: &Graph, idx: &Index, value: &str) -> Option<Tensor> {
    if let Some(e) = g.initializers.get(value) {
        return e.to_candle(&Device::Cpu).ok();
    }
    let (_, n) = idx.producer_op(g, value, "Constant")?;
    match n.attrs.first()?.1 {
        Attr::Tensor(e) => e.to_candle(&Device::Cpu).ok(),
        Attr::Float(f) => Tensor::new(*f, &Device::Cpu).ok(),
        Attr::Int(i) => Tensor::new(*i, &Device::Cpu).ok(),
        Attr::Floats(v) => Tensor::new(v.as_slice(), &Device::Cpu).ok(),
        Attr::Ints(v) => Tensor::new(v.as_slice(), &Device::Cpu).ok(),
        _ => None,
    }
}

/// The single value of a one-element constant.
pub(crate) fn scalar(g: &Graph, idx: &Index, value: &str) -> Option<f64> {
    let t = constant(g, idx, value)?;
    (t.elem_count() == 1)
        .then(|| crate::exec::scalar_f64(&t).ok())
        .flatten()
}

/// The integers of a constant.
pub(crate) fn const_ints(g: &Graph, idx: &Index, value: &str) -> Option<Vec<i64>> {
    let t = constant(g, idx, value)?;
    t.to_dtype(candle_core::DType::I64)
        .ok()?
        .flatten_all()
        .ok()?
        .to_vec1::<i64>()
        .ok()
}

/// Whether `a` is within a relative `1e-3` of `b`.
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * b.abs().max(1e-12)
}

/// The Add that alone reads `value` (a MatMul's result), its index, and the other operand
/// (the bias candidate): the head of every "projection + bias" pattern.
pub(crate) fn bias_add<'g>(
    g: &'g Graph,
    idx: &Index,
    value: &str,
) -> Option<(usize, &'g Node, &'g str)> {
    let (ai, add) = idx
        .sole_consumer(g, value)
        .filter(|(_, n)| n.op_type == "Add" && n.domain.is_empty())?;
    Some((ai, add, other_input(add, value)?))
}

/// Of a binary node's two inputs, the one that is not `this` (None if neither is).
pub(crate) fn other_input<'n>(n: &'n Node, this: &str) -> Option<&'n str> {
    match (n.input(0), n.input(1)) {
        (Some(a), Some(b)) if a == this => Some(b),
        (Some(a), Some(b)) if b == this => Some(a),
        _ => None,
    }
}

/// Collects node removals, new nodes and new initializers; [`Rewrite::apply`] commits them
/// and restores topological order.
#[derive(Default)]
pub(crate) struct Rewrite {
    remove: HashSet<usize>,
    add: Vec<(usize, Node)>,
    inits: Vec<TensorEntry>,
}

impl Rewrite {
    pub fn remove(&mut self, nodes: impl IntoIterator<Item = usize>) {
        self.remove.extend(nodes);
    }

    /// Whether any of `nodes` is already claimed by an earlier match.
    pub fn claimed(&self, nodes: &[usize]) -> bool {
        nodes.iter().any(|n| self.remove.contains(n))
    }

    /// Adds `node` where node `at` was.
    pub fn add(&mut self, at: usize, node: Node) {
        self.add.push((at, node));
    }

    /// Adds an initializer holding `t`; returns its name (unique in `g`).
    pub fn constant(&mut self, g: &Graph, base: &str, t: &Tensor) -> Result<String> {
        let mut name = g.fresh_name(base);
        while self.inits.iter().any(|e| e.name == name) {
            name = format!("{name}_");
        }
        self.inits.push(entry_from_candle(&name, t)?);
        Ok(name)
    }

    pub fn apply(self, g: &mut Graph) -> Result<()> {
        let mut added: HashMap<usize, Vec<Node>> = HashMap::new();
        for (at, n) in self.add {
            added.entry(at).or_default().push(n);
        }
        let old = std::mem::take(&mut g.nodes);
        for (i, n) in old.into_iter().enumerate() {
            if let Some(new) = added.remove(&i) {
                g.nodes.extend(new);
            }
            if !self.remove.contains(&i) {
                g.nodes.push(n);
            }
        }
        for e in self.inits {
            g.initializers.insert(e.name.clone(), e);
        }
        g.sort()?;
        g.validate()
    }
}
