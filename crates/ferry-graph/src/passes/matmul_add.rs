//! MatMul followed by a bias Add becomes one Gemm (`Y = A B + C`), where Gemm applies:
//! 2-D operands and a bias of one value per output column.

use super::pattern::{bias_add, constant, Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Node, OnnxModel};

/// Turns 2-D MatMul + Add into Gemm.
pub struct MatMulAddToGemm;

impl Pass for MatMulAddToGemm {
    fn name(&self) -> &'static str {
        "matmul-add"
    }

    fn description(&self) -> &'static str {
        "turn a 2-D MatMul followed by a bias Add into one Gemm"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        if !model.graph.nodes.iter().any(|n| n.op_type == "MatMul") {
            return Ok(report.finish(model));
        }
        let dims = super::probe::dims(model)?;
        let g = &model.graph;
        let idx = Index::new(g);
        let mut rw = Rewrite::default();
        for (mi, mm) in g.nodes.iter().enumerate() {
            if mm.op_type != "MatMul" || !mm.domain.is_empty() {
                continue;
            }
            let out = &mm.outputs[0];
            let Some((ai, add, bias)) = bias_add(g, &idx, out) else {
                report.skip(
                    &mm.name,
                    "MatMul: its result is not followed by a bias Add alone",
                );
                continue;
            };
            let rank = |v: &str| dims.get(v).map(Vec::len);
            if rank(&mm.inputs[0]) != Some(2) || rank(&mm.inputs[1]) != Some(2) {
                report.skip(
                    &mm.name,
                    format!(
                        "MatMul: its input is {}-D (Gemm takes 2-D matrices); left as MatMul + Add",
                        rank(&mm.inputs[0]).map_or("?".to_string(), |r| r.to_string())
                    ),
                );
                continue;
            }
            let cols = dims.get(out).and_then(|d| d.get(1)).copied().unwrap_or(0);
            let Some(c) = constant(g, &idx, bias) else {
                report.skip(&mm.name, "MatMul: the added bias is not a constant");
                continue;
            };
            let per_col =
                c.elem_count() == cols && (c.rank() == 1 || (c.rank() == 2 && c.dims()[0] == 1));
            if !per_col {
                report.skip(
                    &mm.name,
                    format!(
                        "MatMul: the added {:?} is not one bias per output column",
                        c.dims()
                    ),
                );
                continue;
            }
            let gemm = Node::new(
                mm.name.clone(),
                "Gemm",
                vec![mm.inputs[0].clone(), mm.inputs[1].clone(), bias.to_string()],
                add.outputs.clone(),
            );
            rw.remove([mi, ai]);
            rw.add(ai, gemm);
            report
                .matched
                .push(format!("MatMul `{}` + Add `{}` -> Gemm", mm.name, add.name));
        }
        rw.apply(&mut model.graph)?;
        Ok(report.finish(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::entry_from_candle;
    use crate::passes::testing::{assert_same_outputs, chain_model, load_fixture};
    use candle_core::{Device, Tensor};

    #[test]
    fn two_d_matmul_with_a_bias_becomes_one_gemm() {
        // x [batch, 8] -> Relu -> MatMul W [8, 4] -> Add b [4] -> y
        let mut model = chain_model(&["Relu"]);
        let g = &mut model.graph;
        g.nodes[0].outputs[0] = "h".into();
        g.nodes.push(Node::new(
            "mm",
            "MatMul",
            vec!["h".into(), "w".into()],
            vec!["hw".into()],
        ));
        g.nodes.push(Node::new(
            "bias",
            "Add",
            vec!["b".into(), "hw".into()],
            vec!["y".into()],
        ));
        g.outputs[0].shape = None;
        let w = Tensor::randn(0f32, 1.0, (8, 4), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, 4, &Device::Cpu).unwrap();
        g.initializers
            .insert("w".into(), entry_from_candle("w", &w).unwrap());
        g.initializers
            .insert("b".into(), entry_from_candle("b", &b).unwrap());
        let mut opt = model.clone();
        let r = MatMulAddToGemm.run(&mut opt).unwrap();
        assert_eq!(r.matched.len(), 1, "{r:#?}");
        assert_eq!(opt.graph.op_histogram().get("Gemm"), Some(&1));
        assert!(!opt.graph.op_histogram().contains_key("MatMul"));
        assert_same_outputs(&model, &opt, 1e-6);
    }

    #[test]
    fn two_d_matmul_add_becomes_gemm_and_three_d_is_explained() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        crate::passes::const_fold::ConstFold.run(&mut opt).unwrap();
        let r = MatMulAddToGemm.run(&mut opt).unwrap();
        // The encoder's projections act on [batch, seq, hidden]: each is explained, none fused.
        assert!(
            r.skipped.iter().any(|s| s.reason.contains("input is 3-D")),
            "{r:#?}"
        );
        assert_same_outputs(&model, &opt, 1e-6);
    }
}
