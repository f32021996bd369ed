//! `ferry data`: multilingual corpora — statistics, language sampling, tokenizer training,
//! vocabularies and padded batches.

mod batch;
mod sample;
mod shard;
mod stats;
mod tokenizer;
mod vocab;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use ferry_data::corpus::{Column, CorpusFormat, CorpusOptions};
use ferry_data::issues::{IssueLog, OnError};
use ferry_data::sampling::{ByLanguage, LanguageSampler, SamplerConfig};
use ferry_data::stream::{Draws as StreamDraws, ShardIndex};
use ferry_data::Record;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `ferry data`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Per-language records, characters, tokens, length histogram and scripts of a corpus.
    Stats(stats::Args),
    /// Draw a language-balanced sample (alpha smoothing) and show the resulting mix.
    Sample(sample::Args),
    /// Train or inspect Hugging Face tokenizers.
    #[command(subcommand)]
    Tokenizer(tokenizer::Command),
    /// Build a torchtext-style vocabulary (basic_english tokens, min_freq, specials).
    Vocab(vocab::Args),
    /// Tokenize a corpus into padded batches and report their shape and the throughput.
    Batch(batch::Args),
    /// Split a corpus into a folder per language, the layout streamed training reads.
    Shard(shard::Args),
}

/// Runs `ferry data`.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Stats(a) => stats::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Vocab(a) => vocab::run(a),
        Command::Batch(a) => batch::run(a),
        Command::Shard(a) => shard::run(a),
    }
}

/// How to read a corpus: shared by every `ferry data` command.
#[derive(clap::Args, Clone)]
pub struct CorpusArgs {
    /// A corpus: a .tsv/.csv/.jsonl/.parquet file (optionally .gz), a Moses folder
    /// (train.de, train.en, ...) or a folder per language (en/*.txt, de/*.txt).
    pub corpus: PathBuf,
    /// The layout (detected from the content when not given).
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<CorpusFormat>()))]
    pub format: Option<CorpusFormat>,
    /// The text column: a header/field name or a 0-based position.
    #[arg(long, default_value = "text")]
    pub text_col: String,
    /// The language column: a header/field name or a 0-based position.
    #[arg(long, default_value = "lang")]
    pub lang_col: String,
    /// The label column (read when present; an error when named and missing).
    #[arg(long)]
    pub label_col: Option<String>,
    /// The language of every record whose source names none.
    #[arg(long)]
    pub lang: Option<String>,
    /// The first row is data, not a header (by default a first row holding a column name is a header).
    #[arg(long)]
    pub no_header: bool,
    /// The split of a Moses corpus.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Source and target language of a parallel Moses corpus, e.g. de-en (default: every
    /// {split}.{lang} file as monolingual text).
    #[arg(long)]
    pub pair: Option<String>,
    /// Malformed records: skip (count and report them) or fail (stop at the first, naming file:line).
    #[arg(long, default_value = "skip", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<OnError>()))]
    pub on_error: OnError,
    /// Treat a language label that is not a language code (ISO 639 / BCP-47, e.g. the UDHR's
    /// ell_monotonic) as malformed: drop it, or with --on-error fail stop. By default any label
    /// is a class and such labels are only counted as warnings.
    #[arg(long)]
    pub strict_languages: bool,
    /// Do not print what was dropped or kept with a warning on stderr (--json output still has it).
    #[arg(long, short)]
    pub quiet: bool,
}

impl CorpusArgs {
    /// The reader options.
    pub fn options(&self) -> Result<CorpusOptions> {
        let pair = match &self.pair {
            None => None,
            Some(p) => match p.split_once('-') {
                Some((s, t)) if !s.is_empty() && !t.is_empty() => {
                    Some((s.to_string(), t.to_string()))
                }
                _ => bail!("--pair {p:?}: give source and target as SRC-TGT, e.g. de-en"),
            },
        };
        let col = |s: &str| s.parse::<Column>().unwrap_or(Column::Name(s.to_string()));
        Ok(CorpusOptions {
            format: self.format,
            text: col(&self.text_col),
            lang: Some(col(&self.lang_col)),
            label: Some(col(self.label_col.as_deref().unwrap_or("label"))),
            label_required: self.label_col.is_some(),
            header: self.no_header.then_some(false),
            default_lang: self.lang.clone(),
            split: self.split.clone(),
            pair,
            on_error: self.on_error,
            strict_languages: self.strict_languages,
        })
    }

    /// Opens the corpus.
    pub fn open(&self) -> Result<ferry_data::corpus::CorpusReader> {
        Ok(ferry_data::corpus::open(&self.corpus, &self.options()?)?)
    }

    /// Whether the corpus is a folder per language, which sampling commands stream.
    fn is_folder_per_language(&self) -> Result<bool> {
        let by_lang = match self.format {
            Some(f) => f == CorpusFormat::ByLang,
            None => {
                self.corpus.is_dir()
                    && ferry_data::corpus::detect(&self.corpus)? == CorpusFormat::ByLang
            }
        };
        Ok(by_lang)
    }

    /// The corpus to draw language-balanced samples from. A folder per language is
    /// streamed (indexed once; each language read in its order, shuffled a block at a time;
    /// memory holds a block per language); any other corpus is read into memory.
    pub fn sample_source(&self) -> Result<SampleSource> {
        if self.is_folder_per_language()? {
            let index = ShardIndex::scan(&self.corpus, |_| {})?;
            let skipped: u64 = index.langs.iter().map(|l| l.skipped).sum();
            if skipped > 0 && !self.quiet {
                eprintln!(
                    "{}: {skipped} lines hold no record (blank, not UTF-8, or not a JSON record)",
                    self.corpus.display()
                );
            }
            return Ok(SampleSource::Streamed(index, self.corpus.clone()));
        }
        let (records, issues) = self.open()?.read_all()?;
        Ok(SampleSource::InMemory(ByLanguage::new(records), issues))
    }

    /// Prints on stderr, unless `--quiet`, what reading the corpus dropped (a summary line by
    /// reason, then the first location of each) and kept with a warning.
    pub fn report_issues(&self, issues: &IssueLog) {
        if !self.quiet {
            print_issues(&self.corpus, issues);
        }
    }
}

/// Records of a language shuffled together when a folder per language is streamed.
const STREAM_BLOCK: usize = 1024;

/// A corpus to draw language-balanced samples from ([`CorpusArgs::sample_source`]).
pub enum SampleSource {
    /// Its records, held, with what reading dropped or kept with a warning.
    InMemory(ByLanguage, IssueLog),
    /// A folder per language (at the path), streamed.
    Streamed(ShardIndex, PathBuf),
}

/// The drawn records of a sample.
pub type Draws<'a> = Box<dyn Iterator<Item = ferry_data::Result<Record>> + Send + 'a>;

impl SampleSource {
    /// The languages, sorted.
    pub fn languages(&self) -> Vec<String> {
        match self {
            SampleSource::InMemory(b, _) => b.languages().to_vec(),
            SampleSource::Streamed(i, _) => i.languages(),
        }
    }

    /// Records per language.
    pub fn sizes(&self) -> Vec<u64> {
        match self {
            SampleSource::InMemory(b, _) => b.sizes(),
            SampleSource::Streamed(i, _) => i.sizes(),
        }
    }

    /// What reading the corpus dropped or kept with a warning (in memory).
    pub fn issues(&self) -> IssueLog {
        match self {
            SampleSource::InMemory(_, issues) => issues.clone(),
            SampleSource::Streamed(..) => IssueLog::default(),
        }
    }

    /// Whether the records are streamed rather than held.
    pub fn streamed(&self) -> bool {
        matches!(self, SampleSource::Streamed(..))
    }

    /// The sampling probability of each language and the draws `cfg` makes (the same ones
    /// each time).
    pub fn draws(&self, cfg: SamplerConfig) -> Result<(Vec<f64>, Draws<'_>)> {
        Ok(match self {
            SampleSource::InMemory(by_lang, _) => {
                let sampler = LanguageSampler::new(by_lang.sizes(), cfg)?;
                let p = sampler.probabilities().to_vec();
                (p, Box::new(sampler.map(|d| Ok(by_lang.get(d).clone()))))
            }
            SampleSource::Streamed(index, path) => {
                if cfg.replacement {
                    bail!(
                        "{}: --replacement needs the corpus in memory; a folder per language is \
                         streamed, each language in its order",
                        path.display()
                    );
                }
                let draws = StreamDraws::new(index, cfg, STREAM_BLOCK)?;
                (draws.probabilities().to_vec(), Box::new(draws))
            }
        })
    }
}

/// A record-counting spinner on stderr, hidden when `quiet` or stderr is not a terminal.
pub fn spinner(quiet: bool, what: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} {msg} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_string());
    bar
}

/// Prints on stderr what reading `corpus` dropped or kept with a warning, if anything:
/// `corpus.tsv: dropped 3 records: 2 empty_text, 1 invalid_lang`, then a line per reason.
pub fn print_issues(corpus: &std::path::Path, issues: &IssueLog) {
    if !issues.is_empty() {
        eprint!("{}: {issues}", corpus.display());
    }
}
