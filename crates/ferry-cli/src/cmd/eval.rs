//! `ferry eval`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::Device;
use ferry_train::checkpoint;
use ferry_train::report::{self, Named};
use ferry_train::run::evaluate_file;

/// Arguments of `ferry eval`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry eval --model runs/langid-udhr/best --data corpora/udhr/test.tsv\n  ferry eval --model runs/langid-udhr/best --data corpora/udhr/test.tsv --snippet-words 4 --json\n  ferry eval --model runs/langid-udhr/best --weights model-f16.safetensors --data test.tsv   # a converted copy\n  ferry eval --model runs/langid-udhr/best --data corpora/udhr/test.tsv --snippet-words 4 --top-k 2 --reject-below 0.9 --out eval/   # \"unknown\" below 90% confidence, coverage.svg"
)]
pub struct Args {
    /// A model folder written by `ferry train` (best/, last/ or a checkpoint).
    #[arg(long)]
    model: PathBuf,
    /// The evaluation corpus (any layout `ferry data` reads).
    #[arg(long)]
    data: PathBuf,
    /// Use these weights instead of the folder's (f16 safetensors, q8_0 GGUF, ...: same tensor names).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Also evaluate on snippets of this many words cut from each text.
    #[arg(long)]
    snippet_words: Option<usize>,
    /// Also report accuracy with the gold class among the N most probable (1, 3 and 5 always).
    #[arg(long, value_name = "N")]
    top_k: Option<usize>,
    /// Answer "unknown" below this confidence (the top class probability, 0 to 1): report the
    /// share answered and the accuracy on it (the report's curve shows every threshold).
    #[arg(long, value_name = "P")]
    reject_below: Option<f64>,
    /// Examples per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write report.md, report.json, accuracy.svg and coverage.svg into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Drop evaluation records whose language label is not a language code (ISO 639 /
    /// BCP-47); a model trained with `strict_language_codes = true` always does.
    #[arg(long)]
    strict_languages: bool,
    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// Do not print what reading the data dropped or kept with a warning on stderr (the
    /// reports still have it).
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry eval`.
pub fn run(a: Args) -> Result<ExitCode> {
    super::train::set_threads(a.threads);
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if a.top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    if let Some(p) = a.reject_below.filter(|p| !(0.0..=1.0).contains(p)) {
        bail!("--reject-below {p}: a confidence is between 0 and 1");
    }
    let device = Device::Cpu;
    let mut loaded = checkpoint::load_model(&a.model, a.weights.as_deref(), &device)?;
    loaded.card.strict_language_codes |= a.strict_languages;
    let mut evals = vec![(
        "full".to_string(),
        evaluate_file(&loaded, &a.data, None, a.batch_size, threads, &device)?,
    )];
    if let Some(w) = a.snippet_words {
        evals.push((
            format!("{w}-word snippets"),
            evaluate_file(&loaded, &a.data, Some(w), a.batch_size, threads, &device)?,
        ));
    }
    for (_, e) in &mut evals {
        if let Some(k) = a.top_k {
            *e = e.clone().with_top_k(k);
        }
        if let Some(p) = a.reject_below {
            *e = e.clone().with_reject_below(p);
        }
    }
    let named: Vec<Named<'_>> = evals
        .iter()
        .map(|(n, e)| Named { name: n, eval: e })
        .collect();
    let title = format!("{} on {}", a.model.display(), a.data.display());
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)?;
        report::write(out, &title, &named)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report::json(&named))?);
    } else {
        print!("{}", report::markdown(&title, &named));
    }
    // Every evaluation reads the same file, so its issues are printed once.
    if !a.quiet {
        super::data::print_issues(&a.data, &evals[0].1.issues);
    }
    Ok(ExitCode::SUCCESS)
}
