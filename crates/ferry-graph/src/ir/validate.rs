//! Topological order and consistency checks.

use std::collections::{HashMap, HashSet, VecDeque};

use super::Graph;
use crate::error::{Error, Result};

impl Graph {
    /// Puts the nodes in topological order (stable: ready nodes keep their file order).
    /// A node depends on the producers of its inputs and of the values its subgraphs capture;
    /// names no node of this graph produces (graph inputs, initializers, values of an
    /// enclosing graph when this is a subgraph) impose no order. A cycle is an error naming a
    /// node on it. Subgraphs are left as they are.
    pub fn sort(&mut self) -> Result<()> {
        let producers: HashMap<String, usize> = self
            .producers()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let n = self.nodes.len();
        let mut indegree = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, node) in self.nodes.iter().enumerate() {
            let deps: HashSet<usize> = node
                .reads()
                .into_iter()
                .filter_map(|s| producers.get(s))
                .copied()
                .filter(|&p| p != i)
                .collect();
            indegree[i] = deps.len();
            for d in deps {
                users[d].push(i);
            }
        }
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_front() {
            order.push(i);
            let mut next: Vec<usize> = Vec::new();
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    next.push(u);
                }
            }
            next.sort_unstable();
            ready.extend(next);
        }
        if order.len() != n {
            let stuck = (0..n).find(|&i| indegree[i] > 0).expect("a node is left");
            return Err(Error::Invalid(format!(
                "the graph has a cycle through node `{}` ({})",
                self.nodes[stuck].name, self.nodes[stuck].op_type
            )));
        }
        let mut old: Vec<Option<super::Node>> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(Some)
            .collect();
        self.nodes = order
            .into_iter()
            .map(|i| old[i].take().expect("each node once"))
            .collect();
        Ok(())
    }

    /// Checks the graph: unique node names, every value defined once, every input defined
    /// before its use, every graph output produced; and the same of every subgraph, where the
    /// values of the enclosing graphs defined before the node count as defined too. Names the
    /// first inconsistency.
    pub fn validate(&self) -> Result<()> {
        self.validate_in(&HashSet::new()).map_err(Error::Invalid)
    }

    /// [`Graph::validate`] for a graph that sees the names `outer` of its enclosing scopes.
    fn validate_in(&self, outer: &HashSet<&str>) -> std::result::Result<(), String> {
        let mut defined: HashSet<&str> = HashSet::new();
        for v in &self.inputs {
            if !defined.insert(&v.name) {
                return Err(format!("graph input `{}` is listed twice", v.name));
            }
        }
        for name in self.initializers.keys() {
            defined.insert(name);
        }
        let mut node_names = HashSet::new();
        for node in &self.nodes {
            if !node_names.insert(node.name.as_str()) {
                return Err(format!("two nodes are named `{}`", node.name));
            }
            for inp in node.inputs.iter().filter(|s| !s.is_empty()) {
                if !defined.contains(inp.as_str()) && !outer.contains(inp.as_str()) {
                    return Err(format!(
                        "node `{}` ({}) reads `{inp}`, which no earlier node, input or initializer defines",
                        node.name, node.op_type
                    ));
                }
            }
            if node.has_subgraphs() {
                let scope: HashSet<&str> = outer.union(&defined).copied().collect();
                for (attr, g) in node.subgraphs() {
                    g.validate_in(&scope).map_err(|e| {
                        format!(
                            "in subgraph `{attr}` of node `{}` ({}): {e}",
                            node.name, node.op_type
                        )
                    })?;
                }
            }
            for out in node.outputs.iter().filter(|s| !s.is_empty()) {
                if !defined.insert(out) {
                    return Err(format!(
                        "node `{}` ({}) writes `{out}`, which is already defined",
                        node.name, node.op_type
                    ));
                }
            }
        }
        for out in &self.outputs {
            if !defined.contains(out.name.as_str()) && !outer.contains(out.name.as_str()) {
                return Err(format!(
                    "graph output `{}` is not produced by any node",
                    out.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Attr, Graph, Node, ValueInfo};

    fn chain() -> Graph {
        Graph {
            inputs: vec![ValueInfo::untyped("x")],
            outputs: vec![ValueInfo::untyped("z")],
            nodes: vec![
                Node::new("b", "Relu", vec!["y".into()], vec!["z".into()]),
                Node::new("a", "Neg", vec!["x".into()], vec!["y".into()]),
            ],
            ..Graph::default()
        }
    }

    #[test]
    fn sort_orders_and_validate_names_the_problem() {
        let mut g = chain();
        let err = g.validate().unwrap_err().to_string();
        assert!(err.contains("node `b` (Relu) reads `y`"), "{err}");
        g.sort().unwrap();
        assert_eq!(g.nodes[0].name, "a");
        g.validate().unwrap();

        g.nodes[0].inputs[0] = "z".into();
        assert!(g.sort().unwrap_err().to_string().contains("cycle"));

        let mut g = chain();
        g.sort().unwrap();
        g.outputs[0].name = "w".into();
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("graph output `w`"));
    }

    /// `outer = Relu(x)`; `If(c)` whose branches read `outer` and `x` from the main graph.
    fn with_if(then_reads: &str) -> Graph {
        let branch = |name: &str, reads: &str| Graph {
            name: name.into(),
            outputs: vec![ValueInfo::untyped(format!("{name}_out"))],
            nodes: vec![Node::new(
                format!("{name}_neg"),
                "Neg",
                vec![reads.into()],
                vec![format!("{name}_out")],
            )],
            ..Graph::default()
        };
        Graph {
            inputs: vec![ValueInfo::untyped("x"), ValueInfo::untyped("c")],
            outputs: vec![ValueInfo::untyped("y")],
            nodes: vec![
                Node::new("if", "If", vec!["c".into()], vec!["y".into()])
                    .with_attr(
                        "then_branch",
                        Attr::Graph(Box::new(branch("then", then_reads))),
                    )
                    .with_attr("else_branch", Attr::Graph(Box::new(branch("else", "x")))),
                Node::new("relu", "Relu", vec!["x".into()], vec!["outer".into()]),
            ],
            ..Graph::default()
        }
    }

    /// Values a subgraph reads from the enclosing graph are inputs of its node: they order
    /// the nodes, count as uses and must be defined before the node.
    #[test]
    fn subgraph_reads_of_enclosing_values_order_and_validate() {
        let mut g = with_if("outer");
        assert_eq!(g.nodes[0].captured_inputs(), ["outer", "x"]);
        assert_eq!(g.consumers()["outer"], [0]);
        let err = g.validate().unwrap_err().to_string();
        assert!(
            err.contains(
                "in subgraph `then_branch` of node `if` (If): node `then_neg` (Neg) reads `outer`"
            ),
            "{err}"
        );
        g.sort().unwrap();
        assert_eq!(g.nodes[0].name, "relu");
        g.validate().unwrap();

        let g = with_if("nowhere");
        assert_eq!(g.outer_reads(), ["nowhere"]);
        let err = g.validate().unwrap_err().to_string();
        assert!(err.contains("reads `nowhere`"), "{err}");
    }
}
