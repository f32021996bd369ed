//! `ferry data stats`.

use std::process::ExitCode;

use anyhow::Result;
use ferry_data::stats::{self, LENGTH_BINS};
use ferry_data::tokenize::Tokenizer;

use super::{spinner, CorpusArgs};

/// Arguments of `ferry data stats`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry data stats corpora/udhr/train.tsv\n  ferry data stats corpora/udhr/parallel --split test --json\n  ferry data stats corpus.jsonl.gz --tokenizer tokenizer.json"
)]
pub struct Args {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Count tokens with this tokenizer.json (default: whitespace-separated words).
    #[arg(long)]
    tokenizer: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry data stats`.
pub fn run(a: Args) -> Result<ExitCode> {
    let tok = a.tokenizer.as_ref().map(Tokenizer::from_file).transpose()?;
    let reader = a.corpus.open()?;
    let format = reader.format();
    let bar = spinner(a.json || a.corpus.quiet, "records");
    let st = stats::collect(reader, tok.as_ref(), |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if a.json {
        let mut j = st.to_json();
        j["corpus"] = a.corpus.corpus.display().to_string().into();
        j["format"] = format.to_string().into();
        println!("{}", serde_json::to_string_pretty(&j)?);
        a.corpus.report_issues(&st.issues);
        return Ok(ExitCode::SUCCESS);
    }
    let unit = if st.tokenizer { "tokens" } else { "words" };
    println!(
        "{} ({format}): {} records in {} languages{}",
        a.corpus.corpus.display(),
        st.records(),
        st.langs.len(),
        if st.parallel > 0 {
            format!(", {} parallel", st.parallel)
        } else {
            String::new()
        }
    );
    println!(
        "{:<10} {:>9} {:>11} {:>11} {:>8} {:>6}  script",
        "lang", "records", "chars", unit, "mean", "max"
    );
    let mut hist = [0u64; LENGTH_BINS.len()];
    for (lang, l) in &st.langs {
        println!(
            "{lang:<10} {:>9} {:>11} {:>11} {:>8.1} {:>6}  {}",
            l.records,
            l.chars,
            l.tokens,
            l.tokens as f64 / l.records.max(1) as f64,
            l.max_tokens,
            l.main_script().map_or("-".into(), |s| format!("{s:?}"))
        );
        for (h, n) in hist.iter_mut().zip(l.length_hist) {
            *h += n;
        }
    }
    println!("\nlength ({unit}) histogram, all languages:");
    let max = hist.iter().copied().max().unwrap_or(1).max(1);
    let mut lo = 0;
    for (hi, n) in LENGTH_BINS.iter().zip(hist) {
        let label = if *hi == u64::MAX {
            format!("{lo}+")
        } else {
            format!("{lo}-{}", hi - 1)
        };
        println!(
            "  {label:>9} {n:>8} {}",
            "#".repeat((n * 40 / max) as usize)
        );
        lo = *hi;
    }
    a.corpus.report_issues(&st.issues);
    Ok(ExitCode::SUCCESS)
}
