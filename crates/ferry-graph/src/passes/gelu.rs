//! GELU fusion: `0.5 x (1 + erf(x / sqrt 2))` and the tanh approximation
//! `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, in any association of the final
//! products, become one node: standard `Gelu` from opset 20, else ferry's `com.ferry.Gelu` /
//! `com.ferry.GeluTanh` (written with an ONNX function body, so other runtimes load them).

use super::pattern::{close, other_input, scalar, Index, Rewrite};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, OnnxModel};
use crate::onnx::FERRY_DOMAIN;

/// Fuses GELU activations.
pub struct GeluFusion;

impl Pass for GeluFusion {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn description(&self) -> &'static str {
        "fuse the erf and tanh GELU patterns into one op"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let standard = model.opset() >= 20;
        let g = &model.graph;
        let types = super::types::infer(g);
        let idx = Index::new(g);
        let mut rw = Rewrite::default();
        for (i, n) in g.nodes.iter().enumerate() {
            let tanh = match n.op_type.as_str() {
                "Erf" => false,
                "Tanh" => true,
                _ => continue,
            };
            if !n.domain.is_empty() {
                continue;
            }
            let matched = if tanh {
                match_tanh(g, &idx, i)
            } else {
                match_erf(g, &idx, i)
            };
            let matched = matched.and_then(|(nodes, x, out)| match idx.escaping(g, &nodes, &out) {
                Some(v) => Err(format!(
                    "the intermediate value `{v}` is also used outside the pattern"
                )),
                None if types.get(&x).is_some_and(|d| *d != ferry_io::DType::F32) => Err(format!(
                    "the input is {}; the fused op's ONNX body is written for f32",
                    types[&x]
                )),
                None => Ok((nodes, x, out)),
            });
            match matched {
                Ok((nodes, _, _)) if rw.claimed(&nodes) => {}
                Ok((nodes, x, out)) => {
                    let name = g.fresh_name(&format!(
                        "{}_Gelu",
                        n.name.trim_end_matches("/Erf").trim_end_matches("/Tanh")
                    ));
                    let mut node = Node::new(name.clone(), "Gelu", vec![x], vec![out]);
                    if standard {
                        if tanh {
                            node = node.with_attr("approximate", Attr::String("tanh".into()));
                        }
                    } else {
                        node.domain = FERRY_DOMAIN.into();
                        if tanh {
                            node.op_type = "GeluTanh".into();
                        }
                    }
                    let last = *nodes.iter().max().expect("matched nodes");
                    rw.remove(nodes.iter().copied());
                    rw.add(last, node);
                    report.matched.push(format!(
                        "{} `{name}` ({} form)",
                        if standard { "Gelu" } else { "com.ferry.Gelu" },
                        if tanh { "tanh" } else { "erf" }
                    ));
                }
                Err(why) => report.skip(&n.name, format!("{}: {why}", n.op_type)),
            }
        }
        rw.apply(&mut model.graph)?;
        Ok(report.finish(model))
    }
}

type Match = std::result::Result<(Vec<usize>, String, String), String>;

fn match_erf(g: &Graph, idx: &Index, e: usize) -> Match {
    let t = &g.nodes[e].inputs[0];
    let &ti = idx.producer.get(t).ok_or("its input is a graph input")?;
    let tn = &g.nodes[ti];
    let x = match tn.op_type.as_str() {
        "Div"
            if tn
                .input(1)
                .and_then(|c| scalar(g, idx, c))
                .is_some_and(|c| close(c, std::f64::consts::SQRT_2)) =>
        {
            tn.inputs[0].clone()
        }
        "Mul" => {
            let (a, b) = (tn.inputs[0].as_str(), tn.inputs[1].as_str());
            let is_c = |v: &str| {
                scalar(g, idx, v).is_some_and(|c| close(c, std::f64::consts::FRAC_1_SQRT_2))
            };
            if is_c(b) {
                a.to_string()
            } else if is_c(a) {
                b.to_string()
            } else {
                return Err("its input is not x / sqrt(2)".into());
            }
        }
        _ => return Err("its input is not x / sqrt(2) (not a GELU)".into()),
    };
    let mut nodes = vec![ti, e];
    let out = tail(g, idx, &g.nodes[e].outputs[0], &x, &mut nodes)?;
    Ok((nodes, x, out))
}

fn match_tanh(g: &Graph, idx: &Index, th: usize) -> Match {
    let not = "its input is not sqrt(2/pi) (x + 0.044715 x^3) (a plain tanh, not GELU)";
    let t = &g.nodes[th].inputs[0];
    let (ki, k) = idx.producer_op(g, t, "Mul").ok_or(not)?;
    let s = scaled_by(g, idx, k, (2.0 / std::f64::consts::PI).sqrt()).ok_or(not)?;
    let (si, add) = idx.producer_op(g, &s, "Add").ok_or(not)?;
    let (a, b) = (add.inputs[0].clone(), add.inputs[1].clone());
    // One operand is x, the other 0.044715 x^3.
    for (x, cubic) in [(a.clone(), b.clone()), (b, a)] {
        let Some((ci, c)) = idx.producer_op(g, &cubic, "Mul") else {
            continue;
        };
        let Some(cube) = scaled_by(g, idx, c, 0.044715) else {
            continue;
        };
        let Some(cube_nodes) = cube_of(g, idx, &cube, &x) else {
            continue;
        };
        let mut nodes = vec![ki, si, ci, th];
        nodes.extend(cube_nodes);
        let out = tail(g, idx, &g.nodes[th].outputs[0], &x, &mut nodes)?;
        return Ok((nodes, x, out));
    }
    Err(not.into())
}

/// For `Mul(v, c)` with `c` close to `factor`: `v`.
fn scaled_by(g: &Graph, idx: &Index, mul: &Node, factor: f64) -> Option<String> {
    let (a, b) = (mul.input(0)?, mul.input(1)?);
    if scalar(g, idx, b).is_some_and(|c| close(c, factor)) {
        Some(a.to_string())
    } else if scalar(g, idx, a).is_some_and(|c| close(c, factor)) {
        Some(b.to_string())
    } else {
        None
    }
}

/// The nodes computing `v = x^3` (`Pow(x, 3)` or `x * x * x`).
fn cube_of(g: &Graph, idx: &Index, v: &str, x: &str) -> Option<Vec<usize>> {
    if let Some((pi, p)) = idx.producer_op(g, v, "Pow") {
        return (p.input(0) == Some(x) && p.input(1).and_then(|e| scalar(g, idx, e)) == Some(3.0))
            .then(|| vec![pi]);
    }
    let (mi, m) = idx.producer_op(g, v, "Mul")?;
    let sq = other_input(m, x)?;
    let (qi, q) = idx.producer_op(g, sq, "Mul")?;
    (q.input(0) == Some(x) && q.input(1) == Some(x)).then(|| vec![mi, qi])
}

/// From `f` (erf or tanh output): `o = f + 1`, then `0.5 * x * o` in any association.
/// Pushes the matched nodes; returns the final output.
fn tail(
    g: &Graph,
    idx: &Index,
    f: &str,
    x: &str,
    nodes: &mut Vec<usize>,
) -> std::result::Result<String, String> {
    let (ai, add) = idx
        .sole_consumer(g, f)
        .filter(|(_, n)| n.op_type == "Add")
        .ok_or("1 is not added to its output")?;
    if other_input(add, f).and_then(|c| scalar(g, idx, c)) != Some(1.0) {
        return Err("1 is not added to its output".into());
    }
    nodes.push(ai);
    let o = &add.outputs[0];
    let (m1i, m1) = idx
        .sole_consumer(g, o)
        .filter(|(_, n)| n.op_type == "Mul")
        .ok_or("1 + f(x) is not multiplied")?;
    nodes.push(m1i);
    let other = other_input(m1, o).ok_or("1 + f(x) is not multiplied")?;
    let is_half = |v: &str| scalar(g, idx, v) == Some(0.5);
    let second = |v: &str, want_x: bool| -> Option<(usize, String)> {
        let (i, m) = idx
            .sole_consumer(g, v)
            .filter(|(_, n)| n.op_type == "Mul")?;
        let w = other_input(m, v)?;
        let ok = if want_x { w == x } else { is_half(w) };
        ok.then(|| (i, m.outputs[0].clone()))
    };
    if other == x {
        let (i, out) = second(&m1.outputs[0], false).ok_or("x (1 + f(x)) is not halved")?;
        nodes.push(i);
        return Ok(out);
    }
    if is_half(other) {
        let (i, out) =
            second(&m1.outputs[0], true).ok_or("(1 + f(x)) / 2 is not multiplied by x")?;
        nodes.push(i);
        return Ok(out);
    }
    let (hi, h) = idx
        .producer_op(g, other, "Mul")
        .ok_or("1 + f(x) is multiplied by something other than x / 2")?;
    if other_input(h, x).is_some_and(is_half) && idx.consumers_of(other).len() == 1 {
        nodes.push(hi);
        return Ok(m1.outputs[0].clone());
    }
    Err("1 + f(x) is multiplied by something other than x / 2".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};

    fn fuse(file: &str) -> (OnnxModel, OnnxModel, super::super::PassReport) {
        let model = load_fixture(file);
        let mut opt = model.clone();
        crate::passes::const_fold::ConstFold.run(&mut opt).unwrap();
        let r = GeluFusion.run(&mut opt).unwrap();
        (model, opt, r)
    }

    #[test]
    fn erf_form() {
        let (model, opt, r) = fuse("encoder.onnx");
        assert_eq!(r.matched.len(), 2, "{r:#?}");
        assert!(!opt.graph.op_histogram().contains_key("Erf"));
        // The pooler's tanh is explained, not fused.
        assert!(
            r.skipped.iter().any(|s| s.reason.contains("plain tanh")),
            "{r:#?}"
        );
        assert_same_outputs(&model, &opt, 1e-5);
    }

    #[test]
    fn tanh_form() {
        let (model, opt, r) = fuse("encoder_tanh.onnx");
        assert_eq!(r.matched.len(), 1, "{r:#?}");
        assert_eq!(opt.graph.op_histogram().get("com.ferry.GeluTanh"), Some(&1));
        assert_same_outputs(&model, &opt, 1e-5);
    }

    #[test]
    fn dynamo_association() {
        let (model, opt, r) = fuse("encoder_opset18.onnx");
        assert_eq!(r.matched.len(), 2, "{r:#?}");
        assert_same_outputs(&model, &opt, 1e-5);
    }
}
