//! `ferry data vocab`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ferry_data::tokenize::basic::{basic_english, Vocab};

use super::CorpusArgs;

/// Arguments of `ferry data vocab`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry data vocab corpora/udhr/train.tsv --min-freq 2 --out vocab.json\n  ferry data vocab data/multi30k --split train --lang en --min-freq 2 --out vocab.en.json"
)]
pub struct Args {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Drop tokens seen fewer times than this.
    #[arg(long, default_value_t = 1)]
    min_freq: u64,
    /// Special tokens, first in the vocabulary (`<unk>` becomes the default index).
    #[arg(long, value_delimiter = ',', default_value = "<unk>,<pad>,<bos>,<eos>")]
    specials: Vec<String>,
    /// Keep only records of these languages (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to save the vocabulary (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry data vocab`.
pub fn run(a: Args) -> Result<ExitCode> {
    let (records, issues) = a.corpus.open()?.read_all()?;
    let texts = records
        .iter()
        .filter(|r| a.only.is_empty() || a.only.contains(&r.lang))
        .map(|r| basic_english(&r.text));
    let specials: Vec<&str> = a.specials.iter().map(String::as_str).collect();
    let vocab = Vocab::build(texts, a.min_freq, &specials);
    if let Some(out) = &a.out {
        vocab.save(out)?;
    }
    let first: Vec<&str> = (0..vocab.len().min(12) as u32)
        .filter_map(|i| vocab.token(i))
        .collect();
    if a.json {
        let j = serde_json::json!({"size": vocab.len(), "first": first,
            "out": a.out.as_ref().map(|p| p.display().to_string()), "issues": issues.to_json()});
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "{} tokens (min_freq {}): {}",
            vocab.len(),
            a.min_freq,
            first.join(" ")
        );
        if let Some(out) = &a.out {
            println!("wrote {}", out.display());
        }
    }
    a.corpus.report_issues(&issues);
    Ok(ExitCode::SUCCESS)
}
