//! `ferry verify`: run the original and the migrated model on multilingual probes and say,
//! language by language, how much the migration changed what the model computes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ferry_verify::{report, Budget, Job, VerifyOptions, VerifyReport};

use crate::progress::count_bar;

/// Arguments of `ferry verify`.
#[derive(clap::Args)]
#[command(
    after_help = "Tolerance presets: exact, f16, bf16, q8, q4, or bounds such as 'kld<=0.02,top1>=0.97' (decoders; for classifiers top1 bounds the share of texts given the same class) and 'cos>=0.999' (encoders), judged in every language.\n\nExamples:\n  ferry verify target/models/SmolLM2-135M out/smollm2-q8/model.gguf --tolerance q8\n  ferry verify target/models/all-MiniLM-L6-v2 out/minilm-q8/model.gguf --languages en,de,zh,ar\n  ferry verify orig/ migrated/ --probes corpora/udhr/dev.tsv --limit 3 --max-tokens 128 --out verify-out\n  ferry verify runs/langid-udhr/best langid-q4/ --tolerance q4   # a classifier trained by ferry: same class and accuracy per language\n  ferry verify --replay verify-out/report.json\n  ferry verify target/models/SmolLM2-135M target/models/SmolLM2-135M --dtype bf16 --tolerance bf16   # bf16 compute against the f32 run\n  ferry verify orig/ out/model.gguf --devices cuda:0   # the migrated model on a GPU, the original on the CPU"
)]
pub struct Args {
    /// The original model (Hugging Face folder, checkpoint with its config.json, GGUF).
    #[arg(required_unless_present = "replay")]
    original: Option<PathBuf>,
    /// The migrated model.
    #[arg(required_unless_present = "replay")]
    migrated: Option<PathBuf>,
    #[command(flatten)]
    probe: super::probe_args::ProbeArgs,
    /// Tolerance: a preset or bounds (see below).
    #[arg(long, default_value = "q8")]
    tolerance: String,
    /// tokenizer.json to feed both models (default: the original's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Skip the per-layer SQNR (decoders).
    #[arg(long)]
    no_attribution: bool,
    /// GGML-quantized matrices: f32 (dequantized at load, transformers' numerics, fast) or ggml (kept quantized with 8-bit activations, llama.cpp's CPU numerics: ferry's int8 GEMM on CPUs with AVX-512 VNNI or AVX2 + FMA, else candle's quantized kernels).
    #[arg(long, default_value = "f32", value_parser = ["f32", "ggml"])]
    kernels: String,
    #[command(flatten)]
    place: super::placing::PlaceArgs,
    /// The migrated model's compute dtype: auto (per device: f32 on CPU, bf16 on CUDA 8.0+, f16 on older CUDA and Metal), f32, f16, bf16. The original runs on the CPU in f32, the reference.
    #[arg(long)]
    dtype: Option<String>,
    /// Write report.json, report.md and report.svg here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Re-run the verification a report.json recorded (inputs checked by SHA-256) and say whether today's result matches.
    #[arg(long, value_name = "REPORT", conflicts_with_all = ["original", "migrated", "probes"])]
    replay: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry verify`.
pub fn run(a: Args) -> Result<ExitCode> {
    let bar = count_bar(0, "probes", a.quiet || a.json);
    let mut progress = |i: usize, n: usize| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    };
    if let Some(path) = &a.replay {
        let r = ferry_verify::replay(path, &mut progress)?;
        bar.finish_and_clear();
        print_replay(path, &r, a.json)?;
        return Ok(if r.differences.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let (Some(original), Some(migrated)) = (a.original.clone(), a.migrated.clone()) else {
        bail!("give ORIGINAL and MIGRATED, or --replay REPORT");
    };
    let kernels = a.kernels.parse().map_err(anyhow::Error::msg)?;
    let plan = placement(&a, &original, &migrated, kernels)?;
    let budget: Budget = a.tolerance.parse()?;
    let (probe_source, probes) = a.probe.load(&original)?;
    let job = Job {
        original,
        migrated,
        tokenizer: a.tokenizer.clone(),
        probe_source,
        probes,
        options: VerifyOptions {
            max_tokens: a.probe.max_tokens,
            budget,
            attribution: !a.no_attribution,
            kernels,
        },
        placement: plan,
    };
    let r = ferry_verify::run_job(&job, &mut progress)?;
    bar.finish_and_clear();
    if let Some(dir) = &a.out {
        write_report(dir, &r, a.quiet || a.json)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !a.quiet {
        print!("{}", report::markdown(&r));
    }
    Ok(verdict(&r))
}

/// A replay's outcome: whether today's result matches, and every difference.
fn print_replay(path: &std::path::Path, r: &ferry_verify::Replay, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "replayed": path, "matches": r.differences.is_empty(),
                "differences": r.differences, "today": r.today,
            }))?
        );
    } else if r.differences.is_empty() {
        println!(
            "replay of {}: today's result matches ({} languages, verdict {})",
            path.display(),
            r.today.result.languages.len(),
            if r.today.result.ok { "ok" } else { "FAIL" }
        );
    } else {
        println!("replay of {}: today's result differs:", path.display());
        for d in &r.differences {
            println!("  {d}");
        }
    }
    Ok(())
}

/// The migrated model's placement when `--devices`, `--map` or `--dtype` ask for one.
fn placement(
    a: &Args,
    original: &std::path::Path,
    migrated: &std::path::Path,
    kernels: ferry_runtime::Kernels,
) -> Result<Option<ferry_device::Plan>> {
    Ok(if a.place.requested(a.dtype.as_deref()) {
        let inventory = ferry_device::Inventory::detect();
        let workload = ferry_device::Workload {
            batch: 1,
            context: a.probe.max_tokens.max(1),
        };
        let mut opts = a
            .place
            .options(&inventory, "cpu", a.dtype.as_deref(), workload)?;
        // The original runs on the CPU in f32 beside the placed model.
        opts.held_on_cpu = ferry_runtime::planning::reference_bytes(original, kernels)?;
        let (_, plan) = ferry_runtime::planning::plan(migrated, kernels, &inventory, &opts)
            .with_context(|| format!("placing {}", migrated.display()))?;
        Some(plan)
    } else {
        None
    })
}

/// Writes `r` as report.json, report.md and report.svg into `dir`, naming them unless `quiet`.
pub(crate) fn write_report(dir: &std::path::Path, r: &VerifyReport, quiet: bool) -> Result<()> {
    let files = report::write(dir, r).with_context(|| format!("writing {}", dir.display()))?;
    if !quiet {
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

/// Exit 0 when every language is within tolerance; else 1, naming the worst language and
/// what it failed.
pub(crate) fn verdict(r: &VerifyReport) -> ExitCode {
    let v = &r.result;
    if v.ok {
        return ExitCode::SUCCESS;
    }
    let failing: Vec<_> = v.languages.iter().filter(|l| !l.ok()).collect();
    if failing.is_empty() {
        eprintln!(
            "error: every language within tolerance {} alone, but not all probes together: {}",
            v.budget,
            v.overall.failed.join("; ")
        );
    }
    let worst = v
        .worst
        .as_deref()
        .and_then(|w| failing.iter().find(|l| l.lang == w))
        .or(failing.first());
    if let Some(l) = worst {
        eprintln!(
            "error: {} of {} languages outside tolerance {}; worst: {} ({})",
            failing.len(),
            v.languages.len(),
            v.budget,
            l.lang,
            l.failed.join("; ")
        );
    }
    ExitCode::from(1)
}
