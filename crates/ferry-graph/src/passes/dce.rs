//! Dead-node elimination: nodes none of whose outputs reach a graph output, and initializers
//! no node reads. A node reads the values its subgraphs capture too; subgraphs themselves are
//! left as they are.

use std::collections::HashSet;

use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Graph, OnnxModel};

/// Removes nodes and initializers that do not contribute to any output.
pub struct DeadNodeElimination;

impl Pass for DeadNodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn description(&self) -> &'static str {
        "remove nodes and initializers no output depends on"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let g = &mut model.graph;
        let mut live: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        let mut keep = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                live.extend(n.reads().into_iter().map(String::from));
            }
        }
        let removed = keep.iter().filter(|k| !**k).count();
        let mut it = keep.iter();
        g.nodes.retain(|_| *it.next().expect("one flag per node"));
        let inits = remove_unused_initializers(g);
        if removed + inits > 0 {
            report.matched.push(format!(
                "removed {removed} dead nodes and {inits} unused initializers"
            ));
        }
        Ok(report.finish(model))
    }
}

/// Drops initializers that no node reads (inputs and values its subgraphs capture) and no
/// output names; returns how many.
pub(crate) fn remove_unused_initializers(g: &mut Graph) -> usize {
    let used: HashSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.reads())
        .chain(g.outputs.iter().map(|o| o.name.as_str()))
        .collect();
    let before = g.initializers.len();
    let keep: Vec<String> = g
        .initializers
        .keys()
        .filter(|k| used.contains(k.as_str()))
        .cloned()
        .collect();
    g.initializers.retain(|k, _| keep.contains(k));
    before - g.initializers.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Node;
    use crate::passes::testing::{assert_same_outputs, chain_model};

    #[test]
    fn removes_branches_that_reach_no_output() {
        let model = chain_model(&["Relu", "Neg"]);
        let mut dead = model.clone();
        dead.graph.nodes.push(Node::new(
            "dead",
            "Exp",
            vec!["x".into()],
            vec!["unused".into()],
        ));
        let r = DeadNodeElimination.run(&mut dead).unwrap();
        assert_eq!(r.nodes, (3, 2));
        assert_same_outputs(&model, &dead, 0.0);
    }

    /// A value and an initializer only a Loop's body reads stay; a Loop nothing reads goes.
    #[test]
    fn keeps_what_subgraphs_capture() {
        use crate::ir::{Attr, ValueInfo};
        let body = Graph {
            name: "body".into(),
            inputs: vec![
                ValueInfo::untyped("i"),
                ValueInfo::untyped("c"),
                ValueInfo::untyped("acc"),
            ],
            outputs: vec![ValueInfo::untyped("c"), ValueInfo::untyped("acc2")],
            nodes: vec![
                Node::new(
                    "add",
                    "Add",
                    vec!["acc".into(), "e".into()],
                    vec!["acc1".into()],
                ),
                Node::new(
                    "mul",
                    "Mul",
                    vec!["acc1".into(), "w".into()],
                    vec!["acc2".into()],
                ),
            ],
            ..Graph::default()
        };
        let mut model = crate::passes::testing::chain_model(&["Relu"]);
        let g = &mut model.graph;
        let x = g.inputs[0].name.clone();
        let y = g.outputs[0].name.clone();
        let w = candle_core::Tensor::new(&[2f32], &candle_core::Device::Cpu).unwrap();
        g.initializers
            .insert("w".into(), crate::ir::entry_from_candle("w", &w).unwrap());
        g.nodes
            .push(Node::new("exp", "Exp", vec![x.clone()], vec!["e".into()]));
        g.nodes.push(
            Node::new(
                "loop",
                "Loop",
                vec!["".into(), "".into(), y.clone()],
                vec!["z".into()],
            )
            .with_attr("body", Attr::Graph(Box::new(body))),
        );
        g.nodes
            .push(Node::new("dead", "Neg", vec![x], vec!["unused".into()]));
        g.outputs = vec![ValueInfo::untyped("z")];
        let mut opt = model.clone();
        DeadNodeElimination.run(&mut opt).unwrap();
        let names: Vec<&str> = opt.graph.nodes.iter().map(|n| n.name.as_str()).collect();
        assert!(
            !names.contains(&"dead") && names.contains(&"exp"),
            "{names:?}"
        );
        assert!(opt.graph.initializers.contains_key("w"));

        opt.graph.outputs = vec![ValueInfo::untyped(y)];
        DeadNodeElimination.run(&mut opt).unwrap();
        assert_eq!(opt.graph.nodes.len(), 1);
        assert!(opt.graph.initializers.is_empty());
    }
}
