//! Shape-subgraph simplification: a Reshape whose target shape is computed at run time
//! (`Shape -> Gather -> Unsqueeze -> Concat`, as PyTorch exports `x.view(b, s, h, d)`) gets
//! a constant target instead, using ONNX's `0` (copy this dimension) and `-1` (infer).
//!
//! The graph is probed at two sets of input sizes (distinct primes): a target entry that is
//! the same in both probes is a literal, one that equals the data's own dimension in both is
//! `0`, and one other varying entry becomes `-1`. The new target must reproduce both probes'
//! output shapes, and the target may depend on input shapes only, never on input values.
//! The computation left dead is removed by `dce`.

use std::collections::HashSet;

use candle_core::Tensor;

use super::pattern::{constant, Index, Rewrite};
use super::probe::{run_all, PROBE_SIZES};
use super::{Pass, PassReport};
use crate::error::Result;
use crate::exec::reshape_dims;
use crate::ir::{Graph, OnnxModel};

/// Replaces computed Reshape targets by constants.
pub struct ShapeSimplify;

impl Pass for ShapeSimplify {
    fn name(&self) -> &'static str {
        "shape-simplify"
    }

    fn description(&self) -> &'static str {
        "give Reshape nodes constant targets (0 = copy, -1 = infer) instead of computed shapes"
    }

    fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
        let mut report = PassReport::new(self, model);
        let idx = Index::new(&model.graph);
        let candidates: Vec<usize> = model
            .graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Reshape" && n.domain.is_empty())
            .filter(|(_, n)| {
                n.input(1)
                    .is_some_and(|s| constant(&model.graph, &idx, s).is_none())
            })
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return Ok(report.finish(model));
        }
        let probes = [
            run_all(model, PROBE_SIZES[0])?,
            run_all(model, PROBE_SIZES[1])?,
        ];
        let mut new_targets = Vec::new();
        let mut rw = Rewrite::default();
        for i in candidates {
            let n = &model.graph.nodes[i];
            let (data, shape) = (n.inputs[0].as_str(), n.inputs[1].as_str());
            if let Some(input) = value_dependency(&model.graph, &idx, shape) {
                report.skip(&n.name, format!("the target shape depends on the values of input `{input}`, not only on its shape"));
                continue;
            }
            let allowzero = n.attr_int("allowzero", 0) != 0;
            let get = |p: usize, v: &str| -> Option<&Tensor> { probes[p].get(v) };
            let (Some(sa), Some(sb), Some(da), Some(db)) =
                (get(0, shape), get(1, shape), get(0, data), get(1, data))
            else {
                report.skip(&n.name, "the probe runs did not compute its inputs");
                continue;
            };
            let (sa, sb) = (crate::exec::ints(sa)?, crate::exec::ints(sb)?);
            let (da, db) = (da.dims().to_vec(), db.dims().to_vec());
            match constant_target(&sa, &sb, &da, &db, allowzero) {
                Ok(spec) => {
                    let ok = [(&da, &sa), (&db, &sb)].iter().all(|(d, s)| {
                        let want = reshape_dims(d, s, allowzero).ok();
                        want.is_some() && reshape_dims(d, &spec, false).ok() == want
                    });
                    if !ok {
                        report.skip(&n.name, format!("the constant target {spec:?} would not reproduce the probed shapes"));
                        continue;
                    }
                    let t = Tensor::new(spec.as_slice(), &candle_core::Device::Cpu)?;
                    let name = rw.constant(&model.graph, &format!("{}_shape", n.name), &t)?;
                    report
                        .matched
                        .push(format!("Reshape `{}`: target {spec:?}", n.name));
                    new_targets.push((i, name));
                }
                Err(why) => report.skip(&n.name, why),
            }
        }
        for (i, name) in new_targets {
            let node = &mut model.graph.nodes[i];
            node.inputs[1] = name;
            node.attrs.shift_remove("allowzero");
        }
        rw.apply(&mut model.graph)?;
        Ok(report.finish(model))
    }
}

/// The constant target for probed targets `sa`/`sb` of data shaped `da`/`db`.
fn constant_target(
    sa: &[i64],
    sb: &[i64],
    da: &[usize],
    db: &[usize],
    allowzero: bool,
) -> std::result::Result<Vec<i64>, String> {
    if sa.len() != sb.len() {
        return Err("the target's rank changes with the input shape".into());
    }
    let mut spec = Vec::with_capacity(sa.len());
    let mut infer = None;
    for i in 0..sa.len() {
        let copies = i < da.len() && i < db.len() && sa[i] == da[i] as i64 && sb[i] == db[i] as i64;
        if sa[i] == sb[i] && !(sa[i] == 0 && allowzero) {
            spec.push(sa[i]);
        } else if copies {
            // The new node copies with `0` and has no `allowzero`: a dimension that is 0 at
            // run time is copied as 0, as the computed target would have said.
            spec.push(0);
        } else if infer.is_none() && !sa.contains(&-1) {
            infer = Some(i);
            spec.push(-1);
        } else {
            return Err(format!("target dimension {i} varies with the input shape in a way a constant cannot express"));
        }
    }
    Ok(spec)
}

/// A graph input whose values (not just shape) reach `value`, if any.
fn value_dependency(g: &Graph, idx: &Index, value: &str) -> Option<String> {
    let inputs: HashSet<&str> = g.inputs.iter().map(|v| v.name.as_str()).collect();
    let mut stack = vec![value.to_string()];
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        if inputs.contains(v.as_str()) {
            return Some(v);
        }
        if let Some(&p) = idx.producer.get(&v) {
            let n = &g.nodes[p];
            if n.op_type == "Shape" || n.op_type == "Size" {
                continue;
            }
            stack.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};
    use crate::passes::{const_fold::ConstFold, dce::DeadNodeElimination};

    #[test]
    fn encoder_reshapes_get_constant_targets() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        ConstFold.run(&mut opt).unwrap();
        let r = ShapeSimplify.run(&mut opt).unwrap();
        DeadNodeElimination.run(&mut opt).unwrap();
        // 4 Reshapes per layer (q, k, v, merge) in 2 layers.
        assert!(r.matched.len() >= 8, "{r:#?}");
        assert!(
            opt.graph.op_histogram().get("Shape").copied().unwrap_or(0)
                < model.graph.op_histogram()["Shape"]
        );
        assert_same_outputs(&model, &opt, 1e-6);
    }

    #[test]
    fn targets_from_probes() {
        // [b, s, 4, 16] from data [b, s, 64]: copy, copy, literal, literal.
        assert_eq!(
            constant_target(
                &[2, 7, 4, 16],
                &[3, 11, 4, 16],
                &[2, 7, 64],
                &[3, 11, 64],
                false
            )
            .unwrap(),
            [0, 0, 4, 16]
        );
        // [b * s, 64]: one varying entry becomes -1.
        assert_eq!(
            constant_target(&[14, 64], &[33, 64], &[2, 7, 64], &[3, 11, 64], false).unwrap(),
            [-1, 64]
        );
        // [s, b, 64]: two varying entries that copy nothing.
        assert!(
            constant_target(&[7, 2, 64], &[11, 3, 64], &[2, 7, 64], &[3, 11, 64], false).is_err()
        );
        // The dynamo exporter's `allowzero=1` views copy too (the new node drops allowzero),
        // but a literal 0 under allowzero cannot be written as a copy.
        assert_eq!(
            constant_target(
                &[2, 7, 4, 16],
                &[3, 11, 4, 16],
                &[2, 7, 64],
                &[3, 11, 64],
                true
            )
            .unwrap(),
            [0, 0, 4, 16]
        );
        assert!(constant_target(&[0, 7], &[0, 11], &[5, 7], &[5, 11], true)
            .unwrap()
            .starts_with(&[-1]));
    }
}
