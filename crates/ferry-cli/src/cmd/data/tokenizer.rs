//! `ferry data tokenizer train|encode`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use ferry_data::lang::LangTagStyle;
use ferry_data::sampling::SamplerConfig;
use ferry_data::tokenize::train::{self, Kind, TrainSpec};
use ferry_data::tokenize::Tokenizer;

use super::CorpusArgs;

/// `ferry data tokenizer` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a BPE, Unigram or WordPiece tokenizer on a language-balanced sample of a corpus.
    #[command(
        after_help = "Examples:\n  ferry data tokenizer train corpora/udhr/train.tsv --kind unigram --vocab-size 8000 --out tok.json\n  ferry data tokenizer train corpus.jsonl --kind bpe --alpha 0.3 --lang-tags fairseq --out tok.json"
    )]
    Train(TrainArgs),
    /// Show how a tokenizer splits a text.
    Encode(EncodeArgs),
}

/// Arguments of `ferry data tokenizer train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// The model: bpe, unigram or wordpiece.
    #[arg(long, default_value = "unigram", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Kind>()))]
    kind: Kind,
    /// Vocabulary size, special and byte tokens included.
    #[arg(long, default_value_t = 8000)]
    vocab_size: usize,
    /// Minimum frequency of a merge or word (bpe, wordpiece).
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// Language smoothing exponent for the training sample (1 = natural mix, 0 = uniform).
    #[arg(long, default_value_t = 0.3)]
    alpha: f64,
    /// Texts in the training sample (default: as many as the corpus has).
    #[arg(long)]
    sample: Option<u64>,
    /// Seed of the sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Add a language tag per corpus language as special tokens: fairseq (__en__) or mbart (en_XX).
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<LangTagStyle>()))]
    lang_tags: Option<LangTagStyle>,
    /// No <0xNN> byte tokens (then unseen characters become <unk>).
    #[arg(long)]
    no_byte_fallback: bool,
    /// No NFKC normalization.
    #[arg(long)]
    no_nfkc: bool,
    /// Where to save tokenizer.json.
    #[arg(long, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// Train and report, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ferry data tokenizer encode`.
#[derive(clap::Args)]
pub struct EncodeArgs {
    /// The tokenizer.json.
    tokenizer: PathBuf,
    /// The text.
    text: String,
    /// Do not add the tokenizer's special tokens.
    #[arg(long)]
    no_special_tokens: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print nothing: the exit status says whether the tokenizer loads and encodes the text.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry data tokenizer ...`.
pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Train(a) => run_train(a),
        Command::Encode(a) => {
            let tok = Tokenizer::from_file(&a.tokenizer)?;
            let ids = tok.encode(&a.text, !a.no_special_tokens)?;
            let tokens = tok.tokens(&a.text, !a.no_special_tokens)?;
            if a.json {
                println!("{}", serde_json::json!({"ids": ids, "tokens": tokens}));
            } else if !a.quiet {
                println!("{} tokens: {}", ids.len(), tokens.join(" "));
                println!("ids: {ids:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_train(a: TrainArgs) -> Result<ExitCode> {
    let cfg = |total| SamplerConfig {
        alpha: a.alpha,
        epoch_size: Some(total),
        seed: a.seed,
        ..Default::default()
    };
    let source = a.corpus.sample_source()?;
    let total = a.sample.unwrap_or(source.sizes().iter().sum());
    let languages = source.languages();
    let spec = TrainSpec {
        kind: a.kind,
        vocab_size: a.vocab_size,
        min_frequency: a.min_frequency,
        nfkc: !a.no_nfkc,
        byte_fallback: !a.no_byte_fallback,
        lang_tags: a.lang_tags.clone().map(|s| (s, languages.clone())),
    };
    let t0 = Instant::now();
    // The trainer keeps word counts, not texts: the draws are read as it goes.
    let (issues, streamed) = (source.issues(), source.streamed());
    let mut failed = None;
    let texts = source.draws(cfg(total))?.1.map_while(|r| match r {
        Ok(r) => Some(r.text),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let tok = train::train(&spec, texts)?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let seconds = t0.elapsed().as_secs_f64();
    // Tokens per record per language on the training sample (drawn again, the same draws):
    // how evenly the vocabulary serves each language.
    let mut fertility: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in source.draws(cfg(total))?.1 {
        let r = r?;
        let e = fertility.entry(r.lang).or_default();
        e.0 += 1;
        e.1 += tok.encode(&r.text, false)?.len() as u64;
    }
    let written = match (&a.out, a.dry_run) {
        (Some(out), false) => {
            train::save(&tok, out)?;
            Some(out.display().to_string())
        }
        _ => None,
    };
    if a.json {
        let per_lang: serde_json::Map<String, serde_json::Value> = fertility
            .iter()
            .map(|(l, (n, t))| {
                (
                    l.to_string(),
                    serde_json::json!({"records": n, "tokens_per_record": *t as f64 / *n as f64}),
                )
            })
            .collect();
        let j = serde_json::json!({"kind": a.kind, "vocab_size": tok.vocab_size(), "sample": total, "streamed": streamed,
            "seconds": seconds, "written": written, "per_language": per_lang, "issues": issues.to_json()});
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "trained {:?}: {} tokens from {} texts in {} languages ({seconds:.1} s)",
            a.kind,
            tok.vocab_size(),
            total,
            languages.len()
        );
        println!("{:<10} {:>8} {:>14}", "lang", "records", "tokens/record");
        for (l, (n, t)) in &fertility {
            println!("{l:<10} {n:>8} {:>14.1}", *t as f64 / *n as f64);
        }
        match written {
            Some(p) => println!("wrote {p}"),
            None => println!("dry run: nothing written"),
        }
    }
    a.corpus.report_issues(&issues);
    Ok(ExitCode::SUCCESS)
}
