//! `ferry data batch`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use ferry_data::batch::{BatchConfig, BatchSize, PadSide};
use ferry_data::encode::{batch_all, encode_corpus, EncodeOptions, LabelFrom};
use ferry_data::lang::LangTagStyle;
use ferry_data::tokenize::{thread_pool, Tokenizer};

use super::{spinner, CorpusArgs};

/// Arguments of `ferry data batch`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry data batch corpora/udhr/train.tsv --tokenizer tokenizer.json --max-tokens 8192\n  ferry data batch corpora/udhr/parallel --pair de-en --tokenizer tok.json --batch-size 32 --lang-tags fairseq\n  ferry data batch corpus.tsv --tokenizer tok.json --threads 2 --window 0 --json   # what scripts/bench_data_peer.py runs\n  ferry data batch huge.jsonl.gz --tokenizer tok.json --window 50000   # memory holds 50,000 records at a time"
)]
pub struct Args {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// The tokenizer.json.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Token budget per batch (batch size x padded length).
    #[arg(long, conflicts_with = "batch_size")]
    max_tokens: Option<usize>,
    /// Examples per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Keep corpus order instead of sorting by length before cutting batches.
    #[arg(long)]
    no_bucket: bool,
    /// Shuffle examples and batches with this seed.
    #[arg(long)]
    shuffle: Option<u64>,
    /// Padding side: right or left.
    #[arg(long, default_value = "right", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<PadSide>()))]
    pad_side: PadSide,
    /// Round the padded length up to a multiple of this.
    #[arg(long)]
    pad_to_multiple_of: Option<usize>,
    /// Add language tags: fairseq (__en__ first) or mbart (en_XX last on the source).
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<LangTagStyle>()))]
    lang_tags: Option<LangTagStyle>,
    /// Do not add the tokenizer's special tokens.
    #[arg(long)]
    no_special_tokens: bool,
    /// Records encoded and bucketed together; memory holds one window (0: the whole corpus,
    /// sorted as one).
    #[arg(long, default_value_t = 200_000)]
    window: usize,
    /// Worker threads for encoding and batching (0 = one per core); the output does not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry data batch`.
pub fn run(a: Args) -> Result<ExitCode> {
    let size = match (a.max_tokens, a.batch_size) {
        (Some(t), None) => BatchSize::MaxTokens(t),
        (None, Some(b)) => BatchSize::Examples(b),
        (None, None) => BatchSize::MaxTokens(8192),
        (Some(_), Some(_)) => bail!("give --max-tokens or --batch-size, not both"),
    };
    let pool = thread_pool(a.threads)?;
    let tok = Tokenizer::from_file(&a.tokenizer)?;
    let t0 = Instant::now();
    let mut reader = a.corpus.open()?;
    let bar = spinner(a.json || a.corpus.quiet, "records encoded");
    let opts = EncodeOptions {
        add_special_tokens: !a.no_special_tokens,
        lang_tags: a.lang_tags.clone(),
        label_from: LabelFrom::None,
        max_len: None,
    };
    let window = if a.window == 0 { usize::MAX } else { a.window };
    let (mut records, mut tokens, mut padded, mut max_len, mut n_batches) = (0, 0, 0, 0, 0);
    for w in 0u64.. {
        let done = records as u64;
        let chunk = reader.by_ref().take(window);
        let encoded = encode_corpus(chunk, &tok, &pool, &opts, |n| bar.set_position(done + n))?;
        if encoded.examples.is_empty() {
            break;
        }
        let cfg = BatchConfig {
            size,
            bucket: !a.no_bucket,
            shuffle: a.shuffle.map(|s| s.wrapping_add(w)),
            pad_id: tok.pad_id(),
            side: a.pad_side,
            pad_to_multiple_of: a.pad_to_multiple_of,
        };
        let batches = batch_all(&encoded.examples, &cfg, &Device::Cpu, &pool)?;
        records += encoded.examples.len();
        tokens += batches.iter().map(|b| b.tokens).sum::<usize>();
        padded += batches
            .iter()
            .map(|b| b.input_ids.elem_count())
            .sum::<usize>();
        max_len = batches
            .iter()
            .map(|b| b.input_ids.dims()[1])
            .fold(max_len, usize::max);
        n_batches += batches.len();
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let threads = pool.current_num_threads();
    if a.json {
        let j = serde_json::json!({"corpus": a.corpus.corpus.display().to_string(), "records": records,
            "tokens": tokens, "batches": n_batches, "padded_tokens": padded, "window": a.window,
            "padding_ratio": if padded > 0 { 1.0 - tokens as f64 / padded as f64 } else { 0.0 },
            "max_len": max_len, "threads": threads, "seconds": seconds,
            "tokens_per_second": tokens as f64 / seconds, "issues": reader.issues().to_json()});
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "{records} records -> {n_batches} batches of up to {max_len} tokens: {tokens} tokens, {padded} with padding ({:.1}% padding)",
            100.0 * (1.0 - tokens as f64 / padded.max(1) as f64)
        );
        println!(
            "{seconds:.3} s on {threads} threads: {:.0} records/s, {:.0} tokens/s",
            records as f64 / seconds,
            tokens as f64 / seconds
        );
    }
    a.corpus.report_issues(reader.issues());
    Ok(ExitCode::SUCCESS)
}
