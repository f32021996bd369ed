//! `ferry diff`: two checkpoints, tensor by tensor.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ferry_io::compare::{diff, Tolerance};
use ferry_io::Checkpoint;

/// Arguments of `ferry diff`.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 when every common tensor is bit-exact (or within --atol/--rtol) and no names are missing, 1 otherwise, 2 on error.\n\nExamples:\n  ferry diff model.pth model.safetensors\n  ferry diff model.safetensors model-f16.safetensors --rtol 1e-3 --json\n  ferry diff -q a.pth b.safetensors && echo same   # exit status only"
)]
pub struct Args {
    /// First checkpoint (the reference).
    pub a: PathBuf,
    /// Second checkpoint.
    pub b: PathBuf,
    /// Absolute tolerance: |a - b| <= atol + rtol * |a| passes.
    #[arg(long, default_value_t = 0.0)]
    pub atol: f64,
    /// Relative tolerance.
    #[arg(long, default_value_t = 0.0)]
    pub rtol: f64,
    /// Download a hub model missing from the local Hugging Face cache (off by default: ferry is offline unless asked).
    #[arg(long)]
    pub online: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also list tensors that are bit-exact.
    #[arg(long)]
    pub all: bool,
    /// Print nothing: the exit status alone says whether they match (as `cmp -s` does).
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into())
}

/// Runs `ferry diff`.
pub fn run(a: Args) -> Result<ExitCode> {
    let ca = Checkpoint::open_with(&a.a, a.online)?;
    let cb = Checkpoint::open_with(&a.b, a.online)?;
    let tol = Tolerance {
        atol: a.atol,
        rtol: a.rtol,
        min_cosine: None,
    };
    let report = diff(&ca, &cb, Some(tol))?;
    let code = if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.quiet {
        return Ok(code);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    let exact = report.tensors.iter().filter(|t| t.bit_exact).count();
    println!(
        "{} ({}) vs {} ({})",
        ca.path.display(),
        ca.format,
        cb.path.display(),
        cb.format
    );
    println!(
        "  {} common tensors: {} bit-exact, {} within tolerance, {} differ; {} only in A, {} only in B",
        report.tensors.len(),
        exact,
        report.tensors.iter().filter(|t| t.ok && !t.bit_exact).count(),
        report.tensors.iter().filter(|t| !t.ok).count(),
        report.only_in_a.len(),
        report.only_in_b.len()
    );
    for n in &report.only_in_a {
        println!("  - {n}  (only in A)");
    }
    for n in &report.only_in_b {
        println!("  + {n}  (only in B)");
    }
    for t in &report.tensors {
        if t.bit_exact && !a.all {
            continue;
        }
        let what = if t.shapes.0 != t.shapes.1 {
            format!("shape {:?} vs {:?}", t.shapes.0, t.shapes.1)
        } else if t.bit_exact {
            "bit-exact".into()
        } else {
            format!(
                "{} vs {}: max abs {}, max rel {}, cosine {}{}",
                t.dtypes.0,
                t.dtypes.1,
                num(t.max_abs),
                num(t.max_rel),
                t.cosine
                    .map(|c| format!("{c:.6}"))
                    .unwrap_or_else(|| "-".into()),
                if t.nan_mismatches > 0 {
                    format!(", {} NaN/inf mismatches", t.nan_mismatches)
                } else {
                    String::new()
                }
            )
        };
        let mark = if t.ok { "=" } else { "!" };
        println!("  {mark} {}: {what}", t.name);
    }
    println!(
        "{}",
        if report.identical() {
            "identical"
        } else if report.ok() {
            "equal within tolerance"
        } else {
            "different"
        }
    );
    Ok(code)
}
