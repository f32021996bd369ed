//! ferry-verify: does the migrated model still compute what the original did, language by
//! language?
//!
//! [`verify`] runs both models (each loaded as its consumer loads it, by `ferry-runtime`) on
//! the same token ids of multilingual probe texts ([`probes`]: the embedded UDHR set or any
//! corpus), and reports per language the statistics of [`stats`]: llama.cpp's KL-divergence
//! set for decoders, embedding agreement for encoders, and each layer's SQNR to say where the
//! error enters. A [`preset::Budget`] judges every language; [`report`] writes what a person
//! reads and what [`replay`] re-runs.
//!
//! [`calibrate`] runs one model on a language-balanced sample of the same kind of text and
//! records each linear layer's input statistics as llama.cpp's importance matrix.
//!
//! [`autoquant`] chooses a GGML type per weight tensor (`--quant auto`) from each group of
//! matrices' measured effect on the outputs in every language, and measures the choice.
#![warn(missing_docs)]

pub mod autoquant;
pub mod calibrate;
pub mod error;
pub mod preset;
pub mod probes;
pub mod report;
pub mod run;
pub mod stats;

pub use error::{Error, Result};
pub use preset::Budget;
pub use probes::{Probe, ProbeOptions};
pub use report::VerifyReport;
pub use run::{verify, Verification, VerifyOptions};

/// What a replay found: the recorded and today's results, and whether they agree.
#[derive(Debug)]
pub struct Replay {
    /// The report replayed.
    pub recorded: VerifyReport,
    /// Today's run on the same inputs and probes.
    pub today: VerifyReport,
    /// Differences in words (empty when today's result matches the recorded one).
    pub differences: Vec<String>,
}

/// Compares two verifications' outcomes: verdicts per language, and each statistic within a
/// relative `rtol` (runs on other machines or thread counts differ in the last bits).
pub fn compare(recorded: &Verification, today: &Verification, rtol: f64) -> Vec<String> {
    let mut out = Vec::new();
    if recorded.ok != today.ok {
        out.push(format!(
            "verdict was ok={}, now ok={}",
            recorded.ok, today.ok
        ));
    }
    let close = |a: f64, b: f64| (a - b).abs() <= rtol * a.abs().max(b.abs()) + 1e-12;
    for r in &recorded.languages {
        let Some(t) = today.languages.iter().find(|t| t.lang == r.lang) else {
            out.push(format!("{}: missing today", r.lang));
            continue;
        };
        let mut pairs: Vec<(&str, f64, f64)> =
            match (&r.decoder, &t.decoder, &r.encoder, &t.encoder) {
                (Some(a), Some(b), _, _) => vec![
                    ("mean KLD", a.kld_mean, b.kld_mean),
                    ("same top-1", a.same_top1, b.same_top1),
                    ("PPL", a.ppl_migrated, b.ppl_migrated),
                ],
                (_, _, Some(a), Some(b)) => vec![
                    ("mean cosine", a.cosine_mean, b.cosine_mean),
                    ("min cosine", a.cosine_min, b.cosine_min),
                ],
                _ => vec![],
            };
        if let (Some(a), Some(b)) = (&r.classifier, &t.classifier) {
            pairs.push(("mean KLD", a.kld_mean, b.kld_mean));
            pairs.push(("same class", a.agreement, b.agreement));
            let acc = |x: Option<f64>| x.unwrap_or(-1.0);
            pairs.push((
                "accuracy",
                acc(a.accuracy_migrated),
                acc(b.accuracy_migrated),
            ));
        }
        for (name, a, b) in pairs {
            if !close(a, b) {
                out.push(format!("{}: {name} was {a:.6}, now {b:.6}", r.lang));
            }
        }
    }
    out
}

/// The models, tokenizer and probes a report recorded, checked by SHA-256 against the files
/// at the recorded paths: an error names the first file whose content changed.
pub fn check_inputs(r: &VerifyReport) -> Result<()> {
    for input in [&r.original, &r.migrated, &r.tokenizer] {
        let now = report::sha256_of(&input.path)?;
        if now != input.sha256 {
            return Err(Error::Mismatch(format!(
                "{}: content changed since the report (SHA-256 {} then, {} now); replay needs the same files",
                input.path.display(),
                input.sha256.get(..12).unwrap_or(&input.sha256),
                now.get(..12).unwrap_or(&now)
            )));
        }
    }
    Ok(())
}

/// What to verify, by path.
#[derive(Debug, Clone)]
pub struct Job {
    /// The original model (HF folder, checkpoint with its config, GGUF).
    pub original: std::path::PathBuf,
    /// The migrated model.
    pub migrated: std::path::PathBuf,
    /// The `tokenizer.json` both are fed through (default: the original's).
    pub tokenizer: Option<std::path::PathBuf>,
    /// Where the probes came from, for the report.
    pub probe_source: String,
    /// The probes.
    pub probes: Vec<Probe>,
    /// How.
    pub options: VerifyOptions,
    /// Where the migrated model runs: a ferry-device plan for it (`None`: the CPU in f32).
    /// The original always runs on the CPU in f32, the reference.
    pub placement: Option<ferry_device::Plan>,
}

/// Loads both models on the CPU, runs [`verify`] and records the inputs by SHA-256.
pub fn run_job(job: &Job, progress: impl FnMut(usize, usize)) -> Result<VerifyReport> {
    let device = candle_core::Device::Cpu;
    let kernels = job.options.kernels;
    let original = ferry_runtime::Model::load(&job.original, &device, kernels)?;
    let (migrated, plan) = match &job.placement {
        None => (
            ferry_runtime::Model::load(&job.migrated, &device, kernels)?,
            None,
        ),
        Some(plan) => {
            let place = ferry_runtime::Placement::from_plan(plan)?;
            let m = ferry_runtime::Model::load_placed(&job.migrated, &place, kernels)?;
            (m, Some(plan))
        }
    };
    // The tokenizer given, else the original's (its tokenizer.json, or the one its GGUF
    // carries), else the migrated model's.
    let (tokenizer, tok_path) = match &job.tokenizer {
        Some(p) => (ferry_runtime::Tokenizer::from_file(p)?, p.clone()),
        None => match original.load_tokenizer() {
            Ok(t) => (t, original.tokenizer_source()),
            Err(_) => (migrated.load_tokenizer()?, migrated.tokenizer_source()),
        },
    };
    let result = verify(
        &original,
        &migrated,
        &tokenizer,
        &job.probes,
        &job.options,
        progress,
    )?;
    Ok(VerifyReport {
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        // By where they are on disk (a hub id resolves to its cache folder).
        original: report::Input::of(&original.source)?,
        migrated: report::Input::of(&migrated.source)?,
        tokenizer: report::Input::of(&tok_path)?,
        probe_source: job.probe_source.clone(),
        probes: job.probes.clone(),
        placement: plan
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::Options(format!("placement: {e}")))?,
        result,
    })
}

/// Re-runs the verification recorded in `report.json` at `path` (same files, checked by
/// SHA-256; same probes, tolerance and token count) and compares the outcomes.
pub fn replay(path: &std::path::Path, progress: impl FnMut(usize, usize)) -> Result<Replay> {
    let recorded = report::read(path)?;
    if recorded.placement.is_some() {
        return Err(Error::Options(format!(
            "{} verified a model placed on devices; a replay runs on the CPU: re-run it with \
             `ferry verify ORIGINAL MIGRATED --devices ...` (or `ferry place`) instead",
            path.display()
        )));
    }
    check_inputs(&recorded)?;
    let r = &recorded.result;
    let job = Job {
        original: recorded.original.path.clone(),
        migrated: recorded.migrated.path.clone(),
        // A tokenizer that came from inside a model is found there again.
        tokenizer: Some(recorded.tokenizer.path.clone())
            .filter(|t| *t != recorded.original.path && *t != recorded.migrated.path),
        probe_source: recorded.probe_source.clone(),
        probes: recorded.probes.clone(),
        options: VerifyOptions {
            max_tokens: r.max_tokens,
            budget: r.budget.clone(),
            attribution: !r.layers.is_empty(),
            kernels: r.kernels,
        },
        placement: None,
    };
    let today = run_job(&job, progress)?;
    let differences = compare(&recorded.result, &today.result, 1e-3);
    Ok(Replay {
        recorded,
        today,
        differences,
    })
}
