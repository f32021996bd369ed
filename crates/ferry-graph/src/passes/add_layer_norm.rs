//! Residual Add + LayerNorm fusion: `LayerNormalization(Add(A, B))` over the last axis, with
//! the sum used nowhere else, becomes `com.ferry.AddLayerNorm(A, B, Scale, Bias)`: one pass
//! over the rows (ferry-kernels' `add_layer_norm`) instead of writing and re-reading the sum.
//! This is the post-norm transformer's residual; a pre-norm residual stream (the sum also feeds
//! the next block) is left alone, with that reason.

use super::pattern::{Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Attr, Node, OnnxModel};
use crate::onnx::FERRY_DOMAIN;

/// Fuses residual adds into the layer norm after them.
pub struct AddLayerNormFusion;

impl Pass for AddLayerNormFusion {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn description(&self) -> &'static str {
        "fuse a residual Add into the LayerNormalization that follows it"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        if !model
            .graph
            .nodes
            .iter()
            .any(|n| n.op_type == "LayerNormalization")
        {
            return Ok(report.finish(model));
        }
        let dims = super::probe::dims(model)?;
        let g = &model.graph;
        let idx = Index::new(g);
        let mut rw = Rewrite::default();
        for (li, ln) in g.nodes.iter().enumerate() {
            if ln.op_type != "LayerNormalization" || !ln.domain.is_empty() {
                continue;
            }
            let x = &ln.inputs[0];
            let rank = dims.get(x).map_or(0, Vec::len) as i64;
            let axis = ln.attr_int("axis", -1);
            if !(axis == -1 || axis == rank - 1) || ln.outputs.iter().skip(1).any(|o| !o.is_empty())
            {
                report.skip(&ln.name, "LayerNormalization: it normalizes more than the last axis, or its statistics are used");
                continue;
            }
            let Some(bias) = ln.input(2) else {
                report.skip(&ln.name, "LayerNormalization: it has no bias input");
                continue;
            };
            let Some((ai, add)) = idx.producer_op(g, x, "Add") else {
                report.skip(
                    &ln.name,
                    "LayerNormalization: its input is not a residual Add",
                );
                continue;
            };
            if idx.sole_consumer(g, x).is_none() {
                report.skip(&ln.name, "LayerNormalization: the residual sum is also used elsewhere (a pre-norm residual stream)");
                continue;
            }
            let (a, b) = (&add.inputs[0], &add.inputs[1]);
            if dims.get(a) != dims.get(x)
                || dims.get(b) != dims.get(x)
                || g.initializers.contains_key(a)
                || g.initializers.contains_key(b)
            {
                report.skip(
                    &ln.name,
                    format!(
                        "LayerNormalization: the Add broadcasts or adds a constant ({:?} + {:?})",
                        dims.get(a),
                        dims.get(b)
                    ),
                );
                continue;
            }
            if rw.claimed(&[ai, li]) {
                continue;
            }
            let mut node = Node::new(
                ln.name.clone(),
                "AddLayerNorm",
                vec![a.clone(), b.clone(), ln.inputs[1].clone(), bias.to_string()],
                vec![ln.outputs[0].clone()],
            )
            .with_attr("epsilon", Attr::Float(ln.attr_float("epsilon", 1e-5)));
            node.domain = FERRY_DOMAIN.into();
            rw.remove([ai, li]);
            rw.add(li, node);
            report.matched.push(format!(
                "com.ferry.AddLayerNorm `{}` (Add `{}`)",
                ln.name, add.name
            ));
        }
        rw.apply(&mut model.graph)?;
        Ok(report.finish(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};

    #[test]
    fn fuses_the_post_norm_residuals_of_the_encoder() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        crate::passes::const_fold::ConstFold.run(&mut opt).unwrap();
        crate::passes::layer_norm::LayerNormFusion
            .run(&mut opt)
            .unwrap();
        let r = AddLayerNormFusion.run(&mut opt).unwrap();
        // Two residuals per layer; the embeddings' LayerNorm sums three embeddings (its Add
        // reads another Add), which is fused too.
        let fused = opt
            .graph
            .op_histogram()
            .get("com.ferry.AddLayerNorm")
            .copied()
            .unwrap_or(0);
        assert!(fused >= 4, "{r:#?}");
        assert_same_outputs(&model, &opt, 1e-5);
    }
}
