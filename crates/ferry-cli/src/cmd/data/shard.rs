//! `ferry data shard`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use ferry_data::stream::{self, ShardIndex};

use super::{spinner, CorpusArgs};

/// Arguments of `ferry data shard`.
#[derive(clap::Args)]
#[command(
    after_help = "Splits any corpus ferry reads into a folder per language (OUT/<lang>/part-00000.jsonl, one JSON\nrecord per line with its text and label), the layout `[data] stream` trains from and `ferry data\nsample` / `ferry data tokenizer train` stream. One pass; memory holds one record and a 64 KiB\nbuffer per language. The folder appears only when complete.\n\nExamples:\n  ferry data shard corpora/udhr/train.tsv --out runs/udhr-shards\n  ferry data shard web.jsonl.gz --out shards --part-mb 64 --json\n  ferry data shard corpus.tsv --out shards --dry-run"
)]
pub struct Args {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// The folder to write (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Start a language's next part file after this many MiB.
    #[arg(long, default_value_t = 256)]
    part_mb: u64,
    /// Count the records per language without writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ferry data shard`.
pub fn run(a: Args) -> Result<ExitCode> {
    if a.part_mb == 0 {
        bail!("--part-mb 0 holds nothing: give at least 1");
    }
    if a.out.exists() {
        bail!(
            "{}: already exists; remove it or choose another --out",
            a.out.display()
        );
    }
    let t0 = std::time::Instant::now();
    let mut reader = a.corpus.open()?;
    let bar = spinner(a.json || a.corpus.quiet, "records");
    let counts: Vec<(String, u64, usize)> = if a.dry_run {
        let mut by_lang: BTreeMap<String, u64> = BTreeMap::new();
        for (i, r) in reader.by_ref().enumerate() {
            *by_lang.entry(r?.lang).or_default() += 1;
            if i.is_multiple_of(65_536) {
                bar.set_position(i as u64);
            }
        }
        by_lang.into_iter().map(|(l, n)| (l, n, 0)).collect()
    } else {
        let index: ShardIndex = stream::write_shards(&mut reader, &a.out, a.part_mb << 20, |n| {
            bar.set_position(n)
        })?;
        index
            .langs
            .iter()
            .map(|l| (l.lang.clone(), l.records(), l.files.len()))
            .collect()
    };
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let records: u64 = counts.iter().map(|c| c.1).sum();
    if a.json {
        let langs: Vec<_> = counts
            .iter()
            .map(|(l, n, f)| serde_json::json!({"lang": l, "records": n, "files": f}))
            .collect();
        let j = serde_json::json!({"corpus": a.corpus.corpus.display().to_string(),
            "out": a.out.display().to_string(), "written": !a.dry_run, "records": records,
            "languages": langs, "seconds": seconds, "issues": reader.issues().to_json()});
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{:<14} {:>10} {:>6}", "lang", "records", "files");
        for (l, n, f) in &counts {
            println!("{l:<14} {n:>10} {f:>6}");
        }
        let verb = if a.dry_run { "would split" } else { "split" };
        println!(
            "{verb} {records} records into {} languages{} ({seconds:.1} s)",
            counts.len(),
            if a.dry_run {
                format!(": dry run, {} not written", a.out.display())
            } else {
                format!(" under {}", a.out.display())
            }
        );
    }
    a.corpus.report_issues(reader.issues());
    Ok(ExitCode::SUCCESS)
}
