//! `ferry place`: plan where a model's units go on this machine's devices (weights, KV cache,
//! activations per device), then load it there and verify it against the f32 CPU run, per
//! language.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_device::{Inventory, ModelCost, Plan, Workload};
use ferry_runtime::Kernels;
use ferry_verify::{report, Budget, Job, VerifyOptions};
use serde_json::json;

use super::placing::{plan_table, PlaceArgs};
use crate::progress::count_bar;
use crate::units::human_bytes;

/// Arguments of `ferry place`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry place target/models/SmolLM2-135M --dry-run\n  ferry place target/models/SmolLM2-135M --dtype bf16                 # bf16 on the CPU, verified against f32 per language\n  ferry place model.gguf --devices cuda:0,cpu --max-memory cuda:0=6GiB --context 8192 --dry-run\n  ferry place target/models/SmolLM2-135M --devices cuda:0,cuda:1 --max-memory cuda:0=8GiB,cuda:1=8GiB --dry-run --json\n  ferry place model --devices cuda:0,cpu --map 'layers\\.(2[0-9])=cpu' --map 'head=cuda:0'\n\nUnits: a decoder's embed, layers.N and head (final norm + output head); an encoder's embeddings and layer.N (one device); an ONNX graph's nodes by the block their name carries. Memory per device = weights (in its compute dtype, quantized matrices as held) + KV cache (2 x kv_heads x head_dim x context x batch per block) + the largest activation peak of its units."
)]
pub struct Args {
    /// The model: Hugging Face folder, GGUF, checkpoint with its config.json, ferry model folder or ONNX graph.
    model: PathBuf,
    #[command(flatten)]
    place: PlaceArgs,
    /// Compute dtype for every device: auto (f32 on CPU, bf16 on CUDA 8.0+, f16 on older CUDA and Metal), f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Tokens per sequence to size the KV cache and activations for.
    #[arg(long, default_value_t = 4096)]
    context: usize,
    /// Sequences per forward pass to size for.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// GGML-quantized matrices: ggml (kept quantized) or f32 (dequantized at load).
    #[arg(long, default_value = "ggml", value_parser = ["ggml", "f32"])]
    kernels: String,
    /// Print the plan only: load nothing, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Verification tolerance: a preset (exact, f16, bf16, q8, q4) or bounds (default: the placement's compute dtype's preset).
    #[arg(long)]
    tolerance: Option<String>,
    #[command(flatten)]
    probe: super::probe_args::ProbeArgs,
    /// Write the verification's report.json, report.md and report.svg here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output, no tables.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry place`.
pub fn run(a: Args) -> Result<ExitCode> {
    let kernels: Kernels = a.kernels.parse().map_err(anyhow::Error::msg)?;
    let inventory = Inventory::detect();
    let workload = Workload {
        batch: a.batch.max(1),
        context: a.context.max(1),
    };
    let mut opts = a
        .place
        .options(&inventory, "auto", Some(&a.dtype), workload)?;
    if !a.dry_run {
        // The verification's f32 reference shares the CPU with the placed model.
        opts.held_on_cpu = ferry_runtime::planning::reference_bytes(&a.model, kernels)?;
    }
    let (cost, plan) = ferry_runtime::planning::plan(&a.model, kernels, &inventory, &opts)
        .with_context(|| format!("placing {}", a.model.display()))?;
    if !a.quiet && !a.json {
        print_plan(&a, &cost, &plan, workload);
    }
    if a.dry_run {
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"dry_run": true, "model": a.model, "cost": cost, "plan": plan})
                )?
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let job = verification(&a, &plan, kernels)?;
    let bar = count_bar(0, "probes", a.quiet || a.json);
    let r = ferry_verify::run_job(&job, |i, n| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    })?;
    bar.finish_and_clear();
    if let Some(dir) = &a.out {
        super::verify::write_report(dir, &r, a.quiet || a.json)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"dry_run": false, "model": a.model, "cost": cost, "plan": plan, "verification": r})
            )?
        );
    } else if !a.quiet {
        println!("\nverified against the f32 CPU run:");
        print!("{}", report::markdown(&r));
    }
    Ok(super::verify::verdict(&r))
}

/// The model, its units and the table of what each device holds.
fn print_plan(a: &Args, cost: &ModelCost, plan: &Plan, workload: Workload) {
    println!(
        "{} ({}), {} unit{}, batch {} x context {}{}",
        a.model.display(),
        cost.arch,
        cost.units.len(),
        if cost.units.len() == 1 { "" } else { "s" },
        workload.batch,
        workload.context,
        if cost.splittable {
            ""
        } else {
            "; runs on one device"
        }
    );
    print!("{}", plan_table(plan));
    let total: u64 = plan.devices.iter().map(|d| d.used_bytes()).sum();
    println!("total {}", human_bytes(total));
}

/// The placed model against its f32 CPU run, on the probes, judged by `--tolerance` or the
/// budget the placement's dtypes imply.
fn verification(a: &Args, plan: &Plan, kernels: Kernels) -> Result<Job> {
    let budget: Budget = match &a.tolerance {
        Some(t) => t.parse()?,
        None => Budget::for_placement(plan).unwrap_or_else(|| Budget::for_dtype("f32")),
    };
    let (probe_source, probes) = a.probe.load(&a.model)?;
    Ok(Job {
        original: a.model.clone(),
        migrated: a.model.clone(),
        tokenizer: None,
        probe_source,
        probes,
        options: VerifyOptions {
            max_tokens: a.probe.max_tokens,
            budget,
            attribution: true,
            kernels,
        },
        placement: Some(plan.clone()),
    })
}
