//! Q/K/V projection merge: MatMuls (each with a bias Add) that read the same input become
//! one MatMul over the concatenated weights, one Add and a Split: one large GEMM instead of
//! three small ones.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::pattern::{bias_add, constant, Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, OnnxModel};

/// Merges projections of the same input.
pub struct QkvMerge;

struct Proj {
    mm: usize,
    add: usize,
    w: Tensor,
    b: Tensor,
    out: String,
}

impl Pass for QkvMerge {
    fn name(&self) -> &'static str {
        "qkv-merge"
    }

    fn description(&self) -> &'static str {
        "merge MatMul + bias projections that read the same input into one MatMul and a Split"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let opset = model.opset();
        let g = &model.graph;
        let idx = Index::new(g);
        let groups = projections(g, &idx);
        let mut rw = Rewrite::default();
        for (input, projs) in groups {
            if projs.len() < 2 {
                let p = &projs[0];
                report.skip(
                    &g.nodes[p.mm].name,
                    format!("MatMul: no other projection with a bias reads `{input}`"),
                );
                continue;
            }
            let k = projs[0].w.dims()[0];
            if projs
                .iter()
                .any(|p| p.w.dims()[0] != k || p.w.dtype() != projs[0].w.dtype())
            {
                report.skip(
                    &g.nodes[projs[0].mm].name,
                    "MatMul: the projections of this input differ in shape or type",
                );
                continue;
            }
            let merged = merge(g, opset, &mut rw, &input, &projs)?;
            report.matched.push(merged);
        }
        rw.apply(&mut model.graph)?;
        Ok(report.finish(model))
    }
}

/// The MatMul + bias projections of the graph with constant weights, grouped by the input
/// they read.
fn projections(g: &Graph, idx: &Index) -> BTreeMap<String, Vec<Proj>> {
    let mut groups: BTreeMap<String, Vec<Proj>> = BTreeMap::new();
    for (mi, mm) in g.nodes.iter().enumerate() {
        if mm.op_type != "MatMul" || !mm.domain.is_empty() {
            continue;
        }
        let Some(w) = constant(g, idx, &mm.inputs[1]).filter(|w| w.rank() == 2) else {
            continue;
        };
        let Some((ai, add, b)) = bias_add(g, idx, &mm.outputs[0]) else {
            continue;
        };
        let Some(b) = constant(g, idx, b) else {
            continue;
        };
        if b.rank() != 1 || b.elem_count() != w.dims()[1] {
            continue;
        }
        groups.entry(mm.inputs[0].clone()).or_default().push(Proj {
            mm: mi,
            add: ai,
            w,
            b,
            out: add.outputs[0].clone(),
        });
    }
    groups
}

/// Rewrites `projs` (two or more, of one input, alike in shape and type) as one MatMul, one
/// Add and a Split; returns what was merged, in words.
fn merge(g: &Graph, opset: i64, rw: &mut Rewrite, input: &str, projs: &[Proj]) -> Result<String> {
    let k = projs[0].w.dims()[0];
    let ws: Vec<&Tensor> = projs.iter().map(|p| &p.w).collect();
    let bs: Vec<&Tensor> = projs.iter().map(|p| &p.b).collect();
    let first = &g.nodes[projs[0].mm];
    let base = first.name.trim_end_matches("/MatMul").to_string();
    let w = rw.constant(g, &format!("{base}_merged_w"), &Tensor::cat(&ws, 1)?)?;
    let b = rw.constant(g, &format!("{base}_merged_b"), &Tensor::cat(&bs, 0)?)?;
    let sizes: Vec<i64> = projs.iter().map(|p| p.w.dims()[1] as i64).collect();
    let mm_out = g.fresh_name(&format!("{base}_merged_mm"));
    let add_out = g.fresh_name(&format!("{base}_merged"));
    let at = projs.iter().map(|p| p.add).max().expect("two or more");
    rw.add(
        at,
        Node::new(
            mm_out.clone(),
            "MatMul",
            vec![input.to_string(), w],
            vec![mm_out.clone()],
        ),
    );
    rw.add(
        at,
        Node::new(
            add_out.clone(),
            "Add",
            vec![mm_out, b],
            vec![add_out.clone()],
        ),
    );
    let outs: Vec<String> = projs.iter().map(|p| p.out.clone()).collect();
    let mut split = Node::new(
        g.fresh_name(&format!("{base}_split")),
        "Split",
        vec![add_out],
        outs,
    )
    .with_attr("axis", Attr::Int(-1));
    if opset >= 13 {
        let s = rw.constant(
            g,
            &format!("{base}_split_sizes"),
            &Tensor::new(sizes.as_slice(), &candle_core::Device::Cpu)?,
        )?;
        split.inputs.push(s);
    } else {
        split = split.with_attr("split", Attr::Ints(sizes.clone()));
    }
    rw.add(at, split);
    for p in projs {
        rw.remove([p.mm, p.add]);
    }
    let names: Vec<&str> = projs.iter().map(|p| g.nodes[p.mm].name.as_str()).collect();
    Ok(format!(
        "merged {} projections of `{input}` ({}) into one {k}x{} MatMul",
        projs.len(),
        names.join(", "),
        sizes.iter().sum::<i64>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};

    #[test]
    fn merges_the_three_projections_of_each_layer() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        crate::passes::const_fold::ConstFold.run(&mut opt).unwrap();
        let r = QkvMerge.run(&mut opt).unwrap();
        assert_eq!(r.matched.len(), 2, "{r:#?}");
        assert_eq!(opt.graph.op_histogram().get("Split"), Some(&2));
        assert_same_outputs(&model, &opt, 1e-5);
    }
}
