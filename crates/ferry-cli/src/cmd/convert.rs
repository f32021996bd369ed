//! `ferry convert`: one checkpoint into another format, dtype or quantization.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use ferry_io::convert::{self, ImatrixUse, Plan, TargetFormat};
use ferry_io::Checkpoint;
use serde_json::json;

use crate::args::{TransformArgs, WriteArgs};
use crate::progress::bytes_bar;
use crate::units::human_bytes;

/// Arguments of `ferry convert`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry convert model.pth model.safetensors\n  ferry convert model.pth model.safetensors --dtype bf16 --keep f32:'.*norm.*'\n  ferry convert ./all-MiniLM-L6-v2 minilm-q8.gguf --quant q8_0\n  ferry convert ./SmolLM2-135M smollm2-q4k.gguf --quant q4_k --imatrix smollm2.imatrix.gguf   # from ferry calibrate\n  ferry convert ./SmolLM2-135M smollm2-auto.gguf --quant auto --target-size 90MB   # types chosen per tensor for the worst language\n  ferry convert ./SmolLM2-135M smollm2-auto.gguf --quant auto --budget 'kld<=0.05' --dry-run\n  ferry convert model.gguf model.safetensors --dtype f16            # dequantizes\n  ferry convert big.pth out/model.safetensors --shard-size 2GB\n  ferry convert model.pth model.safetensors --strip-prefix module. --rename '\\.gamma$=.weight' --dry-run"
)]
pub struct Args {
    /// Input checkpoint: file, model folder, or cached hub id.
    pub input: PathBuf,
    /// Output file.
    pub output: PathBuf,
    /// Output format (default: from OUTPUT's extension).
    #[arg(long, value_name = "FORMAT", value_parser = ["safetensors", "gguf", "npz", "pth"])]
    pub to: Option<String>,
    #[command(flatten)]
    pub transform: TransformArgs,
    /// Download a hub model missing from the local Hugging Face cache (off by default: ferry is offline unless asked).
    #[arg(long)]
    pub online: bool,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Runs `ferry convert`.
pub fn run(a: Args) -> Result<ExitCode> {
    let target = target_format(&a)?;
    let shard = a.write.shard_bytes()?;
    let mut opts = a.transform.to_options()?;
    anyhow::ensure!(
        !a.transform.is_auto() || target == TargetFormat::Gguf,
        "--quant auto writes GGUF: give an output ending in .gguf (or --to gguf)"
    );
    let quiet = a.write.quiet || a.write.json;
    let auto = super::auto_quant::apply(&a.input, &a.transform, &mut opts, quiet)?;
    if let Some(p) = auto.as_ref().filter(|_| !quiet) {
        super::auto_quant::print(p);
    }
    let ck = Checkpoint::open_with(&a.input, a.online)?;
    let (ck, layout) = convert::prepare(ck, target, opts.keep_names)?;
    let mut plan = Plan::new(&ck, target, &opts)?;
    plan.layout = layout;
    for r in &plan.rename.unmatched_rules {
        eprintln!("warning: rename step `{r}` matched no tensor name");
    }
    if a.write.dry_run {
        print_dry_run(&a, &plan, &auto)?;
        return Ok(ExitCode::SUCCESS);
    }
    let metadata = convert::output_metadata(&ck, &plan)?;
    let bar = bytes_bar(plan.output_bytes(), a.write.quiet || a.write.json);
    let start = Instant::now();
    let mut progress = |name: &str, bytes: u64| {
        bar.set_message(name.to_string());
        bar.inc(bytes);
    };
    let mut files = convert::write(&plan, &ck, &a.output, &metadata, shard, &mut progress)?;
    let out_dir = ferry_io::atomic::parent_dir(&a.output);
    files.extend(convert::write_hf_config(&ck, &plan, out_dir)?);
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let errors = plan.quant_errors();
    // A budget is judged on the written file, on the held-out probes.
    let budget = auto.as_ref().and_then(|p| p.goal.budget.clone());
    let verified = match &budget {
        Some(b) => Some(verify_written(
            &a.input,
            &a.output,
            b,
            &a.transform.auto_languages,
        )?),
        None => None,
    };
    let code = match &verified {
        Some(r) if !r.result.ok => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    };
    if a.write.json {
        let out = json!({
            "input": ck.path.display().to_string(), "input_format": ck.format, "target": target,
            "outputs": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "seconds": secs, "output_bytes": plan.output_bytes(), "plan": plan,
            "quant_errors": errors, "auto": auto,
            "verify": verified,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    if a.write.quiet {
        return Ok(code);
    }
    print_written(&files, &plan, &ck, target, secs, &errors);
    if let Some(r) = &verified {
        print_verified(r, &a.output);
    }
    Ok(code)
}

/// The output format: `--to`, else the output's extension.
fn target_format(a: &Args) -> Result<TargetFormat> {
    match &a.to {
        Some(t) => Ok(t.parse::<TargetFormat>()?),
        None => TargetFormat::from_path(&a.output).with_context(|| {
            format!(
                "cannot tell the output format from `{}`; pass --to safetensors|gguf|npz|pth",
                a.output.display()
            )
        }),
    }
}

/// What `--dry-run` prints: the plan, as JSON or in words.
fn print_dry_run(
    a: &Args,
    plan: &Plan,
    auto: &Option<ferry_verify::autoquant::AutoPlan>,
) -> Result<()> {
    if a.write.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"dry_run": true, "output_bytes": plan.output_bytes(), "plan": plan, "auto": auto})
            )?
        );
    } else {
        print_plan(plan);
        print_layout(plan);
        print_imatrix(plan);
        print_dropped_tied(plan);
        println!(
            "dry run: nothing written ({} would be {})",
            a.output.display(),
            human_bytes(plan.output_bytes())
        );
    }
    Ok(())
}

/// What was written, in words: files, size and time, layouts, fallbacks, the imatrix, the
/// tensors kept in float and each quantized tensor's error.
fn print_written(
    files: &[std::path::PathBuf],
    plan: &Plan,
    ck: &Checkpoint,
    target: TargetFormat,
    secs: f64,
    errors: &std::collections::BTreeMap<String, ferry_io::quant::QuantError>,
) {
    for f in files {
        println!("wrote {}", f.display());
    }
    println!(
        "{} tensors, {} in {:.2}s ({} -> {})",
        plan.entries.len(),
        human_bytes(plan.output_bytes()),
        secs,
        ck.format,
        target
    );
    print_layout(plan);
    print_dropped_tied(plan);
    let fallbacks = plan.fallbacks();
    if !fallbacks.is_empty() {
        println!("{} tensors got llama.cpp's fallback type:", fallbacks.len());
        for (n, why) in fallbacks {
            println!("  {n}: {why}");
        }
    }
    print_imatrix(plan);
    let kept = plan.kept_float();
    if !kept.is_empty() {
        println!("{} tensors kept in float (not quantizable):", kept.len());
        for (n, why) in kept {
            println!("  {n}: {why}");
        }
    }
    if !errors.is_empty() {
        println!("quantization error (rmse, max abs, cosine):");
        for entry in &plan.entries {
            if let Some(e) = errors.get(&entry.name) {
                println!(
                    "  {}: {:.3e}, {:.3e}, {:.6}",
                    entry.name, e.rmse, e.max_abs, e.cosine
                );
            }
        }
    }
}

/// `ferry verify INPUT OUTPUT --tolerance BUDGET` on the held-out probes (one text of 64
/// tokens per language; only `languages` when given), without attribution.
fn verify_written(
    input: &std::path::Path,
    output: &std::path::Path,
    budget: &ferry_verify::Budget,
    languages: &[String],
) -> Result<ferry_verify::VerifyReport> {
    let one_each = ferry_verify::ProbeOptions {
        languages: languages.to_vec(),
        limit: Some(1),
    };
    let (probe_source, probes) = ferry_verify::probes::load(None, &one_each)?;
    let job = ferry_verify::Job {
        original: input.to_path_buf(),
        migrated: output.to_path_buf(),
        tokenizer: None,
        probe_source,
        probes,
        options: ferry_verify::VerifyOptions {
            budget: budget.clone(),
            attribution: false,
            ..ferry_verify::VerifyOptions::default()
        },
        placement: None,
    };
    Ok(ferry_verify::run_job(&job, |_, _| {})?)
}

/// The verdict on the written file, its worst languages.
fn print_verified(r: &ferry_verify::VerifyReport, output: &std::path::Path) {
    let v = &r.result;
    let failing = v.languages.iter().filter(|l| !l.ok()).count();
    println!(
        "verified {} on the held-out probes: {} of {} languages within {}{}",
        output.display(),
        v.languages.len() - failing,
        v.languages.len(),
        v.budget,
        if v.ok { "" } else { " (BUDGET MISSED: exit 1)" }
    );
    let mut worst: Vec<_> = v.languages.iter().collect();
    worst.sort_by(|a, b| b.cmp_badness(a));
    for l in worst.iter().take(3) {
        println!("  {:<6} {}", l.lang, l.summary());
    }
}

/// What the importance matrix did: the tensors it weighted, and those it has entries for whose
/// type has no weighted kernel (quantized as without it).
pub(crate) fn print_imatrix(plan: &Plan) {
    let Some(m) = &plan.imatrix else {
        return;
    };
    let (used, unused) = plan.imatrix_uses();
    let langs = m.languages();
    let from = if langs.is_empty() {
        String::new()
    } else {
        format!(", calibrated on {} languages", langs.len())
    };
    println!(
        "importance matrix {} ({} entries{from}): {} tensors quantized with it",
        m.label(),
        m.entries.len(),
        used.len()
    );
    if !unused.is_empty() {
        let mut types: Vec<&str> = unused.iter().map(|e| e.to.name()).collect();
        types.sort_unstable();
        types.dedup();
        println!(
            "  {} tensors with an entry quantized without it: {} ha{} no importance-weighted kernel (the k-quants and q4_0, q4_1, q5_0, q5_1 do)",
            unused.len(),
            types.join(", "),
            if types.len() == 1 { "s" } else { "ve" }
        );
    }
}

/// The tied copies left out of safetensors output because the folder's config.json re-ties them.
pub(crate) fn print_dropped_tied(plan: &Plan) {
    for (name, to) in &plan.dropped_tied {
        println!(
            "left out {name}: it shares `{to}`'s storage and config.json ties them (as transformers saves it)"
        );
    }
}

fn print_plan(plan: &Plan) {
    let width = plan
        .entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 72);
    println!(
        "{:width$}  {:>7} -> {:7}  {:10}  SHAPE",
        "NAME", "FROM", "TO", "ACTION"
    );
    for e in &plan.entries {
        let renamed = if e.name != e.source {
            format!("  (from {})", e.source)
        } else {
            String::new()
        };
        let tied = e
            .tied_to
            .as_deref()
            .map(|t| format!("  (tied to {t})"))
            .unwrap_or_default();
        let kept = e
            .kept_float
            .as_deref()
            .map(|r| format!("  (kept float: {r})"))
            .unwrap_or_default();
        let fallback = e
            .fallback
            .as_deref()
            .map(|r| format!("  (fallback: {r})"))
            .unwrap_or_default();
        let imatrix = match e.imatrix {
            Some(ImatrixUse::Used) => "  (imatrix)",
            Some(ImatrixUse::NoKernel) => "  (imatrix entry unused: no weighted kernel)",
            None => "",
        };
        println!(
            "{:width$}  {:>7} -> {:7}  {:10}  {:?}{renamed}{tied}{kept}{fallback}{imatrix}",
            e.name,
            e.from.name(),
            e.to.name(),
            format!("{:?}", e.action).to_lowercase(),
            e.shape
        );
    }
}

/// What the architecture's naming did: llama.cpp's names (or Hugging Face's back), the Q/K
/// rows permuted, the tensors left out and those not in the table.
pub(crate) fn print_layout(plan: &Plan) {
    let Some(l) = &plan.layout else {
        return;
    };
    let permuted = l.renamed.iter().filter(|r| r.2.is_some()).count();
    let names = match l.direction {
        ferry_io::formats::gguf::names::Direction::ToGguf => "llama.cpp's",
        ferry_io::formats::gguf::names::Direction::ToHf => "Hugging Face's",
    };
    println!(
        "{} architecture: {} tensors renamed to {names} names, {permuted} with rotary Q/K rows permuted",
        l.layout.family.gguf_arch(),
        l.renamed.len()
    );
    for (n, why) in &l.dropped {
        println!("  left out {n}: {why}");
    }
    if !l.unknown.is_empty() {
        println!(
            "  {} tensors are not in llama.cpp's table and keep their names: {}",
            l.unknown.len(),
            l.unknown.join(", ")
        );
    }
}
