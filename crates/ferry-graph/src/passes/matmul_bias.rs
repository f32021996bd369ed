//! MatMul + bias (+ GELU) fusion: `MatMul(X, W) -> Add(B) [-> Gelu]` with constant 2-D `W`
//! and 1-D `B` becomes `com.ferry.MatMulBias` or `com.ferry.MatMulBiasGelu`: one GEMM that
//! starts from the bias, with the activation applied in place (ferry-kernels'
//! `linear_in_out`), instead of three passes over the output. This is the N-D counterpart of
//! `matmul-add` (Gemm only takes 2-D inputs).

use super::pattern::{bias_add, constant, Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Node, OnnxModel};
use crate::onnx::FERRY_DOMAIN;

/// Fuses projections with their bias and GELU.
pub struct MatMulBiasFusion;

impl Pass for MatMulBiasFusion {
    fn name(&self) -> &'static str {
        "matmul-bias"
    }

    fn description(&self) -> &'static str {
        "fuse MatMul + bias Add (+ erf GELU) over constant weights into one op"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let g = &model.graph;
        let idx = Index::new(g);
        let types = super::types::infer(g);
        let mut rw = Rewrite::default();
        for (mi, mm) in g.nodes.iter().enumerate() {
            if mm.op_type != "MatMul" || !mm.domain.is_empty() {
                continue;
            }
            let out = &mm.outputs[0];
            let Some(w) = constant(g, &idx, &mm.inputs[1]) else {
                report.skip(&mm.name, "MatMul: its weights are not a constant (an activation product, e.g. attention)");
                continue;
            };
            if w.rank() != 2 {
                report.skip(
                    &mm.name,
                    format!("MatMul: its weights are {}-D, not 2-D", w.rank()),
                );
                continue;
            }
            let Some((ai, add, bias)) = bias_add(g, &idx, out) else {
                report.skip(
                    &mm.name,
                    "MatMul: its result is not followed by a bias Add alone",
                );
                continue;
            };
            match constant(g, &idx, bias) {
                Some(b) if b.rank() == 1 && b.elem_count() == w.dims()[1] => {}
                _ => {
                    report.skip(
                        &mm.name,
                        "MatMul: the added value is not a constant bias of one value per output",
                    );
                    continue;
                }
            }
            if types
                .get(&mm.inputs[0])
                .is_some_and(|d| *d != ferry_io::DType::F32)
            {
                report.skip(
                    &mm.name,
                    format!(
                        "MatMul: its input is {}; the fused op's ONNX body is written for f32",
                        types[&mm.inputs[0]]
                    ),
                );
                continue;
            }
            let mut nodes = vec![mi, ai];
            let mut output = add.outputs[0].clone();
            let mut op = "MatMulBias";
            if let Some((gi, gelu)) = idx.sole_consumer(g, &output) {
                let erf_gelu = (gelu.domain == FERRY_DOMAIN && gelu.op_type == "Gelu")
                    || (gelu.domain.is_empty()
                        && gelu.op_type == "Gelu"
                        && gelu.attr_str("approximate").is_none_or(|a| a == "none"));
                if erf_gelu {
                    nodes.push(gi);
                    output = gelu.outputs[0].clone();
                    op = "MatMulBiasGelu";
                }
            }
            if rw.claimed(&nodes) {
                continue;
            }
            let mut node = Node::new(
                mm.name.clone(),
                op,
                vec![mm.inputs[0].clone(), mm.inputs[1].clone(), bias.to_string()],
                vec![output],
            );
            node.domain = FERRY_DOMAIN.into();
            let last = *nodes.iter().max().expect("matched");
            rw.remove(nodes);
            rw.add(last, node);
            report.matched.push(format!("com.ferry.{op} `{}`", mm.name));
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
    fn fuses_projections_and_the_feed_forward_gelu() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        crate::passes::const_fold::ConstFold.run(&mut opt).unwrap();
        crate::passes::gelu::GeluFusion.run(&mut opt).unwrap();
        let r = MatMulBiasFusion.run(&mut opt).unwrap();
        let h = opt.graph.op_histogram();
        // Per layer: q, k, v, attention output, FFN out (MatMulBias) and FFN in (with GELU).
        assert_eq!(
            (
                h.get("com.ferry.MatMulBias"),
                h.get("com.ferry.MatMulBiasGelu")
            ),
            (Some(&10), Some(&2)),
            "{r:#?}"
        );
        assert!(
            r.skipped
                .iter()
                .any(|s| s.reason.contains("not a constant")),
            "{r:#?}"
        );
        assert_same_outputs(&model, &opt, 1e-5);
    }
}
