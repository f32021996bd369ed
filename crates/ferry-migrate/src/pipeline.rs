//! What every migration shares: its options and events, the stages it runs (timed, each
//! reported), the file records, and the report files it ends with.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferry_io::convert::{ConvertOptions, TargetFormat};

use crate::report::{FileRecord, MigrationReport, StageRecord};
use crate::{Error, Result};

/// What to migrate.
#[derive(Debug, Clone)]
pub enum Input {
    /// A file, a model folder, or a cached hub id.
    Path(PathBuf),
    /// The small model built into ferry.
    Embedded,
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A tensor format (for checkpoints and model folders).
    Tensors(TargetFormat),
    /// ONNX (for graph inputs: the optimized graph).
    Onnx,
}

/// Everything a migration needs to know.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The model to migrate.
    pub input: Input,
    /// Folder receiving the model, its companions and the reports.
    pub out_dir: PathBuf,
    /// Output format.
    pub target: Target,
    /// Graph inputs: the passes to run, in order (empty: ferry's default pipeline).
    pub passes: Vec<String>,
    /// Casts, quantization and renaming.
    pub convert: ConvertOptions,
    /// Shard size in bytes for safetensors output.
    pub shard_size: Option<u64>,
    /// File name of the written model, without extension.
    pub file_stem: String,
    /// Stop after planning: nothing is written.
    pub dry_run: bool,
    /// Download a hub id missing from the local cache.
    pub online: bool,
    /// Evaluation data for a model trained by ferry (default: the file recorded at training).
    pub eval_data: Option<PathBuf>,
    /// Run both models on multilingual probes after writing (`None`: skip that stage).
    pub outputs: Option<crate::OutputCheck>,
    /// The options as given, recorded in the report so the run can be replayed.
    pub options_json: serde_json::Value,
}

/// Progress of a running migration, for progress bars.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stage begins.
    StageStarted(&'a str),
    /// Conversion will write this many bytes.
    WriteTotal(u64),
    /// One tensor was written.
    TensorWritten {
        /// Output name.
        name: &'a str,
        /// Bytes written for it.
        bytes: u64,
    },
    /// A stage ended.
    StageFinished(&'a StageRecord),
}

/// The stages run so far, and where their events go.
pub(crate) struct Stages<'e> {
    /// Each stage's record, in order.
    pub(crate) records: Vec<StageRecord>,
    /// The caller's progress callback.
    pub(crate) on_event: &'e mut dyn FnMut(Event<'_>),
}

impl Stages<'_> {
    pub(crate) fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut dyn FnMut(Event<'_>)) -> Result<(T, String)>,
    ) -> Result<T> {
        (self.on_event)(Event::StageStarted(name));
        let start = Instant::now();
        let (value, summary) = f(self.on_event)?;
        let rec = StageRecord {
            name: name.to_string(),
            seconds: start.elapsed().as_secs_f64(),
            summary,
        };
        (self.on_event)(Event::StageFinished(&rec));
        self.records.push(rec);
        Ok(value)
    }
}

pub(crate) fn file_record(path: &Path, shown: Option<String>) -> Result<FileRecord> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    Ok(FileRecord {
        path: shown.unwrap_or_else(|| path.display().to_string()),
        bytes,
        sha256: ferry_verify::report::sha256_of(path)?,
    })
}

/// Copies `src` into `dir` atomically, keeping its file name.
pub(crate) fn copy_companion(src: &Path, dir: &Path) -> Result<PathBuf> {
    let name = src.file_name().unwrap_or_default();
    let dst = dir.join(name);
    let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
    ferry_io::atomic::write_atomic(&dst, |w| {
        std::io::Write::write_all(w, &bytes).map_err(|e| ferry_io::Error::io(&dst, e))
    })?;
    Ok(dst)
}

/// Writes `report.md` and `report.json` into the output folder; returns the report with the stages.
pub(crate) fn write_reports(
    mut report: MigrationReport,
    opts: &MigrateOptions,
    mut stages: Stages<'_>,
) -> Result<MigrationReport> {
    let md_path = opts.out_dir.join("report.md");
    let json_path = opts.out_dir.join("report.json");
    stages.run("report", |_| {
        Ok((
            (),
            format!("{} and {}", md_path.display(), json_path.display()),
        ))
    })?;
    report.stages = stages.records;
    let md = report.to_markdown();
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| ferry_io::Error::Invalid(e.to_string()))?;
    for (p, bytes) in [(&md_path, md.as_bytes()), (&json_path, json.as_slice())] {
        ferry_io::atomic::write_atomic(p, |w| {
            std::io::Write::write_all(w, bytes).map_err(|e| ferry_io::Error::io(p, e))
        })?;
    }
    Ok(report)
}

/// One line on what verify-outputs found.
pub(crate) fn outputs_summary(rec: &crate::OutputsRecord) -> String {
    match (&rec.skipped, &rec.report) {
        (Some(why), _) => format!("skipped: {why}"),
        (_, Some(r)) => {
            let v = &r.result;
            let failing = v.languages.iter().filter(|l| !l.ok()).count();
            format!(
                "{} languages, tolerance {}: {}",
                v.languages.len(),
                v.budget,
                if failing == 0 {
                    "all within".to_string()
                } else {
                    format!(
                        "{failing} outside (worst: {})",
                        v.worst.clone().unwrap_or_default()
                    )
                }
            )
        }
        _ => String::new(),
    }
}
