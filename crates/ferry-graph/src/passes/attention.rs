//! Attention fusion: scaled dot-product attention as PyTorch exports it,
//! `Reshape/Transpose` heads of Q, K, V -> `MatMul(Q, K^T)` -> scale (`Mul` or `Div`) ->
//! optional `Add` of a mask -> `Softmax` -> `MatMul(P, V)` -> heads merged by
//! `Transpose/Reshape`, becomes one `com.ferry.Attention(Q, K, V, Bias)` run by ferry-kernels'
//! attention kernel (its ONNX function body keeps the model loadable elsewhere). When Q, K
//! and V are the three parts of one merged projection (`qkv-merge`), the Split goes too and
//! the op is `com.ferry.PackedAttention(QKV, Bias)`.
//! Needs constant head-split shapes: run `shape-simplify` first.

use std::collections::HashMap;

use super::pattern::{const_ints, scalar, Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, OnnxModel};
use crate::onnx::FERRY_DOMAIN;

/// Fuses scaled dot-product attention.
pub struct AttentionFusion;

struct Matched {
    nodes: Vec<usize>,
    q: String,
    k: String,
    v: String,
    bias: Option<String>,
    heads: i64,
    scale: f32,
    out: String,
    /// The heads are merged to `[batch x seq, width]` (the dynamo exporter's form before its
    /// `addmm`), not `[batch, seq, width]`: the fused op's output is reshaped to that.
    flat: bool,
}

impl Pass for AttentionFusion {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn description(&self) -> &'static str {
        "fuse scaled dot-product attention (MatMul, scale, mask, Softmax, MatMul) into one op"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        if !model.graph.nodes.iter().any(|n| n.op_type == "Softmax") {
            return Ok(report.finish(model));
        }
        let opset = model.opset();
        if opset < 13 {
            for n in model.graph.nodes.iter().filter(|n| n.op_type == "Softmax") {
                report.skip(&n.name, format!("attention: the model's opset {opset} is below 13 (Softmax flattened its input then); convert it first"));
            }
            return Ok(report.finish(model));
        }
        let dims = super::probe::dims(model)?;
        let g = &model.graph;
        let idx = Index::new(g);
        let types = super::types::infer(g);
        let mut rw = Rewrite::default();
        let mut zero: Option<String> = None;
        for (si, sm) in g.nodes.iter().enumerate() {
            if sm.op_type != "Softmax" || !sm.domain.is_empty() {
                continue;
            }
            let matched = match_attention(g, &idx, si, &dims).and_then(|m| {
                match idx.escaping(g, &m.nodes, &m.out) {
                    Some(v) => Err(format!(
                        "the intermediate value `{v}` is also used outside the pattern"
                    )),
                    None if types.get(&m.q).is_some_and(|d| *d != ferry_io::DType::F32) => {
                        Err(format!(
                            "the queries are {}; the fused op's ONNX body is written for f32",
                            types[&m.q]
                        ))
                    }
                    None => Ok(m),
                }
            });
            match matched {
                Ok(m) if rw.claimed(&m.nodes) => {}
                Ok(m) => {
                    let bias = match m.bias.clone() {
                        Some(b) => b,
                        None => match &zero {
                            Some(z) => z.clone(),
                            None => {
                                let z = rw.constant(
                                    g,
                                    "attention_zero_bias",
                                    &candle_core::Tensor::new(0f32, &candle_core::Device::Cpu)?,
                                )?;
                                zero = Some(z.clone());
                                z
                            }
                        },
                    };
                    let fused = fuse(g, &idx, &mut rw, (sm, &m), bias)?;
                    report.matched.push(fused);
                }
                Err(why) => report.skip(&sm.name, format!("attention: {why}")),
            }
        }
        rw.apply(&mut model.graph)?;
        Ok(report.finish(model))
    }
}

type Dims = HashMap<String, Vec<usize>>;

/// The width of the flat `[batch x seq, width]` merge target of `m`.
fn flat_width(g: &Graph, idx: &Index, m: &Matched) -> Result<i64> {
    let (_, merge) = idx
        .producer
        .get(&m.out)
        .map(|&i| (i, &g.nodes[i]))
        .ok_or_else(|| crate::Error::Invalid(format!("`{}` has no producer", m.out)))?;
    const_ints(g, idx, &merge.inputs[1])
        .and_then(|t| t.get(1).copied())
        .ok_or_else(|| crate::Error::Invalid(format!("`{}`'s merge shape is not constant", m.out)))
}

/// Replaces the matched nodes `m` (ending in the Softmax `sm`) by one ferry `Attention` (or
/// `PackedAttention` when q, k and v are a Split of one tensor), reshaped back when the
/// pattern's output was flat; returns what was fused, in words.
fn fuse(
    g: &Graph,
    idx: &Index,
    rw: &mut Rewrite,
    (sm, m): (&Node, &Matched),
    bias: String,
) -> Result<String> {
    let base = sm.name.trim_end_matches("/Softmax");
    let name = g.fresh_name(&format!("{base}/Attention"));
    let (op, inputs) = match packed_split(g, idx, m) {
        Some((si, packed)) => {
            rw.remove([si]);
            ("PackedAttention", vec![packed, bias])
        }
        None => (
            "Attention",
            vec![m.q.clone(), m.k.clone(), m.v.clone(), bias],
        ),
    };
    let out = if m.flat {
        g.fresh_name(&format!("{}_3d", m.out))
    } else {
        m.out.clone()
    };
    let mut node = Node::new(name.clone(), op, inputs, vec![out.clone()])
        .with_attr("num_heads", Attr::Int(m.heads))
        .with_attr("scale", Attr::Float(m.scale));
    node.domain = FERRY_DOMAIN.into();
    let last = *m.nodes.iter().max().expect("matched nodes");
    rw.remove(m.nodes.iter().copied());
    rw.add(last, node);
    if m.flat {
        let width = flat_width(g, idx, m)?;
        let target = rw.constant(
            g,
            &format!("{name}_flat_shape"),
            &candle_core::Tensor::new(&[-1i64, width], &candle_core::Device::Cpu)?,
        )?;
        let flat = Node::new(
            g.fresh_name(&format!("{name}_flat")),
            "Reshape",
            vec![out, target],
            vec![m.out.clone()],
        );
        rw.add(last, flat);
    }
    Ok(format!(
        "com.ferry.{op} `{name}`: {} heads, scale {}, {} nodes",
        m.heads,
        m.scale,
        m.nodes.len()
    ))
}

/// When Q, K and V are the three equal outputs of one Split along the last axis (what
/// `qkv-merge` makes), that Split and its packed input: the kernel then reads the packed
/// projection directly instead of concatenating Q, K and V again.
fn packed_split(g: &Graph, idx: &Index, m: &Matched) -> Option<(usize, String)> {
    let &si = idx.producer.get(&m.q)?;
    let split = &g.nodes[si];
    if split.op_type != "Split"
        || !split.domain.is_empty()
        || split.outputs != [m.q.clone(), m.k.clone(), m.v.clone()]
    {
        return None;
    }
    let axis = split.attr_int("axis", 0);
    // Sizes from input 1, the `split` attribute, or (opset 18 on) `num_outputs` equal parts
    // (Q, K and V were checked to be equal tensors).
    let sizes = match (split.input(1), split.attr_ints("split")) {
        (Some(s), _) => const_ints(g, idx, s)?,
        (None, Some(v)) => v.to_vec(),
        (None, None) if split.attr_int("num_outputs", 0) == 3 => vec![1, 1, 1],
        (None, None) => return None,
    };
    let last = axis == -1 || axis == 2;
    let only_here = [&m.q, &m.k, &m.v]
        .iter()
        .all(|v| idx.consumers_of(v).len() == 1);
    (last && only_here && sizes.len() == 3 && sizes[0] == sizes[1] && sizes[1] == sizes[2])
        .then(|| (si, split.inputs[0].clone()))
}

/// `Transpose(Reshape(x, [.., .., H, hd]), perm)` with perm in `perms` (a K^T may also be a
/// second Transpose swapping the last two axes). Returns (x, split shape, nodes).
fn head_split(
    g: &Graph,
    idx: &Index,
    v: &str,
    perms: &[&[i64]],
) -> Option<(String, Vec<i64>, Vec<usize>)> {
    let (ti, t) = idx.producer_op(g, v, "Transpose")?;
    let perm = t.attr_ints("perm")?;
    let mut nodes = vec![ti];
    let mut src = t.inputs[0].clone();
    if !perms.contains(&perm) {
        // K^T as two transposes: [0,2,1,3] then [0,1,3,2].
        if perm != [0, 1, 3, 2] {
            return None;
        }
        let (t2i, t2) = idx.producer_op(g, &src, "Transpose")?;
        if t2.attr_ints("perm")? != [0, 2, 1, 3] || idx.consumers_of(&src).len() != 1 {
            return None;
        }
        nodes.push(t2i);
        src = t2.inputs[0].clone();
    }
    let (ri, r) = idx.producer_op(g, &src, "Reshape")?;
    if idx.consumers_of(&src).len() != 1 || idx.consumers_of(&r.outputs[0]).len() != 1 {
        return None;
    }
    let shape = const_ints(g, idx, &r.inputs[1]).unwrap_or_default();
    nodes.push(ri);
    Some((r.inputs[0].clone(), shape, nodes))
}

fn match_attention(
    g: &Graph,
    idx: &Index,
    si: usize,
    dims: &Dims,
) -> std::result::Result<Matched, String> {
    let sm = &g.nodes[si];
    let rank = dims.get(&sm.inputs[0]).map_or(0, Vec::len);
    let axis = sm.attr_int("axis", -1);
    if rank != 4 || !(axis == -1 || axis == 3) {
        return Err(format!("the softmax is over axis {axis} of a rank-{rank} tensor, not the keys of [batch, heads, query, key] scores"));
    }
    let mut nodes = vec![si];
    // Scores: [Add(bias)] <- Mul/Div(scale) <- MatMul.
    let mut scores = sm.inputs[0].clone();
    let mut bias = None;
    if let Some((ai, add)) = idx.producer_op(g, &scores, "Add") {
        let (a, b) = (add.inputs[0].clone(), add.inputs[1].clone());
        let scaled_first = idx
            .producer
            .get(&a)
            .map(|&p| &g.nodes[p].op_type)
            .is_some_and(|op| op == "Mul" || op == "Div" || op == "MatMul");
        let (s, m) = if scaled_first { (a, b) } else { (b, a) };
        if idx.consumers_of(&add.outputs[0]).len() != 1 {
            return Err("the masked scores are used elsewhere".into());
        }
        nodes.push(ai);
        bias = Some(m);
        scores = s;
    }
    let mut scale = 1.0f64;
    for op in ["Mul", "Div"] {
        if let Some((ci, c)) = idx.producer_op(g, &scores, op) {
            let (a, b) = (c.inputs[0].clone(), c.inputs[1].clone());
            let (v, k) = match (scalar(g, idx, &b), scalar(g, idx, &a)) {
                (Some(k), _) => (a, k),
                (None, Some(k)) if op == "Mul" => (b, k),
                _ => {
                    return Err(format!(
                        "the scores are scaled by {op} with a value that is not a constant scalar"
                    ))
                }
            };
            scale = if op == "Mul" { k } else { 1.0 / k };
            nodes.push(ci);
            scores = v;
            break;
        }
    }
    let (qki, qk) = idx
        .producer_op(g, &scores, "MatMul")
        .ok_or("the scores are not a MatMul of queries and keys")?;
    nodes.push(qki);
    let (q, qs, qn) = head_split(g, idx, &qk.inputs[0], &[&[0, 2, 1, 3]]).ok_or_else(|| {
        match idx
            .producer
            .get(&qk.inputs[0])
            .map(|&i| g.nodes[i].op_type.as_str())
        {
            // Llama-family exports rotate Q and K (Mul by cos, Mul by a rotated half by sin,
            // Add) after splitting the heads.
            Some("Add") => "the queries are rotated (rotary embedding) after the head split: \
                            the fused op takes [batch, seq, width] inputs, so rotated heads stay \
                            composed"
                .to_string(),
            _ => "the queries are not split into heads by Reshape + Transpose [0,2,1,3]".into(),
        }
    })?;
    let (k, ks, kn) = head_split(g, idx, &qk.inputs[1], &[&[0, 2, 3, 1]])
        .ok_or("the keys are not split into heads and transposed")?;
    let (pvi, pv) = idx
        .sole_consumer(g, &sm.outputs[0])
        .filter(|(_, n)| n.op_type == "MatMul" && n.input(0) == Some(sm.outputs[0].as_str()))
        .ok_or("the probabilities are not multiplied by the values alone")?;
    let (v, vs, vn) = head_split(g, idx, &pv.inputs[1], &[&[0, 2, 1, 3]])
        .ok_or("the values are not split into heads by Reshape + Transpose")?;
    let (mti, mt) = idx
        .sole_consumer(g, &pv.outputs[0])
        .filter(|(_, n)| n.op_type == "Transpose" && n.attr_ints("perm") == Some(&[0, 2, 1, 3][..]))
        .ok_or("the context is not transposed back [0,2,1,3]")?;
    let (mri, mr) = idx
        .sole_consumer(g, &mt.outputs[0])
        .filter(|(_, n)| n.op_type == "Reshape")
        .ok_or("the heads are not merged by a Reshape")?;
    let merge = const_ints(g, idx, &mr.inputs[1]).ok_or(
        "the heads are merged with a shape computed at run time; run shape-simplify first",
    )?;
    for (name, s) in [("queries", &qs), ("keys", &ks), ("values", &vs)] {
        if s.len() != 4 {
            return Err(format!("the {name} are split into heads with a shape computed at run time; run shape-simplify first"));
        }
    }
    if qs != ks || qs != vs {
        return Err(format!(
            "queries, keys and values are split differently ({qs:?}, {ks:?}, {vs:?})"
        ));
    }
    let qd = dims.get(&q).ok_or("the queries' shape is unknown")?;
    if qd.len() != 3 || dims.get(&k) != Some(qd) || dims.get(&v) != Some(qd) {
        return Err("queries, keys and values are not equal [batch, seq, width] tensors (cross-attention or packed inputs)".into());
    }
    let width = qd[2] as i64;
    let heads = match (qs[2], qs[3]) {
        (h, _) if h > 0 => h,
        (-1, hd) if hd > 0 && width % hd == 0 => width / hd,
        _ => {
            return Err(format!(
                "cannot read the head count from the split shape {qs:?}"
            ))
        }
    };
    if !(qs[0] == 0 && qs[1] == 0) || width % heads != 0 {
        return Err(format!(
            "the split shape {qs:?} does not keep batch and sequence"
        ));
    }
    let flat = merge == [-1, width];
    if !flat
        && !(merge.len() == 3
            && merge[0] == 0
            && merge[1] == 0
            && (merge[2] == -1 || merge[2] == width))
    {
        return Err(format!(
            "the heads are merged to {merge:?}, not [batch, seq, width] or [batch x seq, width]"
        ));
    }
    nodes.extend(qn);
    nodes.extend(kn);
    nodes.extend(vn);
    nodes.extend([pvi, mti, mri]);
    if let Some(b) = &bias {
        let bd = dims.get(b).ok_or("the mask's shape is unknown")?;
        if bd.len() > 4 {
            return Err("the mask has more than 4 dimensions".into());
        }
    }
    Ok(Matched {
        nodes,
        q,
        k,
        v,
        bias,
        heads,
        scale: scale as f32,
        out: mr.outputs[0].clone(),
        flat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};
    use crate::passes::{const_fold::ConstFold, shape_simplify::ShapeSimplify};

    #[test]
    fn fuses_attention_after_shape_simplification() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        ConstFold.run(&mut opt).unwrap();
        let before = AttentionFusion.run(&mut opt.clone()).unwrap();
        assert!(
            before
                .skipped
                .iter()
                .all(|s| s.reason.contains("shape-simplify")),
            "{before:#?}"
        );
        ShapeSimplify.run(&mut opt).unwrap();
        let r = AttentionFusion.run(&mut opt).unwrap();
        assert_eq!(r.matched.len(), 2, "{r:#?}");
        assert_eq!(
            opt.graph.op_histogram().get("com.ferry.Attention"),
            Some(&2)
        );
        assert!(!opt.graph.op_histogram().contains_key("Softmax"));
        assert_same_outputs(&model, &opt, 1e-5);

        // An intermediate value that is also a graph output keeps the pattern as it is.
        let mut exposed = model.clone();
        ConstFold.run(&mut exposed).unwrap();
        ShapeSimplify.run(&mut exposed).unwrap();
        let inner = exposed
            .graph
            .nodes
            .iter()
            .find(|n| n.op_type == "Transpose")
            .unwrap()
            .outputs[0]
            .clone();
        exposed
            .graph
            .outputs
            .push(crate::ir::ValueInfo::untyped(inner.clone()));
        let r = AttentionFusion.run(&mut exposed).unwrap();
        assert_eq!(r.matched.len(), 1, "{r:#?}");
        assert!(
            r.skipped[0]
                .reason
                .contains(&format!("`{inner}` is also used outside")),
            "{r:#?}"
        );

        // After qkv-merge, Q, K and V are one Split's parts: the Split is absorbed.
        let mut merged = model.clone();
        ConstFold.run(&mut merged).unwrap();
        ShapeSimplify.run(&mut merged).unwrap();
        crate::passes::qkv_merge::QkvMerge.run(&mut merged).unwrap();
        let r = AttentionFusion.run(&mut merged).unwrap();
        let h = merged.graph.op_histogram();
        assert_eq!(
            (h.get("com.ferry.PackedAttention"), h.get("Split")),
            (Some(&2), None),
            "{r:#?}"
        );
        assert_same_outputs(&model, &merged, 1e-5);
    }
}
