//! Identity and Dropout removal: readers of the output read the input instead.

use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::Model;

/// Removes Identity nodes and inference-time Dropout.
pub struct IdentityRemoval;

impl Pass for IdentityRemoval {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn description(&self) -> &'static str {
        "remove Identity and Dropout (inference) nodes"
    }

    fn run(&self, model: &mut Model) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let g = &mut model.graph;
        let mut i = 0;
        while i < g.nodes.len() {
            let n = &g.nodes[i];
            if !(n.op_type == "Identity" || n.op_type == "Dropout") || !n.domain.is_empty() {
                i += 1;
                continue;
            }
            if n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                let name = n.name.clone();
                report.skip(&name, "Dropout's mask output is used");
                i += 1;
                continue;
            }
            let (src, dst) = (n.inputs[0].clone(), n.outputs[0].clone());
            let name = n.name.clone();
            let op = n.op_type.clone();
            // The readers of the value that goes are rewired; subgraphs are left as they are,
            // so a value one of them reads stays.
            let renamed = if g.is_output(&dst) { &src } else { &dst };
            if let Some(reader) = g
                .nodes
                .iter()
                .find(|m| m.captured_inputs().contains(&renamed.as_str()))
            {
                report.skip(
                    &name,
                    format!(
                        "`{renamed}` is read inside a subgraph of {} `{}`",
                        reader.op_type, reader.name
                    ),
                );
                i += 1;
                continue;
            }
            if g.is_output(&dst) {
                let src_is_fixed = g.inputs.iter().any(|v| v.name == src)
                    || g.initializers.contains_key(&src)
                    || g.is_output(&src);
                if src_is_fixed {
                    report.skip(
                        &name,
                        format!("{op} passes `{src}` straight to graph output `{dst}`"),
                    );
                    i += 1;
                    continue;
                }
                // The producer of `src` writes the graph output directly.
                for m in g.nodes.iter_mut() {
                    for o in m.outputs.iter_mut().filter(|o| **o == src) {
                        *o = dst.clone();
                    }
                    for inp in m.inputs.iter_mut().filter(|x| **x == src) {
                        *inp = dst.clone();
                    }
                }
            } else {
                for m in g.nodes.iter_mut() {
                    for inp in m.inputs.iter_mut().filter(|x| **x == dst) {
                        *inp = src.clone();
                    }
                }
            }
            g.nodes.remove(i);
            report.matched.push(format!("removed {op} `{name}`"));
        }
        g.sort()?;
        Ok(report.finish(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, chain_model};

    #[test]
    fn removes_identity_and_dropout_keeping_outputs() {
        let model = chain_model(&["Relu", "Identity", "Dropout", "Neg", "Identity"]);
        let mut opt = model.clone();
        let r = IdentityRemoval.run(&mut opt).unwrap();
        assert_eq!(r.matched.len(), 3, "{r:?}");
        assert_eq!(
            opt.graph.op_histogram().keys().cloned().collect::<Vec<_>>(),
            ["Neg", "Relu"]
        );
        assert_same_outputs(&model, &opt, 0.0);
    }
}
