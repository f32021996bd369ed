//! ONNX graphs behind the runtime's [`crate::Model`], run by ferry-graph's executor: a graph
//! that takes token ids (`input_ids`, with `attention_mask` and `token_type_ids` filled when it
//! asks for them) runs like the model it was exported from, so `ferry verify` compares an ONNX
//! export with its Hugging Face original, or two ONNX files, language by language.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType as CDType, Tensor};
use ferry_device::memory::Role;
use ferry_device::{DeviceSpec, Keep, ModelCost, TensorCost, Unit};
use ferry_graph::{Executor, ValueInfo};

use crate::error::{Error, Result};
use crate::placement::Placement;

/// Whether `path` names an ONNX file.
pub fn is_onnx(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn graph_err(path: &Path, e: ferry_graph::Error) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// What a graph takes and returns, read without preparing it to run.
pub struct GraphInfo {
    /// Its inputs.
    pub inputs: Vec<ValueInfo>,
    /// Its first output (logits or the last hidden state).
    pub output: ValueInfo,
}

impl GraphInfo {
    /// Reads the graph at `path` and checks it takes token ids.
    pub fn read(path: &Path) -> Result<(ferry_graph::OnnxModel, GraphInfo)> {
        let model = ferry_graph::onnx::read_model(path).map_err(|e| graph_err(path, e))?;
        let g = &model.graph;
        if !g.inputs.iter().any(|v| v.name == "input_ids") {
            let names: Vec<&str> = g.inputs.iter().map(|v| v.name.as_str()).collect();
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "the graph takes {} but no `input_ids`: the runtime runs graphs exported from \
                     language models (run others with `ferry run MODEL --input NAME=FILE`)",
                    names.join(", ")
                ),
            });
        }
        if let Some(other) = g.inputs.iter().find(|v| {
            !matches!(
                v.name.as_str(),
                "input_ids" | "attention_mask" | "token_type_ids"
            )
        }) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "input `{}` cannot be filled from token ids (the runtime fills input_ids, \
                     attention_mask, token_type_ids)",
                    other.name
                ),
            });
        }
        let output = g.outputs.first().cloned().ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            msg: "the graph has no outputs".into(),
        })?;
        let info = GraphInfo {
            inputs: g.inputs.clone(),
            output,
        };
        Ok((model, info))
    }
}

/// A loaded graph.
pub struct GraphNet {
    exec: Executor,
    info: GraphInfo,
    path: std::path::PathBuf,
}

impl GraphNet {
    /// Reads the graph at `path` and prepares it to run where `place` puts its units (see
    /// [`units`]): each node runs on its unit's device (the executor moves a value where its
    /// producer and consumer differ). Graphs run in their own dtypes.
    pub fn load(path: &Path, place: &Placement) -> Result<GraphNet> {
        let (mut model, info) = GraphInfo::read(path)?;
        assign_devices(&mut model, place);
        let exec = Executor::new(&model, place.input_device()).map_err(|e| graph_err(path, e))?;
        Ok(GraphNet {
            exec,
            info,
            path: path.to_path_buf(),
        })
    }

    /// What the graph takes and returns.
    pub fn info(&self) -> &GraphInfo {
        &self.info
    }

    /// The first output for `ids` (`[batch, seq]`, u32) with an optional `mask` (1 for real
    /// tokens), fed as int64 (what exporters declare; the executor casts for other types).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let ones;
        let mask = match mask {
            Some(m) => m,
            None => {
                ones = ids.ones_like()?;
                &ones
            }
        };
        let mut feeds = HashMap::new();
        for v in &self.info.inputs {
            let t = match v.name.as_str() {
                "input_ids" => ids.clone(),
                "attention_mask" => mask.clone(),
                _ => ids.zeros_like()?,
            };
            feeds.insert(v.name.clone(), t.to_dtype(CDType::I64)?);
        }
        let mut out = self
            .exec
            .run(&feeds)
            .map_err(|e| graph_err(&self.path, e))?;
        let name = &self.info.output.name;
        let t = out.shift_remove(name).ok_or_else(|| Error::Config {
            path: self.path.clone(),
            msg: format!("output `{name}` was not produced"),
        })?;
        Ok(t.to_dtype(CDType::F32)?)
    }
}

/// Sets each node's device to its unit's (see [`units`]) where it differs from the input
/// device, the executor's default.
pub fn assign_devices(model: &mut ferry_graph::OnnxModel, place: &Placement) {
    let (names, of_node) = units(&model.graph);
    let default = place.input_device().clone();
    for (node, &u) in model.graph.nodes.iter_mut().zip(&of_node) {
        let dev = place.of(&names[u]).0;
        node.device = (!dev.same_device(&default)).then(|| DeviceSpec::of(dev).to_string());
    }
}

/// The block index a node's name carries (`/encoder/layer.3/attention/...`,
/// `/model/layers.11/mlp/...`, `/h.0/attn/...`, `blocks_2_...`), as exporters name nodes after
/// the module they come from.
fn block_of(name: &str) -> Option<usize> {
    let bytes = name.as_bytes();
    for key in ["layers", "layer", "blocks", "block", "h"] {
        let mut from = 0;
        while let Some(at) = name[from..].find(key).map(|i| i + from) {
            from = at + key.len();
            let before_ok = at == 0 || matches!(bytes[at - 1], b'/' | b'.' | b'_');
            let sep_ok = matches!(bytes.get(from), Some(b'.' | b'_' | b'/'));
            if !(before_ok && sep_ok) {
                continue;
            }
            let digits: String = name[from + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let end = from + 1 + digits.len();
            let after_ok = end == name.len() || matches!(bytes[end], b'/' | b'.' | b'_');
            if !digits.is_empty() && after_ok {
                return digits.parse().ok();
            }
        }
    }
    None
}

/// The graph's placement units and each node's unit: nodes grouped by the block their name
/// carries (`layers.N`), the nodes before the first block in `embed`, those after the last in
/// `head`; a node naming no block stays with the node before it. A graph whose nodes name no
/// block is one unit, `graph`.
pub fn units(g: &ferry_graph::Graph) -> (Vec<String>, Vec<usize>) {
    let blocks: Vec<Option<usize>> = g.nodes.iter().map(|n| block_of(&n.name)).collect();
    let Some(last) = blocks.iter().rposition(Option::is_some) else {
        return (vec!["graph".into()], vec![0; g.nodes.len()]);
    };
    let mut names: Vec<String> = Vec::new();
    let mut index = |name: String| match names.iter().position(|n| *n == name) {
        Some(i) => i,
        None => {
            names.push(name);
            names.len() - 1
        }
    };
    let mut current = index("embed".into());
    let of_node = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if let Some(b) = b {
                current = index(format!("layers.{b}"));
            } else if i > last {
                current = index("head".into());
            }
            current
        })
        .collect();
    (names, of_node)
}

/// The graph at `path` as placement units: each initializer in the unit of its first reader,
/// at its stored size (graphs run in their own dtypes).
pub fn cost(path: &Path) -> Result<ModelCost> {
    let (model, _) = GraphInfo::read(path)?;
    let g = &model.graph;
    let (names, of_node) = units(g);
    let mut tensors: Vec<Vec<TensorCost>> = vec![Vec::new(); names.len()];
    let mut seen = std::collections::HashSet::new();
    for (node, &u) in g.nodes.iter().zip(&of_node) {
        // Outer values an If/Loop/Scan body reads count for the node that holds the body.
        let reads = node.inputs.iter().map(String::as_str);
        for inp in reads.chain(node.captured_inputs()) {
            let Some(e) = g.initializers.get(inp) else {
                continue;
            };
            if seen.insert(inp) {
                let bytes = e.nbytes();
                tensors[u].push(TensorCost {
                    name: inp.to_string(),
                    numel: e.numel(),
                    keep: Keep::Fixed {
                        cpu_bytes: bytes,
                        accelerator_bytes: bytes,
                    },
                });
            }
        }
    }
    let splittable = names.len() > 1;
    // The float type holding most of the weights is what the graph computes in.
    let mut by_type: Vec<(ferry_io::DType, u64)> = Vec::new();
    for e in g.initializers.values().filter(|e| e.dtype.is_float()) {
        match by_type.iter_mut().find(|(d, _)| *d == e.dtype) {
            Some((_, n)) => *n += e.numel(),
            None => by_type.push((e.dtype, e.numel())),
        }
    }
    let dtype = by_type
        .iter()
        .max_by_key(|(_, n)| *n)
        .and_then(|(d, _)| d.to_candle())
        .unwrap_or(CDType::F32);
    Ok(ModelCost {
        arch: "onnx graph".into(),
        units: names
            .into_iter()
            .zip(tensors)
            .map(|(name, tensors)| Unit {
                role: match name.as_str() {
                    "embed" => Role::Embed,
                    "head" => Role::Head,
                    "graph" => Role::Whole,
                    _ => Role::Block,
                },
                name,
                tensors,
            })
            .collect(),
        shape: None,
        splittable,
        dtype: Some(dtype),
    })
}

#[cfg(test)]
mod tests {
    use super::block_of;

    #[test]
    fn block_indices_come_from_exporters_node_names() {
        assert_eq!(block_of("/encoder/layer.3/attention/self/MatMul"), Some(3));
        assert_eq!(block_of("/model/layers.11/mlp/down_proj/MatMul"), Some(11));
        assert_eq!(block_of("/transformer/h.0/attn/Add"), Some(0));
        assert_eq!(block_of("node_layers_2_self_attn_MatMul"), Some(2));
        assert_eq!(block_of("/embeddings/Gather"), None);
        assert_eq!(block_of("/pooler/dense/Gemm"), None);
        assert_eq!(block_of("/encoder/layer_norm/Mul"), None);
        assert_eq!(block_of("/math/Add_12"), None);
    }
}
