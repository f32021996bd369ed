//! Constant folding: a node whose inputs are all constants is run once, and its outputs
//! become initializers (Constant nodes included).

use std::collections::BTreeMap;

use super::{types, Pass, PassReport};
use crate::error::Result;
use crate::exec::{is_supported, run_node};
use crate::ir::{entry_from_candle, Model};

/// Outputs larger than this stay computed (folding would bloat the file).
const MAX_FOLDED_ELEMS: usize = 1 << 24;

/// Folds constant subgraphs into initializers.
pub struct ConstFold;

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const-fold"
    }

    fn description(&self) -> &'static str {
        "run nodes whose inputs are all constants once and store their outputs"
    }

    fn run(&self, model: &mut Model) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let opset = model.opset();
        let onnx_types = types::infer(&model.graph);
        let g = &mut model.graph;
        let mut folded: BTreeMap<String, usize> = BTreeMap::new();
        let mut keep = Vec::with_capacity(g.nodes.len());
        for node in std::mem::take(&mut g.nodes) {
            let foldable = node.domain.is_empty()
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
            let args = node
                .inputs
                .iter()
                .map(|i| {
                    (!i.is_empty())
                        .then(|| g.initializers[i].to_candle(&candle_core::Device::Cpu))
                        .transpose()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let outs = match run_node(&node, opset, args) {
                Ok(o) => o,
                Err(e) => {
                    report.skip(
                        &node.name,
                        format!("running it on its constants failed: {e}"),
                    );
                    keep.push(node);
                    continue;
                }
            };
            if let Some(big) = outs.iter().find(|t| t.elem_count() > MAX_FOLDED_ELEMS) {
                report.skip(
                    &node.name,
                    format!("its output {:?} is too large to store", big.dims()),
                );
                keep.push(node);
                continue;
            }
            for (name, t) in node.outputs.iter().zip(&outs) {
                if name.is_empty() {
                    continue;
                }
                let mut e = entry_from_candle(name, t)?;
                if onnx_types.get(name) == Some(&ferry_io::DType::Bool)
                    && e.dtype == ferry_io::DType::U8
                {
                    e.dtype = ferry_io::DType::Bool;
                }
                g.initializers.insert(name.clone(), e);
            }
            *folded.entry(node.op_type.clone()).or_insert(0) += 1;
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
