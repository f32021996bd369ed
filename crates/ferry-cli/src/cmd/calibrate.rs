//! `ferry calibrate`: an importance matrix (llama.cpp's imatrix GGUF) from a language-balanced
//! sample of multilingual text, for quantizing with `--imatrix`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use candle_core::Device;
use ferry_runtime::{Kernels, Model, Tokenizer};
use ferry_verify::calibrate::{self, CalibrateOptions, LanguageShare};
use serde_json::json;

use crate::progress::count_bar;
use crate::units::human_bytes;

/// Arguments of `ferry calibrate`.
#[derive(clap::Args)]
#[command(
    after_help = "The text: every language of the corpus gets a share of the token budget by XLM-R's smoothing (p ~ q^alpha over the languages' text counts; alpha 0 is uniform, 1 the corpus's own mix), its texts drawn by ferry-data's seeded language sampler, one text per sequence. Default corpus: the UDHR training articles embedded in ferry (47 languages; `ferry verify` probes with the held-out ones).\n\nThe output is llama.cpp's imatrix GGUF (`<weight>.in_sum2`, `<weight>.counts`, imatrix.datasets/chunk_count/chunk_size) under llama.cpp's tensor names, with ferry.imatrix.languages and the tokens per language: `ferry convert --imatrix` reads it, and it is the form `llama-quantize --imatrix` reads. The same model, text and options give the same bytes.\n\nExamples:\n  ferry calibrate target/models/SmolLM2-135M --out smollm2.imatrix.gguf\n  ferry calibrate target/models/SmolLM2-135M --languages en --out en.imatrix.gguf      # English only, to compare\n  ferry calibrate target/models/all-MiniLM-L6-v2 --corpus corpora/udhr/dev.tsv --alpha 0 --tokens 4096 --out minilm.imatrix.gguf\n  ferry calibrate model/ --tokens 65536 --dry-run                                        # the sample per language, nothing run\n  ferry convert target/models/SmolLM2-135M smollm2-q4k.gguf --quant q4_k --imatrix smollm2.imatrix.gguf"
)]
pub struct Args {
    /// The model (Hugging Face folder, checkpoint with its config.json, GGUF): a Llama-family decoder or a BERT-family encoder.
    pub model: PathBuf,
    /// Calibration text: any corpus ferry data reads (default: the embedded UDHR training articles, 47 languages).
    #[arg(long, value_name = "FILE|DIR")]
    pub corpus: Option<PathBuf>,
    /// Only these languages (comma-separated codes).
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Language smoothing exponent: 0 gives every language the same share, 1 the corpus's own mix (XLM-R uses 0.3).
    #[arg(long, default_value_t = 0.3)]
    pub alpha: f64,
    /// Tokens to run, over all languages (special tokens included).
    #[arg(long, default_value_t = calibrate::DEFAULT_TOKENS)]
    pub tokens: usize,
    /// The most tokens of one text run as one sequence (llama.cpp's imatrix.chunk_size; an encoder's position table caps it).
    #[arg(long, default_value_t = calibrate::DEFAULT_MAX_SEQ)]
    pub chunk_size: usize,
    /// The sampler's seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// tokenizer.json to use (default: the model's own).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// The importance matrix to write (GGUF).
    #[arg(long, short, default_value = "imatrix.gguf")]
    pub out: PathBuf,
    /// Show the sample per language and what would be written; run nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `ferry calibrate`.
pub fn run(a: Args) -> Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.alpha),
        "--alpha {} is outside [0, 1] (0: every language alike, 1: the corpus's own mix; XLM-R uses 0.3)",
        a.alpha
    );
    let model = Model::load(&a.model, &Device::Cpu, Kernels::F32)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let observed = calibrate::observed_size(&model.config).with_context(|| {
        format!(
            "{}: a {} has no linear layers ferry's runtime observes; calibration runs Llama-family decoders and BERT-family encoders",
            a.model.display(),
            model.config.name()
        )
    })?;
    let (tokenizer, tok_path) = match &a.tokenizer {
        Some(p) => (Tokenizer::from_file(p)?, p.clone()),
        None => (model.load_tokenizer()?, model.tokenizer_source()),
    };
    let (dataset, texts) = calibrate::texts(a.corpus.as_deref(), &a.languages)?;
    let opts = calibrate::fit_options(
        &model,
        &CalibrateOptions {
            alpha: a.alpha,
            tokens: a.tokens,
            max_seq: a.chunk_size,
            seed: a.seed,
        },
    );
    let sample = calibrate::sample(&texts, &tokenizer, &opts)?;
    if a.dry_run {
        print_dry_run(&a, (&dataset, texts.len()), &opts, &sample, observed)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bar = count_bar(sample.sequences.len() as u64, "texts", a.quiet || a.json);
    let (im, run) = calibrate::run(&model, &tok_path, &dataset, &sample, &opts, |i, _| {
        bar.set_position(i as u64)
    })?;
    bar.finish_and_clear();
    im.write(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"out": a.out, "calibration": run}))?
        );
    } else if !a.quiet {
        let langs = run.languages.iter().filter(|l| l.tokens > 0).count();
        println!(
            "wrote {}: {} matrices of {}, {} tokens in {} sequences from {langs} languages ({}, alpha {}) in {:.1}s",
            a.out.display(),
            run.entries,
            run.model,
            run.tokens,
            run.sequences,
            run.dataset,
            run.options.alpha,
            run.seconds
        );
        print_languages(&run.languages, false);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--dry-run` prints: the sample that would run, as JSON or in words.
fn print_dry_run(
    a: &Args,
    (dataset, texts): (&str, usize),
    opts: &CalibrateOptions,
    sample: &calibrate::Sample,
    (entries, columns): (usize, usize),
) -> Result<()> {
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dry_run": true, "model": a.model, "dataset": dataset, "out": a.out,
                "options": opts, "sequences": sample.sequences.len(),
                "tokens": sample.tokens(), "languages": sample.languages,
                "entries": entries, "statistics_bytes": columns * 8,
            }))?
        );
    } else {
        println!(
            "would run {} on {} tokens in {} sequences of at most {} tokens from {} ({} texts), alpha {}, seed {}:",
            a.model.display(),
            sample.tokens(),
            sample.sequences.len(),
            opts.max_seq,
            dataset,
            texts,
            opts.alpha,
            opts.seed
        );
        print_languages(&sample.languages, true);
        println!(
            "dry run: nothing run, nothing written ({} would hold {entries} matrices, {columns} columns; {} of statistics while running)",
            a.out.display(),
            human_bytes(columns as u64 * 8)
        );
    }
    Ok(())
}

/// Tokens per language, several to a line (with the sampling probability when `probability`).
fn print_languages(langs: &[LanguageShare], probability: bool) {
    let cells: Vec<String> = langs
        .iter()
        .map(|l| {
            if probability {
                format!("{} {} ({:.1}%)", l.lang, l.tokens, 100.0 * l.probability)
            } else {
                format!("{} {}", l.lang, l.tokens)
            }
        })
        .collect();
    let width = cells.iter().map(String::len).max().unwrap_or(0) + 2;
    let per_line = (96 / width).max(1);
    println!("  tokens per language:");
    for row in cells.chunks(per_line) {
        let line: String = row.iter().map(|c| format!("{c:width$}")).collect();
        println!("    {}", line.trim_end());
    }
}
