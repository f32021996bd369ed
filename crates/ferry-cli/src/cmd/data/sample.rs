//! `ferry data sample`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_data::sampling::{SamplerConfig, Stopping};
use ferry_data::Record;

use super::CorpusArgs;

/// Arguments of `ferry data sample`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry data sample corpora/udhr/train.tsv --alpha 0.3\n  ferry data sample corpus.jsonl --alpha 0.5 --size 100000 --out balanced.tsv\n  ferry data sample corpus.tsv --alpha 0 --stopping first_exhausted --json"
)]
pub struct Args {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Smoothing exponent: 1 keeps the natural mix, 0 gives every language the same share
    /// (XLM-R: 0.3; fairseq's temperature T = 1/alpha).
    #[arg(long, default_value_t = 0.3)]
    alpha: f64,
    /// Draws ("virtual epoch" size; default: until --stopping ends the epoch).
    #[arg(long)]
    size: Option<u64>,
    /// When an epoch without --size ends: first_exhausted or all_exhausted.
    #[arg(long, default_value = "all_exhausted", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Stopping>()))]
    stopping: Stopping,
    /// Draw with replacement (default: walk each language through a seeded permutation).
    #[arg(long)]
    replacement: bool,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the sample as TSV (lang, text) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Show the mix without writing --out.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry data sample`.
pub fn run(a: Args) -> Result<ExitCode> {
    let cfg = SamplerConfig {
        alpha: a.alpha,
        epoch_size: a.size,
        stopping: a.stopping,
        replacement: a.replacement,
        seed: a.seed,
    };
    let source = a.corpus.sample_source()?;
    let (langs, sizes) = (&source.languages(), &source.sizes());
    let (probs, mut draws) = source.draws(cfg)?;
    let total: u64 = sizes.iter().sum();
    let mut drawn = vec![0u64; langs.len()];
    let mut count = |r: &Record| {
        if let Ok(i) = langs.binary_search(&r.lang) {
            drawn[i] += 1;
        }
    };
    // The draws are written as they come (a streamed corpus is never held).
    match (&a.out, a.dry_run) {
        (Some(out), false) => ferry_io::atomic::write_atomic(out, |w| {
            let io = |e| ferry_io::Error::io(out, e);
            writeln!(w, "lang\ttext").map_err(io)?;
            for r in draws.by_ref() {
                let r = r.map_err(|e| ferry_io::Error::Invalid(e.to_string()))?;
                count(&r);
                writeln!(w, "{}\t{}", r.lang, r.text.replace(['\t', '\n'], " ")).map_err(io)?;
            }
            Ok(())
        })
        .with_context(|| format!("writing {}", out.display()))?,
        _ => {
            for r in draws {
                count(&r?);
            }
        }
    }
    let issues = source.issues();
    let n: u64 = drawn.iter().sum();
    if a.json {
        let rows: Vec<_> = langs
            .iter()
            .enumerate()
            .map(|(i, l)| {
                serde_json::json!({"lang": l, "records": sizes[i],
                    "share": sizes[i] as f64 / total as f64, "probability": probs[i],
                    "drawn": drawn[i], "drawn_share": drawn[i] as f64 / n.max(1) as f64})
            })
            .collect();
        let j = serde_json::json!({"alpha": a.alpha, "seed": a.seed, "draws": n, "streamed": source.streamed(),
            "written": a.out.as_ref().filter(|_| !a.dry_run).map(|p| p.display().to_string()),
            "languages": rows, "issues": issues.to_json()});
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "{n} draws over {} languages (alpha {}):",
            langs.len(),
            a.alpha
        );
        println!(
            "{:<10} {:>9} {:>8} {:>8} {:>9} {:>8}",
            "lang", "records", "share", "p", "drawn", "drawn%"
        );
        for (i, l) in langs.iter().enumerate() {
            println!(
                "{l:<10} {:>9} {:>7.2}% {:>7.2}% {:>9} {:>7.2}%",
                sizes[i],
                100.0 * sizes[i] as f64 / total as f64,
                100.0 * probs[i],
                drawn[i],
                100.0 * drawn[i] as f64 / n.max(1) as f64
            );
        }
        match (&a.out, a.dry_run) {
            (Some(out), false) => println!("wrote {}", out.display()),
            (Some(out), true) => println!("dry run: would write {n} records to {}", out.display()),
            _ => {}
        }
    }
    a.corpus.report_issues(&issues);
    Ok(ExitCode::SUCCESS)
}
