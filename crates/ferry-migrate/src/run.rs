//! The migration a user runs: a graph goes through [`crate::graph`], a checkpoint through
//! [`crate::tensors`]; both run [`crate::pipeline`]'s stages and end in its reports.

use crate::pipeline::{self, Event, Input, MigrateOptions, Stages, Target};
use crate::report::MigrationReport;
use crate::Result;
use crate::{graph, tensors};

/// Runs the migration: resolve -> convert -> verify -> report (for a graph: resolve ->
/// optimize -> write -> verify -> report). The report files (`report.md`, `report.json`) are
/// written into the output folder, and returned.
pub fn migrate(
    opts: &MigrateOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<MigrationReport> {
    let mut stages = Stages {
        records: Vec::new(),
        on_event,
    };
    let mut report = match &opts.input {
        Input::Path(p) if graph::is_graph(p) => graph::migrate(p, opts, &mut stages)?,
        _ => {
            let target = match opts.target {
                Target::Tensors(t) => t,
                Target::Onnx => return Err(crate::Error::Usage(
                    "ONNX output needs a graph (an .onnx input); a checkpoint holds only weights"
                        .into(),
                )),
            };
            tensors::migrate(opts, target, &mut stages)?
        }
    };
    if opts.dry_run {
        report.stages = stages.records;
        return Ok(report);
    }
    pipeline::write_reports(report, opts, stages)
}
