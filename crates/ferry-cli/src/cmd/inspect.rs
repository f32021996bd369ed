//! `ferry inspect`: what is in a checkpoint (an ONNX graph: `inspect_graph`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_io::{Checkpoint, Layout};
use serde_json::json;

use crate::units::human_bytes;

/// Arguments of `ferry inspect`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry inspect model.pth\n  ferry inspect ./all-MiniLM-L6-v2 --json | jq '.tensors[].name'\n  ferry inspect sentence-transformers/all-MiniLM-L6-v2   # from the local Hugging Face cache\n  ferry inspect model.onnx          # inputs, outputs, ops, and any op ferry cannot run yet\n  ferry inspect -q upload.pth || echo unreadable   # exit status only"
)]
pub struct Args {
    /// A checkpoint file, a model folder, a hub id in the local cache, or an ONNX graph.
    pub path: PathBuf,
    /// Download a hub model missing from the local Hugging Face cache (off by default: ferry is offline unless asked).
    #[arg(long)]
    pub online: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many tensors in the table (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Print nothing: open it and check every tensor's bounds; the exit status says whether
    /// it is readable.
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
}

fn layout_name(l: &Layout) -> String {
    match l {
        Layout::Contiguous { .. } => "contiguous".into(),
        Layout::Strided { offset, strides } => {
            format!("strided(offset={offset}, strides={strides:?})")
        }
    }
}

/// Runs `ferry inspect`.
pub fn run(a: Args) -> Result<ExitCode> {
    if ferry_migrate::is_graph(&a.path) {
        if a.quiet {
            ferry_graph::onnx::read_model(&a.path)
                .with_context(|| format!("reading {}", a.path.display()))?;
            return Ok(ExitCode::SUCCESS);
        }
        return super::inspect_graph::run(&a.path, a.json);
    }
    let ck = Checkpoint::open_with(&a.path, a.online)?;
    if a.quiet {
        ck.validate()?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        print_json(&ck)?;
    } else {
        print_summary(&ck);
        print_tensors(&ck, a.limit);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every tensor, the metadata, tied groups and companions, as one JSON document.
fn print_json(ck: &Checkpoint) -> Result<()> {
    let tied = ck.tied_groups();
    let tensors: Vec<_> = ck
        .tensors
        .iter()
        .map(|t| {
            json!({"name": t.name, "dtype": t.dtype, "shape": t.shape, "bytes": t.nbytes(),
                   "layout": layout_name(&t.layout), "file": t.file.display().to_string()})
        })
        .collect();
    let meta: serde_json::Map<_, _> = ck
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    let out = json!({
        "path": ck.path.display().to_string(), "format": ck.format, "parameters": ck.param_count(),
        "bytes": ck.total_bytes(), "tensors": tensors, "tied_groups": tied, "metadata": meta,
        "companions": ck.companions.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The checkpoint's format, sizes, tied groups, companions and metadata.
fn print_summary(ck: &Checkpoint) {
    let tied = ck.tied_groups();
    println!("{}", ck.path.display());
    println!("  format      {}", ck.format);
    println!("  tensors     {}", ck.tensors.len());
    println!("  parameters  {}", ck.param_count());
    println!("  data        {}", human_bytes(ck.total_bytes()));
    for g in &tied {
        println!("  tied        {}", g.join(" = "));
    }
    for c in &ck.companions {
        println!("  companion   {}", c.display());
    }
    if !ck.metadata.is_empty() {
        println!("  metadata");
        for (k, v) in &ck.metadata {
            println!("    {k} = {}", v.display_short());
        }
    }
}

/// The tensor table: the first `limit` tensors (all with 0).
fn print_tensors(ck: &Checkpoint, limit: usize) {
    let width = ck
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 72);
    println!(
        "\n  {:width$}  {:7}  {:>12}  SHAPE",
        "NAME", "DTYPE", "BYTES"
    );
    let shown = if limit == 0 { ck.tensors.len() } else { limit };
    for t in ck.tensors.iter().take(shown) {
        let strided = if matches!(t.layout, Layout::Strided { .. }) {
            "  (strided view)"
        } else {
            ""
        };
        println!(
            "  {:width$}  {:7}  {:>12}  {:?}{strided}",
            t.name,
            t.dtype.name(),
            t.nbytes(),
            t.shape
        );
    }
    if shown < ck.tensors.len() {
        println!("  ... {} more (use --limit 0)", ck.tensors.len() - shown);
    }
}
