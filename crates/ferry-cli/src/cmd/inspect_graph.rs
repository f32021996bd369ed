//! `ferry inspect MODEL.onnx`: what a graph takes, returns and is made of, and whether ferry's
//! executor runs every op in it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_graph::exec::is_supported;
use ferry_graph::ValueInfo;
use serde_json::json;

fn value(v: &ValueInfo) -> serde_json::Value {
    json!({
        "name": v.name,
        "dtype": v.dtype.map(|d| d.name()),
        "shape": v.shape.as_ref().map(|s| s.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
    })
}

fn describe(v: &ValueInfo) -> String {
    let shape = v.shape.as_ref().map_or("?".to_string(), |s| {
        let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    });
    format!("{} {} {shape}", v.name, v.dtype.map_or("?", |d| d.name()))
}

/// Prints the graph at `path` (`json`: as JSON).
pub fn run(path: &Path, json_out: bool) -> Result<ExitCode> {
    let m = ferry_graph::onnx::read_model(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let g = &m.graph;
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut unsupported: BTreeMap<String, usize> = BTreeMap::new();
    for n in &g.nodes {
        *ops.entry(n.qualified_op()).or_default() += 1;
        if !is_supported(n) {
            *unsupported.entry(n.qualified_op()).or_default() += 1;
        }
    }
    let params = m.parameters();
    if json_out {
        let out = json!({
            "path": path.display().to_string(), "format": "onnx",
            "opsets": m.opsets.iter().collect::<BTreeMap<_, _>>(),
            "ir_version": m.ir_version, "nodes": g.nodes.len(), "ops": ops,
            "unsupported_ops": unsupported, "initializers": g.initializers.len(),
            "parameters": params,
            "inputs": g.inputs.iter().map(value).collect::<Vec<_>>(),
            "outputs": g.outputs.iter().map(value).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", path.display());
    println!(
        "  format        onnx (IR {}, opset {})",
        m.ir_version,
        m.opset()
    );
    println!("  nodes         {}", g.nodes.len());
    println!(
        "  initializers  {} ({params} parameters)",
        g.initializers.len()
    );
    for v in &g.inputs {
        println!("  input         {}", describe(v));
    }
    for v in &g.outputs {
        println!("  output        {}", describe(v));
    }
    let list: Vec<String> = ops.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    println!("  ops           {}", list.join(", "));
    if unsupported.is_empty() {
        println!("  ferry runs every op (ferry run, ferry verify, ferry migrate)");
    } else {
        let list: Vec<String> = unsupported
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        println!("  not supported by ferry's executor: {}", list.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
