//! LayerNorm fusion: the decomposed form PyTorch exports before opset 17,
//! `ReduceMean -> Sub -> Pow 2 -> ReduceMean -> Add eps -> Sqrt -> Div -> Mul gamma -> Add beta`,
//! becomes one `LayerNormalization` (run by ferry-kernels' layer-norm kernel). Models below
//! opset 17 are raised to 17, which changes no op they use (opsets 13 to 17 only add types
//! and ops).

use candle_core::Tensor;

use super::pattern::{const_ints, constant, other_input, scalar, Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, OnnxModel};

/// Fuses decomposed layer normalization.
pub struct LayerNormFusion;

/// The opset that defines LayerNormalization.
const LAYER_NORM_OPSET: i64 = 17;

struct Matched {
    nodes: Vec<usize>,
    x: String,
    gamma: Tensor,
    beta: Option<String>,
    eps: f32,
    out: String,
}

impl Pass for LayerNormFusion {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn description(&self) -> &'static str {
        "fuse the decomposed ReduceMean/Sub/Pow/Sqrt/Div pattern into LayerNormalization"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let anchors: Vec<usize> = model
            .graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "ReduceMean" && n.domain.is_empty())
            .map(|(i, _)| i)
            .collect();
        if anchors.is_empty() {
            return Ok(report.finish(model));
        }
        let opset = model.opset();
        if opset < 13 {
            for &a in &anchors {
                report.skip(
                    &model.graph.nodes[a].name,
                    format!("LayerNorm: the model's opset {opset} is below 13; convert it first"),
                );
            }
            return Ok(report.finish(model));
        }
        let dims = super::probe::dims(model)?;
        let g = &model.graph;
        let idx = Index::new(g);
        let mut rw = Rewrite::default();
        let mut fused = 0;
        for a in anchors {
            let anchor = &g.nodes[a];
            // The second ReduceMean of each pattern (the variance) is not an anchor.
            if idx.producer_op(g, &anchor.inputs[0], "Pow").is_some()
                || idx
                    .producer_op(g, &anchor.inputs[0], "Mul")
                    .is_some_and(|(_, m)| m.input(0) == m.input(1))
            {
                continue;
            }
            let matched =
                match_ln(g, &idx, a, &dims).and_then(|m| match idx.escaping(g, &m.nodes, &m.out) {
                    Some(v) => Err(format!(
                        "the intermediate value `{v}` is also used outside the pattern"
                    )),
                    None => Ok(m),
                });
            match matched {
                Ok(m) if rw.claimed(&m.nodes) => {}
                Ok(m) => {
                    let d = m.gamma.elem_count();
                    let gamma =
                        rw.constant(g, &format!("{}_gamma", anchor.name), &m.gamma.reshape(d)?)?;
                    let mut inputs = vec![m.x.clone(), gamma];
                    inputs.extend(m.beta.clone());
                    let name = g.fresh_name(&format!(
                        "{}_LayerNorm",
                        anchor.name.trim_end_matches("/ReduceMean")
                    ));
                    let node = Node::new(
                        name.clone(),
                        "LayerNormalization",
                        inputs,
                        vec![m.out.clone()],
                    )
                    .with_attr("axis", Attr::Int(-1))
                    .with_attr("epsilon", Attr::Float(m.eps));
                    let last = *m.nodes.iter().max().expect("matched nodes");
                    rw.remove(m.nodes.iter().copied());
                    rw.add(last, node);
                    report.matched.push(format!(
                        "LayerNormalization `{name}` (epsilon {:e}) from {} nodes",
                        m.eps,
                        m.nodes.len()
                    ));
                    fused += 1;
                }
                Err(why) => report.skip(&anchor.name, format!("LayerNorm: {why}")),
            }
        }
        rw.apply(&mut model.graph)?;
        if fused > 0 && opset < LAYER_NORM_OPSET {
            model.opsets.insert(String::new(), LAYER_NORM_OPSET);
            report.matched.push(format!(
                "opset raised from {opset} to {LAYER_NORM_OPSET} for LayerNormalization"
            ));
        }
        Ok(report.finish(model))
    }
}

fn reduce_axes(g: &Graph, idx: &Index, n: &Node) -> Option<Vec<i64>> {
    match n.input(1) {
        Some(a) => const_ints(g, idx, a),
        None => n.attr_ints("axes").map(<[i64]>::to_vec),
    }
}

fn match_ln(
    g: &Graph,
    idx: &Index,
    a: usize,
    dims: &std::collections::HashMap<String, Vec<usize>>,
) -> std::result::Result<Matched, String> {
    let mean = &g.nodes[a];
    let x = mean.inputs[0].clone();
    let rank = dims
        .get(&x)
        .map(Vec::len)
        .ok_or("the input's shape is unknown")?;
    let last_axis = |n: &Node| -> std::result::Result<(), String> {
        match reduce_axes(g, idx, n) {
            Some(ax) if ax.len() == 1 && (ax[0] == -1 || ax[0] == rank as i64 - 1) => Ok(()),
            Some(ax) => Err(format!("it reduces axes {ax:?}, not only the last one")),
            None => Err("its axes are not constant".into()),
        }
    };
    last_axis(mean)?;
    if mean.attr_int("keepdims", 1) == 0 {
        return Err("the mean is not kept as a dimension".into());
    }
    let m = &mean.outputs[0];
    let (si, sub) = idx
        .sole_consumer(g, m)
        .filter(|(_, n)| {
            n.op_type == "Sub" && n.input(0) == Some(x.as_str()) && n.input(1) == Some(m.as_str())
        })
        .ok_or("the mean is not subtracted from the input alone (not a LayerNorm)")?;
    let d = &sub.outputs[0];
    let users = idx.consumers_of(d);
    let sq = users
        .iter()
        .copied()
        .find(|&u| {
            let n = &g.nodes[u];
            (n.op_type == "Pow"
                && n.input(0) == Some(d.as_str())
                && n.input(1).and_then(|e| scalar(g, idx, e)) == Some(2.0))
                || (n.op_type == "Mul"
                    && n.input(0) == Some(d.as_str())
                    && n.input(1) == Some(d.as_str()))
        })
        .ok_or("the centered input is not squared")?;
    let div = users
        .iter()
        .copied()
        .find(|&u| g.nodes[u].op_type == "Div" && g.nodes[u].input(0) == Some(d.as_str()))
        .ok_or("the centered input is not divided by the deviation")?;
    if users.len() != 2 {
        return Err("the centered input is used outside the pattern".into());
    }
    let (vi, var) = idx
        .sole_consumer(g, &g.nodes[sq].outputs[0])
        .filter(|(_, n)| n.op_type == "ReduceMean")
        .ok_or("the square is not averaged")?;
    last_axis(var)?;
    if var.attr_int("keepdims", 1) == 0 {
        return Err("the variance is not kept as a dimension".into());
    }
    let (ei, add_eps) = idx
        .sole_consumer(g, &var.outputs[0])
        .filter(|(_, n)| n.op_type == "Add")
        .ok_or("no epsilon is added to the variance")?;
    let eps_name =
        other_input(add_eps, &var.outputs[0]).ok_or("no epsilon is added to the variance")?;
    let eps = scalar(g, idx, eps_name).ok_or("epsilon is not a constant")?;
    let (qi, sqrt) = idx
        .sole_consumer(g, &add_eps.outputs[0])
        .filter(|(_, n)| n.op_type == "Sqrt")
        .ok_or("no square root of the variance")?;
    if g.nodes[div].input(1) != Some(sqrt.outputs[0].as_str())
        || idx.consumers_of(&sqrt.outputs[0]).len() != 1
    {
        return Err("the input is not divided by the square root of the variance".into());
    }
    let normed = &g.nodes[div].outputs[0];
    let (mi, mul) = idx
        .sole_consumer(g, normed)
        .filter(|(_, n)| n.op_type == "Mul")
        .ok_or("the normalized value is not scaled by a weight (gamma)")?;
    let gamma_name = other_input(mul, normed).ok_or("no gamma")?;
    let gamma = constant(g, idx, gamma_name).ok_or("gamma is not a constant")?;
    let width = dims.get(&x).and_then(|d| d.last()).copied().unwrap_or(0);
    let gd = gamma.dims();
    if gamma.elem_count() != width || gd.last() != Some(&width) {
        return Err(format!(
            "gamma {gd:?} is not one value per element of the last dimension ({width})"
        ));
    }
    let mut nodes = vec![a, si, sq, vi, ei, qi, div, mi];
    let (beta, out) = match idx
        .sole_consumer(g, &mul.outputs[0])
        .filter(|(_, n)| n.op_type == "Add")
    {
        Some((bi, add)) => {
            let b = other_input(add, &mul.outputs[0]).ok_or("no beta")?;
            match constant(g, idx, b) {
                Some(t) if t.elem_count() == width && t.rank() == 1 => {
                    nodes.push(bi);
                    (Some(b.to_string()), add.outputs[0].clone())
                }
                _ => (None, mul.outputs[0].clone()),
            }
        }
        None => (None, mul.outputs[0].clone()),
    };
    Ok(Matched {
        nodes,
        x,
        gamma,
        beta,
        eps: eps as f32,
        out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};

    #[test]
    fn fuses_every_layer_norm_of_the_encoder() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        crate::passes::const_fold::ConstFold.run(&mut opt).unwrap();
        let r = LayerNormFusion.run(&mut opt).unwrap();
        // Embeddings + 2 per layer.
        assert_eq!(
            opt.graph.op_histogram().get("LayerNormalization"),
            Some(&5),
            "{r:#?}"
        );
        assert_eq!(opt.opset(), 17);
        assert!(!opt.graph.op_histogram().contains_key("Sqrt"));
        assert_same_outputs(&model, &opt, 1e-5);
    }
}
