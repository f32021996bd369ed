//! Identity, Dropout and no-op Cast removal: readers of the output read the input instead.
//! A Cast is a no-op when its input already has the type it casts to (exporters write them
//! after a Softmax computed in f32 anyway); the input's type must follow from the graph
//! (`exec::elem_types`), else the Cast stays.

use super::{Pass, PassReport};
use crate::error::Result;
use crate::exec::elem_types;
use crate::ir::{Node, OnnxModel};

/// Removes Identity nodes, inference-time Dropout and Casts to the type their input has.
pub struct IdentityRemoval;

/// Whether `n` passes its input through unchanged, given the graph's element types.
fn passes_through(n: &Node, types: &std::collections::HashMap<String, i32>) -> bool {
    if !n.domain.is_empty() {
        return false;
    }
    match n.op_type.as_str() {
        "Identity" | "Dropout" => true,
        "Cast" => n
            .input(0)
            .and_then(|i| types.get(i))
            .is_some_and(|&t| i64::from(t) == n.attr_int("to", 0)),
        _ => false,
    }
}

impl Pass for IdentityRemoval {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn description(&self) -> &'static str {
        "remove Identity, Dropout (inference) and Casts to the type their input has"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let types = elem_types(&model.graph);
        let g = &mut model.graph;
        let mut i = 0;
        while i < g.nodes.len() {
            let n = &g.nodes[i];
            if !passes_through(n, &types) {
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

    /// A Cast to f32 of an f32 value goes; a Cast to f16 stays (the model's output type
    /// changes with it).
    #[test]
    fn removes_casts_to_the_type_their_input_has() {
        let mut model = chain_model(&["Relu", "Cast", "Neg", "Cast"]);
        model.graph.nodes[1]
            .attrs
            .insert("to".into(), crate::ir::Attr::Int(1));
        model.graph.nodes[3]
            .attrs
            .insert("to".into(), crate::ir::Attr::Int(10));
        let mut opt = model.clone();
        let r = IdentityRemoval.run(&mut opt).unwrap();
        assert_eq!(r.matched, ["removed Cast `n1`"], "{r:?}");
        assert_eq!(opt.graph.nodes.len(), 3);
        assert_same_outputs(&model, &opt, 0.0);
    }
}
