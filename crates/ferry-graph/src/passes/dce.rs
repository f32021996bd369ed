//! Dead-node elimination: nodes none of whose outputs reach a graph output, and initializers
//! no node reads.

use std::collections::HashSet;

use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Graph, Model};

/// Removes nodes and initializers that do not contribute to any output.
pub struct DeadNodeElimination;

impl Pass for DeadNodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn description(&self) -> &'static str {
        "remove nodes and initializers no output depends on"
    }

    fn run(&self, model: &mut Model) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let g = &mut model.graph;
        let mut live: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        let mut keep = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                live.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
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

/// Drops initializers that no node reads and no output names; returns how many.
pub(crate) fn remove_unused_initializers(g: &mut Graph) -> usize {
    let used: HashSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(String::as_str))
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
}
