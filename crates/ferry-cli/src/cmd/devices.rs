//! `ferry devices`: what this machine has and what this build can use.

use std::process::ExitCode;

use anyhow::Result;
use ferry_device::{DTypePolicy, Inventory};
use serde_json::json;

use crate::units::human_bytes;

/// Arguments of `ferry devices`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry devices\n  ferry devices --json | jq '.cuda[].free_bytes'\n\nA CUDA or Metal device is listed when ferry was built with that feature (cargo build --release --features cuda) and its driver answers."
)]
pub struct Args {
    /// Print the inventory as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print nothing; exit 0 (a check that the device layer works).
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry devices`.
pub fn run(a: Args) -> Result<ExitCode> {
    let inv = Inventory::detect();
    let policy = DTypePolicy::default();
    if a.json {
        let dtypes: serde_json::Map<String, serde_json::Value> = inv
            .devices()
            .into_iter()
            .map(|d| (d.to_string(), json!(policy.dtype(d, Some(&inv)).as_str())))
            .collect();
        let mut v = serde_json::to_value(&inv)?;
        v["compute_dtype"] = dtypes.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    let c = &inv.cpu;
    println!(
        "cpu      {}{} cores, {} threads; RAM {} total, {} available; computes in {}",
        if c.name.is_empty() {
            String::new()
        } else {
            format!("{}, ", c.name)
        },
        c.cores,
        c.threads,
        human_bytes(c.total_bytes),
        human_bytes(c.available_bytes),
        policy
            .dtype(ferry_device::DeviceSpec::CPU, Some(&inv))
            .as_str()
    );
    for g in inv.cuda.iter().chain(&inv.metal) {
        println!(
            "{:<8} {}{}; {} total, {} free; computes in {}",
            g.device.to_string(),
            g.name,
            g.compute_capability
                .map(|(a, b)| format!(" (compute capability {a}.{b})"))
                .unwrap_or_default(),
            human_bytes(g.total_bytes),
            human_bytes(g.free_bytes),
            policy.dtype(g.device, Some(&inv)).as_str()
        );
    }
    println!("built with: {}", inv.compiled.join(", "));
    if !inv.compiled.contains(&"cuda") {
        println!(
            "  (no CUDA: build with `cargo build --release --features cuda`; no Metal: `--features metal` on macOS)"
        );
    }
    for n in &inv.notes {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}
