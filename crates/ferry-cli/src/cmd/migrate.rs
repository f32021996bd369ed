//! `ferry migrate`: the whole pipeline with a report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ferry_io::convert::TargetFormat;
use ferry_migrate::{migrate, Event, Input, MigrateOptions, Target};
use serde_json::json;

use crate::args::{TransformArgs, WriteArgs};
use crate::progress::bytes_bar;

/// Arguments of `ferry migrate`.
#[derive(clap::Args)]
#[command(
    after_help = "With no INPUT, migrates ferry's built-in demo model (a language identifier over 47 languages, trained by ferry) to a q4_k GGUF and shows, language by language, how much the quantization changed its predictions.\n\nExit status: 0 when every tensor verified, 1 when verification failed, 2 on error.\n\nExamples:\n  ferry migrate\n  ferry migrate model.pth --out migrated --dtype f16\n  ferry migrate ./all-MiniLM-L6-v2 --to gguf --quant q8_0 --out minilm-q8\n  ferry migrate ./SmolLM2-135M --to gguf --quant auto --budget 'kld<=0.05' --out smollm2-auto   # types per tensor, verified per language\n  ferry migrate runs/langid-udhr/best --to gguf --quant q8_0 --out langid-q8   # + per-language accuracy before/after\n  ferry migrate sentence-transformers/all-MiniLM-L6-v2 --to safetensors --dtype bf16 --keep f32:'LayerNorm'\n  ferry migrate model.onnx --out model-opt            # optimize the graph, verify every pass and the result"
)]
pub struct Args {
    /// Model to migrate: file, model folder, or cached hub id (default: the built-in demo model, to a q4_k GGUF unless --to/--dtype/--quant say otherwise).
    pub input: Option<PathBuf>,
    /// Output folder for the model, its companion files and report.md/report.json.
    #[arg(long, short, default_value = "ferry-out")]
    pub out: PathBuf,
    /// Output format (default: safetensors; onnx for an .onnx input, which is optimized as a graph).
    #[arg(long, value_name = "FORMAT", value_parser = ["safetensors", "gguf", "npz", "pth", "onnx"])]
    pub to: Option<String>,
    /// For an .onnx input: the optimization passes to run, comma-separated (default: all; see `ferry optimize --list-passes`).
    #[arg(long, value_delimiter = ',')]
    pub passes: Vec<String>,
    #[command(flatten)]
    pub transform: TransformArgs,
    /// Download a hub model missing from the local Hugging Face cache (off by default: ferry is offline unless asked).
    #[arg(long)]
    pub online: bool,
    /// For a model folder from `ferry train`: evaluate the original and migrated weights per language on this corpus (default: the test file recorded at training).
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// File name of the written model, without extension.
    #[arg(long, default_value = "model")]
    pub name: String,
    /// Skip running both models on the probes after writing (verify-outputs).
    #[arg(long)]
    pub no_verify_outputs: bool,
    /// verify-outputs: the probes.
    #[command(flatten, next_help_heading = "Verify outputs")]
    pub probe: super::probe_args::ProbeArgs,
    /// verify-outputs: GGML-quantized matrices dequantized to f32 (transformers' numerics) or run on candle's ggml kernels (llama.cpp's CPU numerics).
    #[arg(long, default_value = "f32", value_parser = ["f32", "ggml"])]
    pub kernels: String,
    /// verify-outputs: tolerance preset (exact, f16, bf16, q8, q4) or bounds ('kld<=0.02,top1>=0.97'); default: implied by the conversion.
    #[arg(long)]
    pub tolerance: Option<String>,
    /// verify-outputs: where the written model runs (the original runs on the CPU in f32, the reference); see `ferry place --help`.
    #[command(flatten)]
    pub place: super::placing::PlaceArgs,
    /// verify-outputs: the written model's compute dtype: auto (per device: f32 on CPU, bf16 on CUDA 8.0+, f16 on older CUDA and Metal), f32, f16, bf16.
    #[arg(long, value_name = "DTYPE")]
    pub compute_dtype: Option<String>,
    #[command(flatten, next_help_heading = "Output")]
    pub write: WriteArgs,
}

/// The planner's options for the written model when `--devices`, `--map`, `--max-memory` or
/// `--compute-dtype` ask for a placement (sized for one probe: batch 1, `--max-tokens`).
fn placement(a: &Args) -> Result<Option<ferry_device::PlanOptions>> {
    let dtype = a.compute_dtype.as_deref();
    if !a.place.requested(dtype) {
        return Ok(None);
    }
    let workload = ferry_device::Workload {
        batch: 1,
        context: a.probe.max_tokens.max(1),
    };
    let inventory = ferry_device::Inventory::detect();
    Ok(Some(a.place.options(&inventory, "cpu", dtype, workload)?))
}

/// Runs `ferry migrate`.
pub fn run(mut a: Args) -> Result<ExitCode> {
    // The demo shows the whole promise: a multilingual model quantized, then judged per language.
    let t = &a.transform;
    let plain = t.dtype.is_none() && t.quant.is_none() && a.write.shard_size.is_none();
    if a.input.is_none() && a.to.is_none() && plain {
        a.to = Some("gguf".into());
        a.transform.quant = Some("q4_k".into());
    }
    let opts = options(&a)?;
    let chatty = !a.write.quiet && !a.write.json;
    let mut bar = None;
    let mut on_event = |ev: Event<'_>| match ev {
        Event::WriteTotal(n) => bar = Some(bytes_bar(n, !chatty)),
        Event::TensorWritten { name, bytes } => {
            if let Some(b) = &bar {
                b.set_message(name.to_string());
                b.inc(bytes);
            }
        }
        Event::StageFinished(rec) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if chatty {
                eprintln!("{:>14}  {:7.3}s  {}", rec.name, rec.seconds, rec.summary);
            }
        }
        _ => {}
    };
    let report = migrate(&opts, &mut on_event)?;
    if a.write.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.write.dry_run {
        println!("dry run: nothing written");
    } else {
        print_verdict(&a, &report);
    }
    Ok(if report.ok || a.write.dry_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The migration's options from the command line (running `--quant auto`'s search first).
fn options(a: &Args) -> Result<MigrateOptions> {
    let graph = a.input.as_deref().is_some_and(ferry_migrate::is_graph);
    let to =
        a.to.clone()
            .unwrap_or_else(|| if graph { "onnx" } else { "safetensors" }.into());
    let target = match to.as_str() {
        "onnx" => Target::Onnx,
        t => Target::Tensors(t.parse::<TargetFormat>()?),
    };
    let mut convert = a.transform.to_options()?;
    let auto = match &a.input {
        Some(input) if a.transform.is_auto() => {
            anyhow::ensure!(to == "gguf", "--quant auto writes GGUF: add --to gguf");
            let quiet = a.write.quiet || a.write.json;
            let p = super::auto_quant::apply(input, &a.transform, &mut convert, quiet)?;
            if let Some(p) = p.as_ref().filter(|_| !quiet) {
                super::auto_quant::print(p);
            }
            p
        }
        None if a.transform.is_auto() => {
            anyhow::bail!(
                "--quant auto needs a model to migrate (the built-in demo is a classifier)"
            )
        }
        _ => None,
    };
    // The written file is judged by the budget the types were chosen for, unless told.
    let tolerance = a
        .tolerance
        .clone()
        .or_else(|| auto.as_ref().and(a.transform.budget.clone()));
    Ok(MigrateOptions {
        input: a.input.clone().map(Input::Path).unwrap_or(Input::Embedded),
        out_dir: a.out.clone(),
        target,
        passes: a.passes.clone(),
        convert,
        shard_size: a.write.shard_bytes()?,
        file_stem: a.name.clone(),
        dry_run: a.write.dry_run,
        online: a.online,
        eval_data: a.eval_data.clone(),
        outputs: (!a.no_verify_outputs)
            .then(|| -> Result<ferry_migrate::OutputCheck> {
                Ok(ferry_migrate::OutputCheck {
                    probes: a.probe.probes.clone(),
                    languages: a.probe.languages.clone(),
                    limit: a.probe.limit,
                    max_tokens: a.probe.max_tokens,
                    tolerance: tolerance.as_deref().map(str::parse).transpose()?,
                    kernels: a.kernels.parse().map_err(anyhow::Error::msg)?,
                    placement: placement(a)?,
                })
            })
            .transpose()?,
        options_json: json!({
            "eval_data": a.eval_data.as_ref().map(|p| p.display().to_string()),
            "input": a.input.as_ref().map(|p| p.display().to_string()), "out": a.out.display().to_string(),
            "to": to, "passes": a.passes, "transform": a.transform.to_json(), "shard_size": a.write.shard_size, "name": a.name, "online": a.online,
            "verify_outputs": !a.no_verify_outputs, "probes": a.probe.probes.as_ref().map(|p| p.display().to_string()),
            "languages": a.probe.languages, "limit": a.probe.limit, "max_tokens": a.probe.max_tokens, "tolerance": a.tolerance, "kernels": a.kernels,
            "devices": a.place.devices, "max_memory": a.place.max_memory, "map": a.place.map, "reserve": a.place.reserve, "compute_dtype": a.compute_dtype,
            "auto_quant": auto,
        }),
    })
}

/// The verdict in words: a graph's node counts and end-to-end checks, or the tensors verified,
/// the task check and what failed.
fn print_verdict(a: &Args, report: &ferry_migrate::MigrationReport) {
    let verdict = if report.ok {
        "migration verified"
    } else {
        "VERIFICATION FAILED"
    };
    let report_md = a.out.join("report.md");
    if let Some(g) = &report.graph {
        println!(
            "{verdict}: {} -> {} nodes, {} of {} output checks within tolerance; report in {}",
            g.pipeline.ops_before.values().sum::<usize>(),
            g.pipeline.ops_after.values().sum::<usize>(),
            g.end_to_end.iter().filter(|c| c.ok).count(),
            g.end_to_end.len(),
            report_md.display()
        );
        if let Some(p) = &g.pipeline.failed {
            println!("  ! pass `{p}` broke the tolerance; nothing was written (run `ferry optimize --verify` for details)");
        }
        print_outputs(report);
        return;
    }
    println!(
        "{verdict}: {} of {} tensors verified ({} bit-exact); report in {}",
        report.tensors.iter().filter(|t| t.check.ok).count(),
        report.tensors.len(),
        report.tensors.iter().filter(|t| t.check.bit_exact).count(),
        report_md.display()
    );
    if let Some(t) = &report.task_eval {
        println!(
            "task check on {}: accuracy {:.2}% -> {:.2}%, macro-F1 {:.2}% -> {:.2}% ({} of {} languages changed)",
            t.data.display(),
            100.0 * t.accuracy_before,
            100.0 * t.accuracy_after,
            100.0 * t.macro_f1_before,
            100.0 * t.macro_f1_after,
            t.changed(),
            t.per_language.len()
        );
    }
    print_outputs(report);
    for t in report.tensors.iter().filter(|t| !t.check.ok) {
        println!(
            "  ! {} ({} -> {}): max abs {:?}, cosine {:?}",
            t.planned.name, t.planned.from, t.planned.to, t.check.max_abs, t.check.cosine
        );
    }
}

/// What verify-outputs found: the verdict, the languages outside tolerance, and the five
/// furthest from the original.
fn print_outputs(report: &ferry_migrate::MigrationReport) {
    if let Some(o) = &report.outputs_check {
        match (&o.skipped, &o.report) {
            (Some(why), _) => println!("outputs not verified: {why}"),
            (_, Some(r)) => {
                let v = &r.result;
                let failing: Vec<_> = v.languages.iter().filter(|l| !l.ok()).collect();
                println!(
                    "outputs: {} of {} languages within tolerance {}",
                    v.languages.len() - failing.len(),
                    v.languages.len(),
                    v.budget
                );
                for l in failing.iter().chain(Some(&&v.overall).filter(|o| !o.ok())) {
                    println!("  ! {}: {}", l.lang, l.failed.join("; "));
                }
                let mut worst: Vec<_> = v.languages.iter().collect();
                worst.sort_by(|a, b| b.cmp_badness(a));
                println!(
                    "  furthest from the original (all {} in report.md):",
                    v.languages.len()
                );
                for l in worst.iter().take(5) {
                    println!("    {:<6} {}", l.lang, l.summary());
                }
                println!("    {:<6} {}", "all", v.overall.summary());
            }
            _ => {}
        }
    }
}
