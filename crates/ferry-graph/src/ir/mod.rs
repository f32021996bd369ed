//! The graph IR: a model holds a graph of nodes over named values; weights are initializers
//! held as ferry-io [`TensorEntry`]s, so they stay memory-mapped while a graph is read,
//! rewritten and written (an [`crate::Executor`] loads them into candle to run it).

mod attr;
mod consts;
mod narrow;
mod validate;

use std::collections::{HashMap, HashSet};
use std::fmt;

use ferry_io::{DType, TensorEntry};
use indexmap::IndexMap;

pub use attr::Attr;
pub use consts::{entry_from_candle, entry_to_candle};
pub use narrow::{round_e4m3fn, Narrow};

/// One dimension of a value's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A known size.
    Fixed(usize),
    /// A named symbolic size (`batch`, `sequence`), the same wherever the name appears.
    Symbolic(String),
    /// Not known.
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A named value's type: element type and shape, where known.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    /// The value's name.
    pub name: String,
    /// Element type.
    pub dtype: Option<DType>,
    /// Shape (None: rank unknown).
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    /// A value of unknown type.
    pub fn untyped(name: impl Into<String>) -> Self {
        ValueInfo {
            name: name.into(),
            dtype: None,
            shape: None,
        }
    }

    /// The shape as text: `[batch, 128, 384]`.
    pub fn shape_text(&self) -> String {
        match &self.shape {
            Some(s) => format!(
                "[{}]",
                s.iter().map(Dim::to_string).collect::<Vec<_>>().join(", ")
            ),
            None => "[?]".into(),
        }
    }
}

/// One operation of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique name (generated at import when the file has none).
    pub name: String,
    /// Op type (`MatMul`).
    pub op_type: String,
    /// Op domain: `""` for standard ONNX, `com.ferry` for ferry's fused ops.
    pub domain: String,
    /// Input value names; `""` marks an omitted optional input.
    pub inputs: Vec<String>,
    /// Output value names; `""` marks an unused optional output.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: IndexMap<String, Attr>,
    /// The device this node runs on (`cpu`, `cuda:0`, `metal:0`); `None`: the executor's.
    pub device: Option<String>,
}

impl Node {
    /// An error about this node ([`crate::Error::Node`]: its name, op type and `msg`).
    pub fn error(&self, msg: impl Into<String>) -> crate::Error {
        crate::Error::Node {
            node: self.name.clone(),
            op: self.op_type.clone(),
            msg: msg.into(),
        }
    }

    /// A standard-domain node without attributes.
    pub fn new(
        name: impl Into<String>,
        op_type: impl Into<String>,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Self {
        Node {
            name: name.into(),
            op_type: op_type.into(),
            domain: String::new(),
            inputs,
            outputs,
            attrs: IndexMap::new(),
            device: None,
        }
    }

    /// Adds an attribute (builder style).
    pub fn with_attr(mut self, name: &str, value: Attr) -> Self {
        self.attrs.insert(name.into(), value);
        self
    }

    /// The `i`th input's name when it is present.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Op type with its domain when not standard (`com.ferry.Attention`).
    pub fn qualified_op(&self) -> String {
        if self.domain.is_empty() || self.domain == "ai.onnx" {
            self.op_type.clone()
        } else {
            format!("{}.{}", self.domain, self.op_type)
        }
    }

    /// An integer attribute, or `default`.
    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }

    /// A float attribute, or `default`.
    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        match self.attrs.get(name) {
            Some(Attr::Float(v)) => *v,
            _ => default,
        }
    }

    /// An integer-list attribute.
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// A string attribute.
    pub fn attr_str(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::String(v)) => Some(v),
            _ => None,
        }
    }

    /// A subgraph attribute (`then_branch`, `body`).
    pub fn attr_graph(&self, name: &str) -> Option<&Graph> {
        match self.attrs.get(name) {
            Some(Attr::Graph(g)) => Some(g),
            _ => None,
        }
    }

    /// The node's subgraphs with their attribute names, in attribute order.
    pub fn subgraphs(&self) -> impl Iterator<Item = (&str, &Graph)> {
        self.attrs.iter().filter_map(|(k, v)| match v {
            Attr::Graph(g) => Some((k.as_str(), &**g)),
            _ => None,
        })
    }

    /// Whether the node carries a subgraph (If, Loop, Scan).
    pub fn has_subgraphs(&self) -> bool {
        self.subgraphs().next().is_some()
    }

    /// The values of enclosing scopes the node's subgraphs read, recursively, in order of
    /// first use: names their nodes read or their outputs list that nothing inside them
    /// defines. They are inputs of the node as much as [`Node::inputs`] are (empty for a node
    /// without subgraphs).
    pub fn captured_inputs(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.subgraphs()
            .flat_map(|(_, g)| g.outer_reads())
            .filter(|name| seen.insert(*name))
            .collect()
    }

    /// Every value the node reads: its present inputs, then its [captured
    /// inputs](Node::captured_inputs).
    pub fn reads(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .inputs
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        v.extend(self.captured_inputs());
        v
    }
}

/// A computation graph: inputs, outputs, nodes in topological order, initializers. A
/// subgraph (an [`Attr::Graph`]) may read values of its enclosing graphs by name.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    /// Inputs fed at run time (initializers are not listed here).
    pub inputs: Vec<ValueInfo>,
    /// Outputs.
    pub outputs: Vec<ValueInfo>,
    /// Nodes, in topological order once [`Graph::sort`] has run (import sorts).
    pub nodes: Vec<Node>,
    /// Constant tensors by value name.
    pub initializers: IndexMap<String, TensorEntry>,
    /// Known types of intermediate values.
    pub value_info: IndexMap<String, ValueInfo>,
    /// Values (inputs, outputs, initializers, intermediates) whose declared ONNX element
    /// type ferry holds wider ([`Narrow`]): their [`ValueInfo::dtype`] and initializer
    /// entries are the held dtype, and this keeps what the file says, for the ops whose result
    /// depends on it and for writing the file back.
    pub narrow: IndexMap<String, Narrow>,
}

impl PartialEq for Graph {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.inputs == other.inputs
            && self.outputs == other.outputs
            && self.nodes == other.nodes
            && self.value_info == other.value_info
            && self.narrow == other.narrow
            && self.initializers.len() == other.initializers.len()
            && self
                .initializers
                .iter()
                .zip(&other.initializers)
                .all(|((ka, a), (kb, b))| ka == kb && attr::same_tensor(a, b))
    }
}

/// A model: a graph plus the opsets and producer it declares.
#[derive(Debug, Clone, Default)]
pub struct OnnxModel {
    /// The main graph.
    pub graph: Graph,
    /// Opset versions by domain (`""` is standard ONNX).
    pub opsets: IndexMap<String, i64>,
    /// ONNX IR version of the file it came from (written back unless too old).
    pub ir_version: i64,
    /// Producer name and version.
    pub producer: (String, String),
    /// Free-form metadata properties.
    pub metadata: IndexMap<String, String>,
}

impl OnnxModel {
    /// Parameters: the elements of the floating-point initializers.
    pub fn parameters(&self) -> u64 {
        self.graph
            .initializers
            .values()
            .filter(|e| e.dtype.is_float())
            .map(|e| e.numel())
            .sum()
    }

    /// The standard ONNX opset the model declares (0 when none).
    pub fn opset(&self) -> i64 {
        self.opsets
            .get("")
            .or_else(|| self.opsets.get("ai.onnx"))
            .copied()
            .unwrap_or(0)
    }
}

impl Graph {
    /// Which node produces each value: name -> node index.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                m.insert(o.as_str(), i);
            }
        }
        m
    }

    /// Which nodes read each value: name -> node indices (graph outputs are not counted). A
    /// node reads its inputs and the values its subgraphs capture
    /// ([`Node::captured_inputs`]); a reader is listed once per read (twice for `Mul(x, x)`).
    pub fn consumers(&self) -> HashMap<&str, Vec<usize>> {
        let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in n.reads() {
                m.entry(inp).or_default().push(i);
            }
        }
        m
    }

    /// The names this graph reads from enclosing scopes, in order of first use: read by its
    /// nodes (or, recursively, their subgraphs) or listed as its outputs, and defined by none
    /// of its inputs, initializers and nodes. Empty for a self-contained graph.
    pub fn outer_reads(&self) -> Vec<&str> {
        let defined: HashSet<&str> = self
            .inputs
            .iter()
            .map(|v| v.name.as_str())
            .chain(self.initializers.keys().map(String::as_str))
            .chain(
                self.nodes
                    .iter()
                    .flat_map(|n| n.outputs.iter().map(String::as_str)),
            )
            .collect();
        let mut seen = HashSet::new();
        self.nodes
            .iter()
            .flat_map(Node::reads)
            .chain(self.outputs.iter().map(|o| o.name.as_str()))
            .filter(|name| !name.is_empty() && !defined.contains(name) && seen.insert(*name))
            .collect()
    }

    /// Every node of the graph and, recursively, of its nodes' subgraphs (each node before
    /// the nodes of its subgraphs).
    pub fn all_nodes(&self) -> Vec<&Node> {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(n);
            for (_, g) in n.subgraphs() {
                out.extend(g.all_nodes());
            }
        }
        out
    }

    /// Whether `name` is a graph output.
    pub fn is_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|o| o.name == name)
    }

    /// Op type -> count, sorted by op name.
    pub fn op_histogram(&self) -> std::collections::BTreeMap<String, usize> {
        let mut h = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *h.entry(n.qualified_op()).or_insert(0) += 1;
        }
        h
    }

    /// A node name not used yet, starting from `base` (nor inside any subgraph: ONNX names
    /// are unique across nested scopes).
    pub fn fresh_name(&self, base: &str) -> String {
        let mut taken: HashSet<&str> = HashSet::new();
        self.names_into(&mut taken);
        if !taken.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|c| !taken.contains(c.as_str()))
            .expect("an unused name exists")
    }

    /// Adds the names of the graph's nodes, their outputs, its initializers and inputs, and
    /// the same of its subgraphs, to `taken`.
    fn names_into<'a>(&'a self, taken: &mut HashSet<&'a str>) {
        for n in &self.nodes {
            taken.insert(&n.name);
            taken.extend(n.outputs.iter().map(String::as_str));
            for (_, g) in n.subgraphs() {
                g.names_into(taken);
            }
        }
        taken.extend(self.initializers.keys().map(String::as_str));
        taken.extend(self.inputs.iter().map(|v| v.name.as_str()));
    }
}
