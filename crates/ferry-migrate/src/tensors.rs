//! The migration of a checkpoint (anything `Checkpoint::open` reads; a graph goes through
//! [`crate::graph`]): `resolve` -> `plan` -> `convert` -> `verify` -> `verify-outputs` ->
//! `task-eval`, one function per stage.

use std::path::{Path, PathBuf};

use ferry_io::compare::{compare_tensors, Tolerance};
use ferry_io::convert::{self, Plan, TargetFormat};
use ferry_io::Checkpoint;

use crate::pipeline::{
    copy_companion, file_record, outputs_summary, Event, Input, MigrateOptions, Stages,
};
use crate::report::{MigrationReport, TensorRecord};
use crate::{Error, OutputsRecord, Result, TaskEval};

/// What the `resolve` stage found.
struct Resolved {
    ck: Checkpoint,
    /// The name the report shows for the input (the embedded model's), if not its path.
    shown: Option<String>,
    path: PathBuf,
}

/// What a run that writes adds to the report.
#[derive(Default)]
struct Written {
    outputs: Vec<crate::FileRecord>,
    tensors: Vec<TensorRecord>,
    missing: Vec<String>,
    outputs_check: Option<OutputsRecord>,
    task: Option<TaskEval>,
}

/// Migrates the checkpoint `opts` names to `target`, running the stages in order (a dry run
/// stops after `plan`).
pub(crate) fn migrate(
    opts: &MigrateOptions,
    target: TargetFormat,
    stages: &mut Stages<'_>,
) -> Result<MigrationReport> {
    // Keeps the materialized embedded model alive until the end.
    let mut scratch: Option<tempfile::TempDir> = None;
    let Resolved { ck, shown, path } = resolve(opts, stages, &mut scratch)?;
    let inputs = input_files(&ck)
        .iter()
        .enumerate()
        .map(|(i, p)| file_record(p, if i == 0 { shown.clone() } else { None }))
        .collect::<Result<Vec<_>>>()?;
    let (ck, layout) = convert::prepare(ck, target, opts.convert.keep_names)?;
    let plan = stages.run("plan", |_| {
        let mut plan = Plan::new(&ck, target, &opts.convert)?;
        plan.layout = layout;
        let summary = plan_summary(&plan, target);
        Ok((plan, summary))
    })?;
    let written = if opts.dry_run {
        Written::default()
    } else {
        write_and_check(opts, target, &ck, &plan, &path, stages)?
    };
    let ok = !opts.dry_run
        && written.missing.is_empty()
        && written.tensors.iter().all(|t| t.check.ok)
        && written.outputs_check.as_ref().is_none_or(OutputsRecord::ok);
    Ok(MigrationReport {
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        options: opts.options_json.clone(),
        input_format: ck.format.to_string(),
        inputs,
        outputs: written.outputs,
        stages: Vec::new(),
        tensors: written.tensors,
        rename: plan.rename.clone(),
        tied_groups: ck.tied_groups(),
        missing: written.missing,
        parameters: ck.param_count(),
        task_eval: written.task,
        outputs_check: written.outputs_check,
        graph: None,
        ok,
    })
}

/// `resolve`: opens the input (the embedded model is written to `scratch` first) and checks
/// every tensor's bounds.
fn resolve(
    opts: &MigrateOptions,
    stages: &mut Stages<'_>,
    scratch: &mut Option<tempfile::TempDir>,
) -> Result<Resolved> {
    stages.run("resolve", |_| {
        let (path, shown) = match &opts.input {
            Input::Path(p) => (p.clone(), None),
            Input::Embedded => {
                let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
                let p = dir.path().join("langid-demo");
                std::fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
                crate::write_embedded(&p).map_err(|e| Error::io(&p, e))?;
                *scratch = Some(dir);
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
        Ok((Resolved { ck, shown, path }, summary))
    })
}

/// The `plan` stage's line.
fn plan_summary(plan: &Plan, target: TargetFormat) -> String {
    format!(
        "{} tensors -> {} ({} bytes); {} cast, {} quantized ({} to a fallback type{}), {} dequantized, {} kept float, {} tied{}",
        plan.entries.len(),
        target,
        plan.output_bytes(),
        count(plan, convert::Action::Cast),
        count(plan, convert::Action::Quantize),
        plan.fallbacks().len(),
        match &plan.imatrix {
            Some(m) => format!(
                ", {} with the importance matrix {}",
                plan.imatrix_uses().0.len(),
                m.label()
            ),
            None => String::new(),
        },
        count(plan, convert::Action::Dequantize),
        plan.kept_float().len(),
        plan.entries.iter().filter(|e| e.tied_to.is_some()).count(),
        match plan.dropped_tied.len() {
            0 => String::new(),
            n => format!(", {n} tied copies left out (config.json ties them, as transformers saves them)"),
        },
    )
}

/// `convert`, `verify`, `verify-outputs` and (for a ferry model folder) `task-eval`.
fn write_and_check(
    opts: &MigrateOptions,
    target: TargetFormat,
    ck: &Checkpoint,
    plan: &Plan,
    input: &Path,
    stages: &mut Stages<'_>,
) -> Result<Written> {
    let ferry_model: Option<PathBuf> =
        ferry_train::model_dir::is_model_dir(input).then(|| input.to_path_buf());
    let model_path = opts
        .out_dir
        .join(format!("{}.{}", opts.file_stem, target.extension()));
    let (files, model) = write(opts, ck, plan, &model_path, ferry_model.as_deref(), stages)?;
    let outputs = files
        .iter()
        .map(|f| file_record(f, None))
        .collect::<Result<Vec<_>>>()?;
    let (tensors, missing) = stages.run("verify", |_| verify(ck, plan, &model))?;
    // A ferry model folder is run as one: the written folder holds the card and the
    // tokenizer beside the weights.
    let migrated = match &ferry_model {
        Some(_) => classifier_folder(&opts.out_dir, &model_path),
        None => Ok(model.clone()),
    };
    let outputs_check = Some(match (&opts.outputs, migrated) {
        (None, _) => OutputsRecord::skipped("--no-verify-outputs was given"),
        (Some(_), Err(why)) => OutputsRecord::skipped(why),
        (Some(check), Ok(migrated)) => stages.run("verify-outputs", |_| {
            let implied = crate::outputs::implied_budget(plan);
            let rec = crate::outputs::run(input, &migrated, implied, check)?;
            let summary = outputs_summary(&rec);
            Ok((rec, summary))
        })?,
    });
    let task = match &ferry_model {
        Some(dir) => stages.run("task-eval", |_| task_eval(opts, dir, &model_path))?,
        None => None,
    };
    Ok(Written {
        outputs,
        tensors,
        missing,
        outputs_check,
        task,
    })
}

/// `convert`: writes the model and its companions; returns every file written and the one
/// to reopen for verification (the model, or the index of its shards).
fn write(
    opts: &MigrateOptions,
    ck: &Checkpoint,
    plan: &Plan,
    model_path: &Path,
    ferry_model: Option<&Path>,
    stages: &mut Stages<'_>,
) -> Result<(Vec<PathBuf>, PathBuf)> {
    stages.run("convert", |ev| {
        std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
        let metadata = convert::output_metadata(ck, plan)?;
        ev(Event::WriteTotal(plan.output_bytes()));
        let mut progress = |name: &str, bytes: u64| ev(Event::TensorWritten { name, bytes });
        let mut files = convert::write(
            plan,
            ck,
            model_path,
            &metadata,
            opts.shard_size,
            &mut progress,
        )?;
        // The index of shards is written last.
        let model = files
            .last()
            .cloned()
            .unwrap_or_else(|| model_path.to_path_buf());
        for c in &ck.companions {
            files.push(copy_companion(c, &opts.out_dir)?);
        }
        // A GGUF back to Hugging Face names gets the config.json transformers needs, and
        // its tokenizer as a tokenizer.json when none travelled with it.
        if let Some(cfg) = convert::write_hf_config(ck, plan, &opts.out_dir)? {
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
        if let Some(dir) = ferry_model {
            files.push(copy_companion(
                &dir.join(ferry_train::model_dir::CARD),
                &opts.out_dir,
            )?);
        }
        let summary = format!(
            "wrote {} file(s) to {}",
            files.len(),
            opts.out_dir.display()
        );
        Ok(((files, model), summary))
    })
}

type Verified = (Vec<TensorRecord>, Vec<String>);

/// `verify`: every planned tensor of the written model against its source, within the
/// tolerance its conversion allows; tensors missing or unplanned.
fn verify(ck: &Checkpoint, plan: &Plan, model: &Path) -> Result<(Verified, String)> {
    let out = Checkpoint::open(model)?;
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
}

/// `task-eval`: a ferry classifier's per-language accuracy before and after.
fn task_eval(
    opts: &MigrateOptions,
    dir: &Path,
    model_path: &Path,
) -> Result<(Option<TaskEval>, String)> {
    let t = crate::task_eval::run(dir, model_path, opts.eval_data.as_deref())?;
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

/// The written folder of a migrated ferry classifier, when it is one that loads as the written
/// model: its weights file must be the one just written (`--name` other than `model`, or an
/// older `model.*` that takes precedence, would load something else).
fn classifier_folder(out_dir: &Path, model_path: &Path) -> std::result::Result<PathBuf, String> {
    match ferry_train::model_dir::weights_file(out_dir) {
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

fn count(plan: &Plan, action: convert::Action) -> usize {
    plan.entries.iter().filter(|e| e.action == action).count()
}
