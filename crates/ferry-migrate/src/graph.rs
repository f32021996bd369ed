//! Migration of a graph (an `.onnx` file): resolve -> optimize (every pass verified on seeded
//! inputs) -> write ONNX -> verify end to end (the original graph against the written file,
//! read back, at two input sizes) -> verify-outputs (a graph exported from a language model,
//! with its `tokenizer.json` beside it: both graphs on the multilingual probes, per language)
//! -> report.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ferry_graph::exec::Executor;
use ferry_graph::onnx::{read_model, write_model, ExportOptions};
use ferry_graph::passes::{self, PassManager, PipelineReport, VerifyOptions};
use ferry_graph::verify::{compare_outputs, symbol_sizes, synth_inputs};
use ferry_graph::OnnxModel;
use ferry_io::compare::TensorComparison;

use crate::pipeline::{file_record, MigrateOptions, Stages, Target};
use crate::report::{GraphRecord, MigrationReport};
use crate::{Error, Result};

/// Relative tolerance of graph verification (see `ferry_graph::verify`).
const GRAPH_TOLERANCE: f64 = 1e-4;

/// Input sizes of the end-to-end check: symbolic dimensions get these values in turn.
const CHECK_SIZES: [&[usize]; 2] = [&[2, 16], &[3, 7]];

/// Files beside a graph that travel with it: what the runtime needs to run it as the language
/// model it was exported from.
const COMPANIONS: [&str; 2] = ["tokenizer.json", "config.json"];

/// Whether `path` is a graph ferry migrates as one (an `.onnx` file).
pub fn is_graph(path: &Path) -> bool {
    ferry_runtime::graph::is_onnx(path)
}

/// Migrates the graph at `path`: `resolve` -> `optimize` -> `write` -> `verify` ->
/// `verify-outputs`, one function per stage (a dry run, or a pass that broke the tolerance,
/// stops after `optimize`).
pub(crate) fn migrate(
    path: &Path,
    opts: &MigrateOptions,
    stages: &mut Stages<'_>,
) -> Result<MigrationReport> {
    if let Target::Tensors(t) = opts.target {
        return Err(Error::Usage(format!(
            "{} is a graph: migrate it to onnx (--to onnx); ferry does not extract a graph's weights into {t}",
            path.display()
        )));
    }
    let original = stages.run("resolve", |_| resolve(path))?;
    let inputs = vec![file_record(path, None)?];
    let mut model = original.clone();
    let pipeline = stages.run("optimize", |_| optimize(&original, &mut model, opts))?;
    let model_path = opts.out_dir.join(format!("{}.onnx", opts.file_stem));
    let mut outputs = Vec::new();
    let mut end_to_end = Vec::new();
    if !opts.dry_run && pipeline.failed.is_none() {
        let written = stages.run("write", |_| write(path, &model, &model_path, opts))?;
        for f in &written {
            outputs.push(file_record(f, None)?);
        }
        end_to_end = stages.run("verify", |_| verify(&original, &model_path))?;
    }
    let outputs_check = verify_outputs(path, &model_path, opts, !end_to_end.is_empty(), stages)?;
    let ok = !opts.dry_run
        && pipeline.failed.is_none()
        && !end_to_end.is_empty()
        && end_to_end.iter().all(|c| c.ok)
        && outputs_check.as_ref().is_none_or(crate::OutputsRecord::ok);
    Ok(MigrationReport {
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        options: opts.options_json.clone(),
        input_format: "onnx".into(),
        inputs,
        outputs,
        stages: Vec::new(),
        tensors: Vec::new(),
        rename: Default::default(),
        tied_groups: Vec::new(),
        missing: Vec::new(),
        parameters: original.parameters(),
        task_eval: None,
        outputs_check,
        graph: Some(GraphRecord {
            pipeline,
            end_to_end,
        }),
        ok,
    })
}

/// `resolve`: reads the graph at `path`.
fn resolve(path: &Path) -> Result<(OnnxModel, String)> {
    let m = read_model(path)?;
    let summary = format!(
        "{}: ONNX opset {}, {} nodes, {} initializers ({} parameters)",
        path.display(),
        m.opset(),
        m.graph.nodes.len(),
        m.graph.initializers.len(),
        m.parameters()
    );
    Ok((m, summary))
}

/// `optimize`: runs the passes `opts` names (all by default) on `model`, a copy of
/// `original`, each verified on seeded inputs.
fn optimize(
    original: &OnnxModel,
    model: &mut OnnxModel,
    opts: &MigrateOptions,
) -> Result<(PipelineReport, String)> {
    let list = if opts.passes.is_empty() {
        passes::all()
    } else {
        passes::by_names(&opts.passes)?
    };
    let r = PassManager::new(list)
        .verify(VerifyOptions {
            inputs: None,
            rel_tolerance: GRAPH_TOLERANCE,
        })
        .run(model, |_| {})?;
    let summary = format!(
        "{} -> {} nodes; {}",
        original.graph.nodes.len(),
        model.graph.nodes.len(),
        match &r.failed {
            Some(p) => format!("pass `{p}` broke the tolerance"),
            None => format!(
                "{} passes, each verified within {GRAPH_TOLERANCE:e} relative",
                r.passes.len()
            ),
        }
    );
    Ok((r, summary))
}

/// `write`: writes `model` to `model_path` (with its external data) and copies the companions
/// beside `path`; returns every file written.
fn write(
    path: &Path,
    model: &OnnxModel,
    model_path: &Path,
    opts: &MigrateOptions,
) -> Result<(Vec<PathBuf>, String)> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let data = write_model(model, model_path, &ExportOptions::default())?;
    let mut files = vec![model_path.to_path_buf()];
    files.extend(data);
    // What the runtime needs to run the written graph as a language model.
    for name in COMPANIONS {
        let src = path.with_file_name(name);
        if src.is_file() {
            files.push(crate::pipeline::copy_companion(&src, &opts.out_dir)?);
        }
    }
    let summary = format!(
        "wrote {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((files, summary))
}

/// `verify`: the original graph against the written file, read back, on seeded inputs at
/// each of [`CHECK_SIZES`].
fn verify(original: &OnnxModel, model_path: &Path) -> Result<(Vec<TensorComparison>, String)> {
    let back = read_model(model_path)?;
    let (a, b) = (
        Executor::new(original, &Device::Cpu)?,
        Executor::new(&back, &Device::Cpu)?,
    );
    let mut checks = Vec::new();
    for sizes in CHECK_SIZES {
        let feeds = synth_inputs(&original.graph, &symbol_sizes(&original.graph, sizes), 3)?;
        checks.extend(compare_outputs(
            &a.run(&feeds)?,
            &b.run(&feeds)?,
            GRAPH_TOLERANCE,
        )?);
    }
    let ok = checks.iter().filter(|c| c.ok).count();
    let worst = checks.iter().filter_map(|c| c.max_abs).fold(0.0, f64::max);
    let summary = format!(
        "{ok}/{} output checks within tolerance (2 input sizes), max abs {worst:.2e}",
        checks.len()
    );
    Ok((checks, summary))
}

/// `verify-outputs`: the graph at `path` against the written one on the probes, when the end
/// to end check `verified` some outputs; a record saying so when the check is off, none when
/// nothing was written and verified.
fn verify_outputs(
    path: &Path,
    model_path: &Path,
    opts: &MigrateOptions,
    verified: bool,
    stages: &mut Stages<'_>,
) -> Result<Option<crate::OutputsRecord>> {
    Ok(match (&opts.outputs, verified) {
        (None, _) => Some(crate::OutputsRecord::skipped(
            "--no-verify-outputs was given",
        )),
        (Some(_), false) => None,
        (Some(check), true) => Some(stages.run("verify-outputs", |_| {
            // Optimizing passes keep f32: the outputs must be the same up to rounding.
            let exact: ferry_verify::Budget = "exact".parse()?;
            let rec = crate::outputs::run(path, model_path, exact, check)?;
            let summary = crate::pipeline::outputs_summary(&rec);
            Ok((rec, summary))
        })?),
    })
}
