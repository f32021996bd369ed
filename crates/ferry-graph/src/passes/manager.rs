//! The pass pipeline: passes run in order; with verification on, the graph is re-run after
//! each pass on the same inputs and compared with the previous pass's outputs, so a pass that
//! breaks the tolerance is named.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use serde::Serialize;

use super::{Pass, PassReport};
use crate::error::Result;
use crate::exec::Executor;
use crate::ir::OnnxModel;
use crate::verify::{compare_outputs, symbol_sizes, synth_inputs};

/// How to verify each pass.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Inputs to run on; `None`: seeded random inputs (symbolic dimensions 2 and 16).
    pub inputs: Option<HashMap<String, Tensor>>,
    /// Allowed difference, relative to each output's scale (see [`crate::verify`]).
    pub rel_tolerance: f64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            inputs: None,
            rel_tolerance: 1e-4,
        }
    }
}

/// The comparison after one pass.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Largest absolute difference over the outputs.
    pub max_abs: f64,
    /// Largest element-wise relative difference over the outputs.
    pub max_rel: f64,
    /// Whether every output is within the tolerance.
    pub ok: bool,
}

/// What the pipeline did.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Each pass's report, in order.
    pub passes: Vec<PassReport>,
    /// Op counts before the first pass.
    pub ops_before: BTreeMap<String, usize>,
    /// Op counts after the last pass.
    pub ops_after: BTreeMap<String, usize>,
    /// The pass whose output broke the tolerance (the pipeline stopped there).
    pub failed: Option<String>,
}

impl PipelineReport {
    /// `(op, count before, count after)` for every op in either graph, sorted by op.
    pub fn op_counts(&self) -> Vec<(&str, usize, usize)> {
        let mut ops: Vec<&String> = self
            .ops_before
            .keys()
            .chain(self.ops_after.keys())
            .collect();
        ops.sort();
        ops.dedup();
        ops.into_iter()
            .map(|op| {
                let count = |m: &BTreeMap<String, usize>| m.get(op).copied().unwrap_or(0);
                (op.as_str(), count(&self.ops_before), count(&self.ops_after))
            })
            .collect()
    }
}

/// An ordered list of passes.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    verify: Option<VerifyOptions>,
}

impl PassManager {
    /// A pipeline of `passes`, run in order.
    pub fn new(passes: Vec<Box<dyn Pass>>) -> Self {
        PassManager {
            passes,
            verify: None,
        }
    }

    /// Verifies each pass.
    pub fn verify(mut self, opts: VerifyOptions) -> Self {
        self.verify = Some(opts);
        self
    }

    /// Runs the pipeline over `model`. On a verification failure the model is left as the
    /// failing pass made it and [`PipelineReport::failed`] names the pass.
    pub fn run(
        &self,
        model: &mut OnnxModel,
        mut progress: impl FnMut(&PassReport),
    ) -> Result<PipelineReport> {
        let ops_before = model.graph.op_histogram();
        let mut reference = None;
        let inputs = match &self.verify {
            Some(v) => {
                let inputs = match &v.inputs {
                    Some(i) => i.clone(),
                    None => synth_inputs(&model.graph, &symbol_sizes(&model.graph, &[2, 16]), 42)?,
                };
                reference = Some(run(model, &inputs)?);
                Some(inputs)
            }
            None => None,
        };
        let mut reports = Vec::new();
        let mut failed = None;
        for pass in &self.passes {
            let mut report = pass.run(model)?;
            if let (Some(inputs), Some(prev), Some(opts)) = (&inputs, &reference, &self.verify) {
                let got = run(model, inputs)?;
                let cmp = compare_outputs(prev, &got, opts.rel_tolerance)?;
                let v = Verified {
                    max_abs: cmp.iter().filter_map(|c| c.max_abs).fold(0.0, f64::max),
                    max_rel: cmp.iter().filter_map(|c| c.max_rel).fold(0.0, f64::max),
                    ok: cmp.iter().all(|c| c.ok),
                };
                if !v.ok {
                    failed = Some(pass.name().to_string());
                }
                report.verified = Some(v);
                reference = Some(got);
            }
            progress(&report);
            reports.push(report);
            if failed.is_some() {
                break;
            }
        }
        Ok(PipelineReport {
            passes: reports,
            ops_before,
            ops_after: model.graph.op_histogram(),
            failed,
        })
    }
}

fn run(model: &OnnxModel, inputs: &HashMap<String, Tensor>) -> Result<IndexMap<String, Tensor>> {
    Executor::new(model, &Device::Cpu)?.run(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{assert_same_outputs, load_fixture};
    use crate::passes::{all, Pass, PassReport};

    /// A broken pass: turns every Relu into Neg.
    struct Breaker;
    impl Pass for Breaker {
        fn name(&self) -> &'static str {
            "breaker"
        }
        fn description(&self) -> &'static str {
            "breaks the graph"
        }
        fn run(&self, model: &mut OnnxModel) -> Result<PassReport> {
            for n in &mut model.graph.nodes {
                if n.op_type == "Relu" {
                    n.op_type = "Neg".into();
                }
            }
            Ok(PassReport::new(self, model))
        }
    }

    #[test]
    fn verification_names_the_pass_that_broke_the_outputs() {
        let mut model = load_fixture("cnn.onnx");
        let r = PassManager::new(vec![
            Box::new(super::super::identity::IdentityRemoval),
            Box::new(Breaker),
            Box::new(super::super::dce::DeadNodeElimination),
        ])
        .verify(VerifyOptions::default())
        .run(&mut model, |_| {})
        .unwrap();
        assert_eq!(r.failed.as_deref(), Some("breaker"));
        assert_eq!(r.passes.len(), 2, "the pipeline stops at the failing pass");
        assert!(r.passes[0].verified.as_ref().unwrap().ok);
    }

    #[test]
    fn full_pipeline_on_the_encoder() {
        let model = load_fixture("encoder.onnx");
        let mut opt = model.clone();
        let r = PassManager::new(all())
            .verify(VerifyOptions::default())
            .run(&mut opt, |_| {})
            .unwrap();
        assert!(r.failed.is_none(), "{r:#?}");
        for op in [
            "com.ferry.PackedAttention",
            "com.ferry.AddLayerNorm",
            "com.ferry.MatMulBiasGelu",
        ] {
            assert!(
                r.ops_after.contains_key(op),
                "{op} missing: {:?}",
                r.ops_after
            );
        }
        assert!(
            opt.graph.nodes.len() * 3 < model.graph.nodes.len(),
            "{} -> {}",
            model.graph.nodes.len(),
            opt.graph.nodes.len()
        );
        assert_same_outputs(&model, &opt, 1e-4);
    }
}
