//! Optimization and fusion passes, and the [`PassManager`] that runs them in order.
//!
//! Each pass is a small module that rewrites an [`OnnxModel`] and returns a [`PassReport`]: what
//! it changed, and for every candidate it left alone, the node and the reason ("LayerNorm
//! at node `/encoder/layer.3/.../ReduceMean`: epsilon is not a constant"). Each has its own
//! test comparing outputs before and after on seeded inputs.

mod add_layer_norm;
mod attention;
mod bn_fold;
mod const_fold;
mod dce;
mod gelu;
mod identity;
mod layer_norm;
mod manager;
mod matmul_add;
mod matmul_bias;
mod pattern;
mod probe;
mod qkv_merge;
mod shape_simplify;
#[cfg(test)]
mod testing;
mod types;

use serde::Serialize;

pub use manager::{PassManager, PipelineReport, VerifyOptions};

use crate::error::Result;
use crate::ir::OnnxModel;

/// A graph rewrite.
pub trait Pass {
    /// Short name, as given to `--passes`.
    fn name(&self) -> &'static str;
    /// One line on what it does.
    fn description(&self) -> &'static str;
    /// Rewrites `model` in place.
    fn run(&self, model: &mut OnnxModel) -> Result<PassReport>;
}

/// A candidate a pass looked at and left alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skip {
    /// The node the candidate is anchored at.
    pub node: String,
    /// Why it was not rewritten.
    pub reason: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// The pass.
    pub pass: String,
    /// One line per rewrite.
    pub matched: Vec<String>,
    /// Candidates left alone, with reasons.
    pub skipped: Vec<Skip>,
    /// Node count before and after.
    pub nodes: (usize, usize),
    /// Output comparison after the pass, when the manager verified it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<manager::Verified>,
}

impl PassReport {
    fn new(pass: &dyn Pass, model: &OnnxModel) -> Self {
        PassReport {
            pass: pass.name().into(),
            nodes: (model.graph.nodes.len(), model.graph.nodes.len()),
            ..Default::default()
        }
    }

    fn skip(&mut self, node: &str, reason: impl Into<String>) {
        self.skipped.push(Skip {
            node: node.into(),
            reason: reason.into(),
        });
    }

    fn finish(mut self, model: &OnnxModel) -> Self {
        self.nodes.1 = model.graph.nodes.len();
        self
    }
}

/// Every pass, in the default pipeline order.
pub fn all() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(identity::IdentityRemoval),
        Box::new(const_fold::ConstFold),
        Box::new(shape_simplify::ShapeSimplify),
        Box::new(const_fold::ConstFold),
        // The shape computations a constant target left dead go before the fusions count
        // readers.
        Box::new(dce::DeadNodeElimination),
        Box::new(bn_fold::BatchNormFold),
        Box::new(matmul_add::MatMulAddToGemm),
        Box::new(layer_norm::LayerNormFusion),
        Box::new(gelu::GeluFusion),
        Box::new(qkv_merge::QkvMerge),
        Box::new(attention::AttentionFusion),
        Box::new(matmul_bias::MatMulBiasFusion),
        Box::new(add_layer_norm::AddLayerNormFusion),
        Box::new(dce::DeadNodeElimination),
    ]
}

/// The passes named in `names` (comma-separated list items), in the order given.
pub fn by_names(names: &[String]) -> Result<Vec<Box<dyn Pass>>> {
    let known = all();
    names
        .iter()
        .map(|n| {
            all().into_iter().find(|p| p.name() == n).ok_or_else(|| {
                let mut seen = std::collections::HashSet::new();
                let list: Vec<&str> = known
                    .iter()
                    .map(|p| p.name())
                    .filter(|n| seen.insert(*n))
                    .collect();
                crate::Error::Invalid(format!("unknown pass `{n}` (passes: {})", list.join(", ")))
            })
        })
        .collect()
}
