//! The verify-outputs stage: the original and the written model run on multilingual probes
//! (each loaded as its consumer loads it, by ferry-runtime) and judged per language by the
//! tolerance the conversion implies.

use std::path::Path;

use ferry_io::convert::Plan;
use ferry_io::DType;
use ferry_runtime::ArchConfig;
use ferry_verify::probes::{self, ProbeOptions};
use ferry_verify::{Budget, Job, VerifyOptions, VerifyReport};
use serde::Serialize;

use crate::Result;

/// How to verify outputs (`None` in [`crate::MigrateOptions::outputs`] skips the stage).
#[derive(Debug, Clone)]
pub struct OutputCheck {
    /// Probe corpus (default: the embedded UDHR test articles, 47 languages).
    pub probes: Option<std::path::PathBuf>,
    /// Only these languages.
    pub languages: Vec<String>,
    /// Probe texts per language (`None`: the model kind's default, see
    /// [`ferry_verify::probes::default_limit`]).
    pub limit: Option<usize>,
    /// Tokens per probe.
    pub max_tokens: usize,
    /// The tolerance (default: implied by the conversion's lossiest weight type).
    pub tolerance: Option<Budget>,
    /// How GGML-quantized matrices are multiplied.
    pub kernels: ferry_runtime::Kernels,
    /// Where the written model runs (planned for it on this machine); `None`: the CPU in f32.
    pub placement: Option<ferry_device::PlanOptions>,
}

impl Default for OutputCheck {
    fn default() -> Self {
        OutputCheck {
            probes: None,
            languages: Vec::new(),
            limit: None,
            max_tokens: 64,
            tolerance: None,
            kernels: ferry_runtime::Kernels::F32,
            placement: None,
        }
    }
}

/// What the stage found, or why it did not run.
#[derive(Debug, Clone, Serialize)]
pub struct OutputsRecord {
    /// Why the stage was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<VerifyReport>,
}

impl OutputsRecord {
    pub(crate) fn skipped(why: impl Into<String>) -> OutputsRecord {
        OutputsRecord {
            skipped: Some(why.into()),
            report: None,
        }
    }

    /// Whether the outputs passed (a skipped check does not fail the migration).
    pub fn ok(&self) -> bool {
        self.report.as_ref().is_none_or(|r| r.result.ok)
    }
}

/// Bits per weight of a type, to find the lossiest one a plan involves.
fn bits(d: DType) -> f64 {
    8.0 * d.block_bytes() as f64 / d.block_elems() as f64
}

/// The tolerance a conversion implies: the preset of the lowest-precision weight type among
/// the plan's matrices, on either side (a dequantized GGUF is judged as quantized).
pub fn implied_budget(plan: &Plan) -> Budget {
    let lossiest = plan
        .entries
        .iter()
        .filter(|e| e.shape.len() >= 2 && (e.from.is_float() || e.from.is_quantized()))
        .flat_map(|e| [e.from, e.to])
        .min_by(|a, b| bits(*a).total_cmp(&bits(*b)));
    Budget::for_dtype(lossiest.map_or("f32", DType::name))
}

/// Runs the stage: `original` (as given) against the written `migrated` model, judged by
/// `check.tolerance`, else by `implied` (what the conversion implies).
pub fn run(
    original: &Path,
    migrated: &Path,
    implied: Budget,
    check: &OutputCheck,
) -> Result<OutputsRecord> {
    let arch = match runnable(original, migrated) {
        Ok(a) => a,
        Err(why) => return Ok(OutputsRecord::skipped(why)),
    };
    let popts = ProbeOptions {
        languages: check.languages.clone(),
        limit: check.limit.or(probes::default_limit(&arch)),
    };
    let (probe_source, probes) = probes::load(check.probes.as_deref(), &popts)?;
    let plan = placement(original, migrated, check)?;
    // The placement's compute adds its own error to the conversion's.
    let implied = match plan.as_ref().and_then(Budget::for_placement) {
        Some(b) => implied.looser(b),
        None => implied,
    };
    let job = Job {
        original: original.to_path_buf(),
        migrated: migrated.to_path_buf(),
        tokenizer: None,
        probe_source,
        probes,
        options: VerifyOptions {
            max_tokens: check.max_tokens,
            budget: check.tolerance.clone().unwrap_or(implied),
            attribution: true,
            kernels: check.kernels,
        },
        placement: plan,
    };
    verify(&job)
}

/// The architecture of `original` when the runtime can run both models on the probes, else
/// why the stage is skipped.
fn runnable(original: &Path, migrated: &Path) -> std::result::Result<ArchConfig, String> {
    // Only architectures the runtime knows can be run; say why others are skipped.
    let arch = match ferry_runtime::Model::probe(original) {
        Ok(a) => a,
        Err(e) => return Err(format!("the original cannot be run: {e}")),
    };
    if matches!(arch, ArchConfig::Graph(_)) && !original.with_file_name("tokenizer.json").is_file()
    {
        return Err(format!(
            "no tokenizer.json beside {} to turn the probe texts into input_ids",
            original.display()
        ));
    }
    if let Err(e) = ferry_runtime::Model::probe(migrated) {
        return Err(format!(
            "the written model cannot be run (with --keep-names its names are not the consumer's): {e}"
        ));
    }
    Ok(arch)
}

/// Where `migrated` runs when `check.placement` plans it on this machine (the original
/// running on the CPU in f32 beside it); `None`: the CPU in f32.
fn placement(
    original: &Path,
    migrated: &Path,
    check: &OutputCheck,
) -> Result<Option<ferry_device::Plan>> {
    let Some(opts) = &check.placement else {
        return Ok(None);
    };
    let inventory = ferry_device::Inventory::detect();
    let run = ferry_verify::Error::from;
    // The original runs on the CPU in f32 beside the placed model.
    let opts = ferry_device::PlanOptions {
        held_on_cpu: ferry_runtime::planning::reference_bytes(original, check.kernels)
            .map_err(run)?,
        ..opts.clone()
    };
    let (_, plan) =
        ferry_runtime::planning::plan(migrated, check.kernels, &inventory, &opts).map_err(run)?;
    Ok(Some(plan))
}

/// Runs `job`; a model with no tokenizer to make the probes' ids is skipped, not failed.
fn verify(job: &Job) -> Result<OutputsRecord> {
    let report = match ferry_verify::run_job(job, |_, _| {}) {
        Ok(r) => r,
        // No tokenizer, no probe ids: say so rather than fail the migration.
        Err(ferry_verify::Error::Runtime(e @ ferry_runtime::Error::Tokenizer { .. })) => {
            return Ok(OutputsRecord::skipped(format!(
                "no tokenizer to turn the probe texts into token ids: {e}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(OutputsRecord {
        skipped: None,
        report: Some(report),
    })
}
