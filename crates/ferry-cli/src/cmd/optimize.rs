//! `ferry optimize`: rewrite an ONNX graph with ferry's passes, verify, write it back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::Tensor;
use ferry_graph::onnx::{read_model, write_model, ExportOptions, ExternalData};
use ferry_graph::passes::{self, PassManager, PassReport, PipelineReport, VerifyOptions};

/// Arguments of `ferry optimize`.
#[derive(clap::Args)]
#[command(
    after_help = "Passes (default order):\n  identity, const-fold, shape-simplify, const-fold, bn-fold, matmul-add, layer-norm, gelu, qkv-merge, attention, matmul-bias, add-layer-norm, dce\n\nFused ops are written as com.ferry ops with ONNX function bodies, so onnxruntime and other runtimes still load the model.\n\nExit status: 0 when written (and verified), 1 when a pass broke the tolerance (nothing written), 2 on error.\n\nExamples:\n  ferry optimize model.onnx model.opt.onnx --verify\n  ferry optimize cnn.onnx cnn.opt.onnx --passes const-fold,bn-fold,dce\n  ferry optimize model.onnx out.onnx --verify --input-file input_ids=ids.npy --input-file attention_mask=mask.npy --json\n  ferry optimize --list-passes"
)]
pub struct Args {
    /// The ONNX model to optimize.
    #[arg(required_unless_present = "list_passes")]
    input: Option<PathBuf>,
    /// Where to write the optimized model.
    #[arg(required_unless_present_any = ["list_passes", "dry_run"])]
    output: Option<PathBuf>,
    /// Comma-separated passes to run, in this order (default: all, see below).
    #[arg(long, value_delimiter = ',')]
    passes: Vec<String>,
    /// List the passes and exit.
    #[arg(long)]
    list_passes: bool,
    /// After each pass, run the graph and compare its outputs with the previous pass's.
    #[arg(long)]
    verify: bool,
    /// Verification tolerance, relative to each output's largest magnitude.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// Verify on this input instead of seeded random ones: NAME=FILE.npy (repeatable), or an .npz of all inputs.
    #[arg(long, value_name = "NAME=FILE")]
    input_file: Vec<String>,
    /// Weights in a separate `OUT.data` file: auto (past 2 GiB), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    external_data: String,
    /// Optimize and report; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No per-pass progress lines.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry optimize`.
pub fn run(a: Args) -> Result<ExitCode> {
    if a.list_passes {
        let mut seen = std::collections::HashSet::new();
        for p in passes::all().into_iter().filter(|p| seen.insert(p.name())) {
            println!("{:<15} {}", p.name(), p.description());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let input = a.input.clone().expect("clap requires INPUT");
    let mut model = read_model(&input)?;
    let list = if a.passes.is_empty() {
        passes::all()
    } else {
        passes::by_names(&a.passes)?
    };
    let mut manager = PassManager::new(list);
    if a.verify {
        let inputs = if a.input_file.is_empty() {
            None
        } else {
            Some(read_inputs(&a.input_file)?)
        };
        manager = manager.verify(VerifyOptions {
            inputs,
            rel_tolerance: a.tolerance,
        });
    }
    let chatty = !a.quiet && !a.json;
    let report = manager
        .run(&mut model, |r| {
            if chatty {
                eprintln!("{}", progress_line(r));
            }
        })
        .with_context(|| format!("optimizing {}", input.display()))?;
    let write = report.failed.is_none() && !a.dry_run;
    let mut data_file = None;
    if write {
        let out = a.output.as_ref().expect("clap requires OUTPUT");
        let external_data = match a.external_data.as_str() {
            "always" => ExternalData::Always,
            "never" => ExternalData::Never,
            _ => ExternalData::Auto,
        };
        data_file = write_model(&model, out, &ExportOptions { external_data })?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["written"] = serde_json::json!(write
            .then(|| a.output.as_ref().map(|p| p.display().to_string()))
            .flatten());
        v["external_data"] = serde_json::json!(data_file.as_ref().map(|p| p.display().to_string()));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&report));
        match (&report.failed, write) {
            (Some(p), _) => println!("\nVERIFICATION FAILED after pass `{p}`: nothing written"),
            (None, true) => println!(
                "\nwrote {}{}",
                a.output.as_ref().expect("output").display(),
                data_file
                    .map(|d| format!(" (+ {})", d.display()))
                    .unwrap_or_default()
            ),
            (None, false) => println!("\ndry run: nothing written"),
        }
    }
    Ok(if report.failed.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `NAME=FILE.npy` items, or one `.npz` holding every input (keys may carry an `input.` prefix).
pub fn read_inputs(items: &[String]) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for item in items {
        match item.split_once('=') {
            Some((name, file)) => {
                let arrays =
                    ferry_graph::feeds::read_arrays(file.as_ref(), &candle_core::Device::Cpu)
                        .with_context(|| format!("input `{name}`"))?;
                let (_, t) = arrays
                    .into_iter()
                    .next()
                    .with_context(|| format!("{file} holds no array"))?;
                out.insert(name.to_string(), t);
            }
            None => {
                for (k, t) in
                    ferry_graph::feeds::read_arrays(item.as_ref(), &candle_core::Device::Cpu)?
                {
                    if k.starts_with("output.") {
                        continue;
                    }
                    out.insert(k.strip_prefix("input.").unwrap_or(&k).to_string(), t);
                }
            }
        }
    }
    Ok(out)
}

fn progress_line(r: &PassReport) -> String {
    let check = match &r.verified {
        Some(v) => format!(
            "  max abs {:.2e} {}",
            v.max_abs,
            if v.ok { "ok" } else { "OVER TOLERANCE" }
        ),
        None => String::new(),
    };
    format!(
        "{:>15}  {:>5} -> {:<5} nodes  {} rewrites, {} left alone{check}",
        r.pass,
        r.nodes.0,
        r.nodes.1,
        r.matched.len(),
        r.skipped.len()
    )
}

/// The before/after op table and each pass's diagnostics.
fn render(r: &PipelineReport) -> String {
    let mut s = String::from("op                         before  after\n");
    for (op, b, a) in r.op_counts() {
        s += &format!("{op:<26} {b:>6} {a:>6}{}\n", if a != b { " *" } else { "" });
    }
    let (tb, ta): (usize, usize) = (r.ops_before.values().sum(), r.ops_after.values().sum());
    s += &format!("{:<26} {tb:>6} {ta:>6}\n", "total");
    for p in &r.passes {
        if p.matched.is_empty() && p.skipped.is_empty() {
            continue;
        }
        s += &format!("\n[{}]\n", p.pass);
        for m in &p.matched {
            s += &format!("  + {m}\n");
        }
        for k in &p.skipped {
            s += &format!("  - {}: {}\n", k.node, k.reason);
        }
        if let Some(v) = &p.verified {
            s += &format!(
                "  = outputs within tolerance: {} (max abs {:.2e}, max rel {:.2e})\n",
                v.ok, v.max_abs, v.max_rel
            );
        }
    }
    s
}
