//! BatchNormalization folded into the Conv, Gemm or MatMul before it: with
//! `s = scale / sqrt(var + eps)`, the weights' output channels are multiplied by `s` and the
//! bias becomes `(bias - mean) s + beta`.

use candle_core::{DType, Tensor};

use super::pattern::{constant, Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, OnnxModel};

/// Folds inference BatchNormalization into the preceding linear op.
pub struct BatchNormFold;

impl Pass for BatchNormFold {
    fn name(&self) -> &'static str {
        "bn-fold"
    }

    fn description(&self) -> &'static str {
        "fold BatchNormalization into the Conv, Gemm or MatMul before it"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        // Only a MatMul before the BatchNorm needs dimensions, so the graph is probed only
        // then; a graph the probe cannot run (over the memory budget, say) still gets its Conv
        // and Gemm folds.
        let dims = std::cell::OnceCell::new();
        let g = &model.graph;
        let idx = Index::new(g);
        let mut rw = Rewrite::default();
        for (bi, bn) in g.nodes.iter().enumerate() {
            if bn.op_type != "BatchNormalization" || !bn.domain.is_empty() {
                continue;
            }
            let why = |r: &str| format!("BatchNormalization: {r}");
            if bn.outputs.iter().skip(1).any(|o| !o.is_empty())
                || bn.attr_int("training_mode", 0) != 0
            {
                report.skip(&bn.name, why("it runs in training mode"));
                continue;
            }
            let Some((s, shift)) = scale_shift(g, &idx, bn)? else {
                report.skip(
                    &bn.name,
                    why("its scale, bias, mean or variance is not a constant"),
                );
                continue;
            };
            let x = &bn.inputs[0];
            let Some(&pi) = idx.producer.get(x) else {
                report.skip(&bn.name, why("its input is a graph input"));
                continue;
            };
            let prev = &g.nodes[pi];
            if idx.sole_consumer(g, x).is_none() {
                report.skip(
                    &bn.name,
                    why(&format!(
                        "the output of `{}` is also used elsewhere",
                        prev.name
                    )),
                );
                continue;
            }
            if rw.claimed(&[pi, bi]) {
                continue;
            }
            let folded = match prev.op_type.as_str() {
                "Conv" => fold_conv(g, &idx, prev, &s, &shift),
                "Gemm" => fold_gemm(g, &idx, prev, &s, &shift),
                "MatMul" => match dims.get_or_init(|| super::probe::dims(model).map_err(|e| e.to_string())) {
                    Err(e) => Err(format!("the probe run for its input's dimensions failed: {e}")),
                    Ok(d) if d.get(x).map(Vec::len) != Some(2) => Err(format!(
                        "it normalizes dimension 1, but the output of MatMul `{}` is not 2-D (its features are the last dimension)",
                        prev.name
                    )),
                    Ok(_) => fold_matmul(g, &idx, prev, &s, &shift),
                },
                op => Err(format!("its input comes from {op} `{}`, not Conv, Gemm or MatMul", prev.name)),
            };
            match folded {
                Ok(folded) => {
                    replace(g, &mut rw, (bi, bn), pi, folded)?;
                    report.matched.push(format!(
                        "BatchNormalization `{}` folded into {} `{}`",
                        bn.name, prev.op_type, prev.name
                    ));
                }
                Err(r) => report.skip(&bn.name, why(&r)),
            }
        }
        rw.apply(&mut model.graph)?;
        Ok(report.finish(model))
    }
}

/// The BatchNormalization as `x * scale + shift` per channel (in f64), when its statistics
/// are constants.
fn scale_shift(g: &Graph, idx: &Index, bn: &Node) -> Result<Option<(Tensor, Tensor)>> {
    let stats: Option<Vec<Tensor>> = (1..5)
        .map(|i| {
            bn.input(i)
                .and_then(|v| constant(g, idx, v))
                .and_then(|t| t.to_dtype(DType::F64).ok())
        })
        .collect();
    let Some(stats) = stats else {
        return Ok(None);
    };
    let eps = bn.attr_float("epsilon", 1e-5) as f64;
    let s = (&stats[0] / (&stats[3] + eps)?.sqrt()?)?;
    let shift = (&stats[1] - (&stats[2] * &s)?)?;
    Ok(Some((s, shift)))
}

/// Replaces the producer at `pi` and the BatchNormalization at `bi` by the folded node (a
/// MatMul gets its bias as an Add after it).
fn replace(
    g: &Graph,
    rw: &mut Rewrite,
    (bi, bn): (usize, &Node),
    pi: usize,
    (weight, bias, mut node): (Tensor, Tensor, Node),
) -> Result<()> {
    let w = rw.constant(g, &format!("{}_folded_w", g.nodes[pi].name), &weight)?;
    let b = rw.constant(g, &format!("{}_folded_b", g.nodes[pi].name), &bias)?;
    node.inputs[1] = w;
    if node.op_type == "MatMul" {
        let mm_out = g.fresh_name(&format!("{}_out", node.name));
        node.outputs = vec![mm_out.clone()];
        let add = Node::new(
            g.fresh_name(&format!("{}_bias", node.name)),
            "Add",
            vec![mm_out, b],
            vec![bn.outputs[0].clone()],
        );
        rw.add(bi, add);
    } else {
        node.inputs.truncate(2);
        node.inputs.push(b);
        node.outputs = vec![bn.outputs[0].clone()];
    }
    rw.remove([pi, bi]);
    rw.add(bi, node);
    Ok(())
}

type Folded = std::result::Result<(Tensor, Tensor, Node), String>;

fn weight(g: &Graph, idx: &Index, n: &Node) -> std::result::Result<Tensor, String> {
    n.input(1).and_then(|w| constant(g, idx, w)).ok_or_else(|| {
        format!(
            "the weights of {} `{}` are not a constant",
            n.op_type, n.name
        )
    })
}

fn back(t: Tensor, like: DType) -> std::result::Result<Tensor, String> {
    t.to_dtype(like).map_err(|e| e.to_string())
}

fn fold_conv(g: &crate::ir::Graph, idx: &Index, n: &Node, s: &Tensor, shift: &Tensor) -> Folded {
    let w = weight(g, idx, n)?;
    let dt = w.dtype();
    let e = |e: candle_core::Error| e.to_string();
    let m = w.dims()[0];
    if s.elem_count() != m {
        return Err(format!(
            "{} channels normalized but the Conv has {m} outputs",
            s.elem_count()
        ));
    }
    let mut shape = vec![1; w.rank()];
    shape[0] = m;
    let w2 = w
        .to_dtype(DType::F64)
        .map_err(e)?
        .broadcast_mul(&s.reshape(shape).map_err(e)?)
        .map_err(e)?;
    let b = match n.input(2) {
        Some(b) => constant(g, idx, b)
            .ok_or("the Conv bias is not a constant")?
            .to_dtype(DType::F64)
            .map_err(e)?,
        None => Tensor::zeros(m, DType::F64, &candle_core::Device::Cpu).map_err(e)?,
    };
    let b2 = ((b * s).map_err(e)? + shift).map_err(e)?;
    Ok((back(w2, dt)?, back(b2, dt)?, n.clone()))
}

fn fold_gemm(g: &crate::ir::Graph, idx: &Index, n: &Node, s: &Tensor, shift: &Tensor) -> Folded {
    if n.attr_float("alpha", 1.0) != 1.0 || n.attr_float("beta", 1.0) != 1.0 {
        return Err(format!("Gemm `{}` has alpha or beta other than 1", n.name));
    }
    let w = weight(g, idx, n)?;
    let dt = w.dtype();
    let e = |e: candle_core::Error| e.to_string();
    let trans = n.attr_int("transB", 0) != 0;
    let out = if trans { w.dims()[0] } else { w.dims()[1] };
    if s.elem_count() != out {
        return Err(format!(
            "{} channels normalized but the Gemm has {out} outputs",
            s.elem_count()
        ));
    }
    let sv = if trans {
        s.reshape((out, 1))
    } else {
        s.reshape((1, out))
    }
    .map_err(e)?;
    let w2 = w
        .to_dtype(DType::F64)
        .map_err(e)?
        .broadcast_mul(&sv)
        .map_err(e)?;
    let b = match n.input(2) {
        Some(b) => {
            let c = constant(g, idx, b).ok_or("the Gemm bias is not a constant")?;
            let per_column = c.rank() <= 1 || (c.rank() == 2 && c.dims()[0] == 1);
            if (c.elem_count() != out && c.elem_count() != 1) || !per_column {
                return Err("the Gemm bias is not one value per output".into());
            }
            c.to_dtype(DType::F64)
                .map_err(e)?
                .flatten_all()
                .map_err(e)?
                .broadcast_as(out)
                .map_err(e)?
        }
        None => Tensor::zeros(out, DType::F64, &candle_core::Device::Cpu).map_err(e)?,
    };
    let b2 = ((b * s).map_err(e)? + shift).map_err(e)?;
    let mut node = n.clone();
    node.attrs.insert("beta".into(), Attr::Float(1.0));
    Ok((back(w2, dt)?, back(b2, dt)?, node))
}

fn fold_matmul(g: &crate::ir::Graph, idx: &Index, n: &Node, s: &Tensor, shift: &Tensor) -> Folded {
    let w = weight(g, idx, n)?;
    if w.rank() != 2 {
        return Err(format!("MatMul `{}` weights are not 2-D", n.name));
    }
    let dt = w.dtype();
    let e = |e: candle_core::Error| e.to_string();
    let out = w.dims()[1];
    if s.elem_count() != out {
        return Err(format!(
            "{} channels normalized but the MatMul has {out} outputs",
            s.elem_count()
        ));
    }
    let w2 = w
        .to_dtype(DType::F64)
        .map_err(e)?
        .broadcast_mul(&s.reshape((1, out)).map_err(e)?)
        .map_err(e)?;
    Ok((back(w2, dt)?, back(shift.clone(), dt)?, n.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};

    #[test]
    fn cnn_has_no_batch_norm_left() {
        let model = load_fixture("cnn.onnx");
        assert_eq!(model.graph.op_histogram()["BatchNormalization"], 3);
        let mut opt = model.clone();
        let r = BatchNormFold.run(&mut opt).unwrap();
        assert_eq!(r.matched.len(), 3, "{r:#?}");
        assert!(!opt.graph.op_histogram().contains_key("BatchNormalization"));
        assert_same_outputs(&model, &opt, 1e-5);
    }
}
