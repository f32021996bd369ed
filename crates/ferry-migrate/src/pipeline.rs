//! The stages of a migration and the function that runs them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferry_io::compare::{compare_tensors, Tolerance};
use ferry_io::convert::{self, ConvertOptions, Plan, TargetFormat};
use ferry_io::Checkpoint;

use crate::report::{FileRecord, MigrationReport, StageRecord, TensorRecord};
use crate::{fs_err, sha256_file, Result};

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
    let bytes = std::fs::metadata(path).map_err(|e| fs_err(path, e))?.len();
    Ok(FileRecord {
        path: shown.unwrap_or_else(|| path.display().to_string()),
        bytes,
        sha256: sha256_file(path)?,
    })
}

/// The files a checkpoint was read from: the opened file, every shard, the companions.
fn input_files(ck: &Checkpoint) -> Vec<PathBuf> {
    let mut files = vec![ck.path.clone()];
    for t in &ck.tensors {
        if !files.iter().any(|f| f.as_path() == t.file.as_ref()) {
            files.push(t.file.to_path_buf());
        }
    }
    files.extend(ck.companions.iter().cloned());
    files
}

/// Copies `src` into `dir` atomically, keeping its file name.
pub(crate) fn copy_companion(src: &Path, dir: &Path) -> Result<PathBuf> {
    let name = src.file_name().unwrap_or_default();
    let dst = dir.join(name);
    let bytes = std::fs::read(src).map_err(|e| fs_err(src, e))?;
    ferry_io::atomic::write_atomic(&dst, |w| {
        std::io::Write::write_all(w, &bytes).map_err(|e| ferry_io::Error::io(&dst, e))
    })?;
    Ok(dst)
}

/// The migration of a checkpoint (not a graph): resolve -> convert -> verify.
pub(crate) fn migrate_tensors(
    opts: &MigrateOptions,
    target: TargetFormat,
    stages: &mut Stages<'_>,
) -> Result<MigrationReport> {
    // Keeps the materialized embedded model alive until the end.
    let mut _scratch: Option<tempfile::TempDir> = None;

    let (ck, shown, input_path) = stages.run("resolve", |_| {
        let (path, shown) = match &opts.input {
            Input::Path(p) => (p.clone(), None),
            Input::Embedded => {
                let dir = tempfile::tempdir().map_err(|e| fs_err(Path::new("tempdir"), e))?;
                let p = dir.path().join("langid-demo");
                std::fs::create_dir(&p).map_err(|e| fs_err(&p, e))?;
                crate::write_embedded(&p).map_err(|e| fs_err(&p, e))?;
                _scratch = Some(dir);
                (p, Some(crate::EMBEDDED_NAME.to_string()))
            }
        };
        let ck = Checkpoint::open_with(&path, opts.online)?;
        ck.validate()?;
        let summary = format!(
            "{} ({}): {} tensors, {} parameters, {} companion files",
            shown.clone().unwrap_or_else(|| path.display().to_string()),
            ck.format,
            ck.tensors.len(),
            ck.param_count(),
            ck.companions.len()
        );
        Ok(((ck, shown, path), summary))
    })?;

    let inputs = input_files(&ck)
        .iter()
        .enumerate()
        .map(|(i, p)| file_record(p, if i == 0 { shown.clone() } else { None }))
        .collect::<Result<Vec<_>>>()?;

    let (ck, layout) = convert::prepare(ck, target, opts.convert.keep_names)?;
    let plan = stages.run("plan", |_| {
        let mut plan = Plan::new(&ck, target, &opts.convert)?;
        plan.layout = layout;
        let summary = format!(
            "{} tensors -> {} ({} bytes); {} cast, {} quantized ({} to a fallback type{}), {} dequantized, {} kept float, {} tied{}",
            plan.entries.len(),
            target,
            plan.output_bytes(),
            count(&plan, convert::Action::Cast),
            count(&plan, convert::Action::Quantize),
            plan.fallbacks().len(),
            match &plan.imatrix {
                Some(m) => format!(
                    ", {} with the importance matrix {}",
                    plan.imatrix_uses().0.len(),
                    m.path.display()
                ),
                None => String::new(),
            },
            count(&plan, convert::Action::Dequantize),
            plan.kept_float().len(),
            plan.entries.iter().filter(|e| e.tied_to.is_some()).count(),
            match plan.dropped_tied.len() {
                0 => String::new(),
                n => format!(", {n} tied copies left out (config.json ties them, as transformers saves them)"),
            },
        );
        Ok((plan, summary))
    })?;

    let ferry_model: Option<PathBuf> =
        ferry_train::checkpoint::is_model_dir(&input_path).then(|| input_path.clone());
    let model_path = opts
        .out_dir
        .join(format!("{}.{}", opts.file_stem, target.extension()));
    let mut outputs = Vec::new();
    let mut tensors = Vec::new();
    let mut missing = Vec::new();
    let mut task = None;
    let mut outputs_check = None;
    if !opts.dry_run {
        let (written, model) = stages.run("convert", |ev| {
            std::fs::create_dir_all(&opts.out_dir).map_err(|e| fs_err(&opts.out_dir, e))?;
            let metadata = convert::output_metadata(&ck, &plan)?;
            ev(Event::WriteTotal(plan.output_bytes()));
            let mut progress = |name: &str, bytes: u64| ev(Event::TensorWritten { name, bytes });
            let mut files = convert::write(
                &plan,
                &ck,
                &model_path,
                &metadata,
                opts.shard_size,
                &mut progress,
            )?;
            // What to reopen for verification: the model file, or the index of its shards
            // (written last).
            let model = files.last().cloned().unwrap_or_else(|| model_path.clone());
            for c in &ck.companions {
                files.push(copy_companion(c, &opts.out_dir)?);
            }
            // A GGUF back to Hugging Face names gets the config.json transformers needs, and
            // its tokenizer as a tokenizer.json when none travelled with it.
            if let Some(cfg) = convert::write_hf_config(&ck, &plan, &opts.out_dir)? {
                files.push(cfg);
                let tok = opts.out_dir.join("tokenizer.json");
                if !tok.exists() {
                    if let Ok(t) = ferry_runtime::Tokenizer::from_gguf(&ck.metadata, &ck.path) {
                        t.save(&tok)?;
                        files.push(tok);
                    }
                }
            }
            // A ferry model folder stays one: its card travels with the weights.
            if let Some(dir) = &ferry_model {
                files.push(copy_companion(
                    &dir.join(ferry_train::checkpoint::CARD),
                    &opts.out_dir,
                )?);
            }
            let summary = format!(
                "wrote {} file(s) to {}",
                files.len(),
                opts.out_dir.display()
            );
            Ok(((files, model), summary))
        })?;
        for f in &written {
            outputs.push(file_record(f, None)?);
        }

        let (t, m) = stages.run("verify", |_| {
            let out = Checkpoint::open(&model)?;
            let errors = plan.quant_errors();
            let mut records = Vec::new();
            let mut missing = Vec::new();
            for e in &plan.entries {
                let (Some(src), Some(dst)) = (ck.get(&e.source), out.get(&e.name)) else {
                    missing.push(format!("{} (expected in the output)", e.name));
                    continue;
                };
                let tol = Tolerance::for_conversion(e.from, e.to);
                records.push(TensorRecord {
                    planned: e.clone(),
                    check: compare_tensors(src, dst, Some(tol))?,
                    quant_error: errors.get(&e.name).cloned(),
                });
            }
            for t in &out.tensors {
                if !plan.entries.iter().any(|e| e.name == t.name) {
                    missing.push(format!("{} (in the output but not planned)", t.name));
                }
            }
            let passed = records.iter().filter(|r| r.check.ok).count();
            let exact = records.iter().filter(|r| r.check.bit_exact).count();
            let summary = format!(
                "{passed}/{} tensors within tolerance ({exact} bit-exact), {} missing or unexpected",
                records.len(),
                missing.len()
            );
            Ok(((records, missing), summary))
        })?;
        tensors = t;
        missing = m;

        // A ferry model folder is run as one: the written folder holds the card and the
        // tokenizer beside the weights.
        let migrated = match &ferry_model {
            Some(_) => classifier_folder(&opts.out_dir, &model_path),
            None => Ok(model.clone()),
        };
        outputs_check = Some(match (&opts.outputs, migrated) {
            (None, _) => crate::OutputsRecord::skipped("--no-verify-outputs was given"),
            (Some(_), Err(why)) => crate::OutputsRecord::skipped(why),
            (Some(check), Ok(migrated)) => stages.run("verify-outputs", |_| {
                let implied = crate::outputs::implied_budget(&plan);
                let rec = crate::outputs::run(&input_path, &migrated, implied, check)?;
                let summary = outputs_summary(&rec);
                Ok((rec, summary))
            })?,
        });

        if let Some(dir) = &ferry_model {
            task = stages.run("task-eval", |_| {
                let t = crate::task_eval::run(dir, &model_path, opts.eval_data.as_deref())?;
                let summary = match &t {
                    None => "no evaluation data: the model card records none, or a file not on this machine (pass --eval-data)".to_string(),
                    Some(t) => format!(
                        "accuracy {:.2}% -> {:.2}% on {} ({} of {} languages changed)",
                        100.0 * t.accuracy_before,
                        100.0 * t.accuracy_after,
                        t.data.display(),
                        t.changed(),
                        t.per_language.len()
                    ),
                };
                Ok((t, summary))
            })?;
        }
    }

    let ok = !opts.dry_run
        && missing.is_empty()
        && tensors.iter().all(|t| t.check.ok)
        && outputs_check.as_ref().is_none_or(crate::OutputsRecord::ok);
    let report = MigrationReport {
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        options: opts.options_json.clone(),
        input_format: ck.format.to_string(),
        inputs,
        outputs,
        stages: Vec::new(),
        tensors,
        rename: plan.rename.clone(),
        tied_groups: ck.tied_groups(),
        missing,
        parameters: ck.param_count(),
        task_eval: task,
        outputs_check,
        graph: None,
        ok,
    };
    Ok(report)
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

/// The written folder of a migrated ferry classifier, when it is one that loads as the written
/// model: its weights file must be the one just written (`--name` other than `model`, or an
/// older `model.*` that takes precedence, would load something else).
fn classifier_folder(out_dir: &Path, model_path: &Path) -> std::result::Result<PathBuf, String> {
    match ferry_train::checkpoint::weights_file(out_dir) {
        Some(w) if w == model_path => Ok(out_dir.to_path_buf()),
        Some(w) => Err(format!(
            "{} would load {} as the model's weights, not the file just written ({}); use --name model and an empty --out folder",
            out_dir.display(),
            w.display(),
            model_path.display()
        )),
        None => Err(format!(
            "{} is not a ferry model folder (its weights must be model.*); use --name model",
            out_dir.display()
        )),
    }
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

fn count(plan: &Plan, action: convert::Action) -> usize {
    plan.entries.iter().filter(|e| e.action == action).count()
}
