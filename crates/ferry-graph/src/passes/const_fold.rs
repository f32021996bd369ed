//! Constant folding: a node whose inputs are all constants is run once, and its outputs
//! become initializers (Constant nodes included).

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use ferry_io::{DType, TensorEntry};

use super::{types, Pass, PassReport};
use crate::error::{Error, Result};
use crate::exec::{elem_types, input_types, is_supported, run_node, MemoryBudget};
use crate::ir::{entry_from_candle, Graph, Narrow, Node, OnnxModel};

/// Outputs larger than this stay computed (folding would bloat the file): 64 MiB, 2^24 f32
/// values. Nodes are run under this budget, so a larger output is never made.
const MAX_FOLDED_BYTES: u64 = 64 << 20;

/// Folds constant subgraphs into initializers.
pub struct ConstFold;

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const-fold"
    }

    fn description(&self) -> &'static str {
        "run nodes whose inputs are all constants once and store their outputs"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let opset = model.opset();
        let onnx_types = types::infer(&model.graph);
        let codes = elem_types(&model.graph);
        let g = &mut model.graph;
        let mut folded: BTreeMap<String, usize> = BTreeMap::new();
        let mut keep = Vec::with_capacity(g.nodes.len());
        for node in std::mem::take(&mut g.nodes) {
            // A node with subgraphs (If, Loop, Scan) runs them in the executor, not alone.
            let foldable = node.domain.is_empty()
                && !node.has_subgraphs()
                && is_supported(&node)
                && !node.op_type.starts_with("Random")
                && node
                    .inputs
                    .iter()
                    .all(|i| i.is_empty() || g.initializers.contains_key(i));
            if !foldable {
                keep.push(node);
                continue;
            }
            match fold(&node, g, opset, &onnx_types, &codes) {
                Ok(entries) => {
                    for e in entries {
                        g.initializers.insert(e.name.clone(), e);
                    }
                    *folded.entry(node.op_type.clone()).or_insert(0) += 1;
                }
                Err(why) => {
                    report.skip(&node.name, why);
                    keep.push(node);
                }
            }
        }
        g.nodes = keep;
        if !folded.is_empty() {
            let parts: Vec<String> = folded.iter().map(|(op, n)| format!("{op} x{n}")).collect();
            report.matched.push(format!(
                "folded {} nodes: {}",
                folded.values().sum::<usize>(),
                parts.join(", ")
            ));
        }
        super::dce::remove_unused_initializers(g);
        Ok(report.finish(model))
    }
}

/// Runs `node` on its constant inputs; its outputs as initializers of their ONNX types, or why
/// it stays a node.
fn fold(
    node: &Node,
    g: &Graph,
    opset: i64,
    onnx_types: &HashMap<String, DType>,
    codes: &HashMap<String, i32>,
) -> std::result::Result<Vec<TensorEntry>, String> {
    if let Some(n) = node
        .outputs
        .iter()
        .find_map(|o| codes.get(o).and_then(|&c| Narrow::from_onnx(c)))
    {
        return Err(format!(
            "it computes {} values, which ferry holds wider",
            n.name()
        ));
    }
    let args = node
        .inputs
        .iter()
        .map(|i| {
            (!i.is_empty())
                .then(|| g.initializers[i].to_candle(&Device::Cpu))
                .transpose()
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("reading its constant inputs failed: {e}"))?;
    let budget = MemoryBudget::from_env();
    let folding = budget.min(MemoryBudget::new(MAX_FOLDED_BYTES));
    let outs =
        run_node(node, opset, folding, &input_types(node, codes), args).map_err(|e| match e {
            Error::NodeOverBudget { exceeded: x, .. } if x.budget < budget.bytes() => format!(
                "{} {:?} {} would take {}, too large to store (const-fold stores up to {})",
                x.what,
                x.shape,
                x.dtype.as_str(),
                x.size(),
                ferry_io::units::human(MAX_FOLDED_BYTES)
            ),
            e => format!("running it on its constants failed: {e}"),
        })?;
    let bytes = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
    if let Some(big) = outs.iter().find(|t| bytes(t) > MAX_FOLDED_BYTES) {
        return Err(format!("its output {:?} is too large to store", big.dims()));
    }
    let mut entries = Vec::new();
    for (name, t) in node
        .outputs
        .iter()
        .zip(&outs)
        .filter(|(n, _)| !n.is_empty())
    {
        let mut e = entry_from_candle(name, t).map_err(|e| e.to_string())?;
        match onnx_types.get(name) {
            Some(&DType::Bool) if e.dtype == DType::U8 => e.dtype = DType::Bool,
            // The executor widens some types (i8 to i16, u16 to i32...): storing the wider
            // values would change the graph's types.
            Some(&want) if want != e.dtype => {
                return Err(format!(
                    "it computes {want} values, which ferry holds as {}",
                    e.dtype
                ));
            }
            _ => {}
        }
        entries.push(e);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};

    #[test]
    fn folds_constants_of_the_exported_encoder() {
        let model = load_fixture("encoder.onnx");
        let before = model.graph.op_histogram();
        let mut opt = model.clone();
        let r = ConstFold.run(&mut opt).unwrap();
        let after = opt.graph.op_histogram();
        assert!(
            before["Constant"] > 50 && !after.contains_key("Constant"),
            "{r:?}"
        );
        assert!(opt.graph.nodes.len() < model.graph.nodes.len());
        assert_same_outputs(&model, &opt, 1e-6);
    }
}
