//! Where the training loop's micro-batches come from: the encoded corpus held in memory and
//! drawn by the language sampler, or a stream over a folder per language (`[data] stream`)
//! that holds a bounded window. Both save their position in the [`TrainerState`], so a
//! resumed run continues exactly.

use std::path::{Path, PathBuf};

use ferry_data::batch::Example;
use ferry_data::corpus::{self, CorpusOptions};
use ferry_data::issues::IssueLog;
use ferry_data::sampling::{ByLanguage, LanguageSampler, SamplerConfig, SamplerState};
use ferry_data::stream::{self, LangReader, ShardIndex, StreamConfig, StreamState, WindowStream};
use ferry_data::tokenize::Tokenizer;
use ferry_data::Record;

use crate::config::{LabelKind, TrainConfig};
use crate::data::{self, ExampleOptions};
use crate::model_dir::TrainerState;
use crate::{Error, Result};

/// Records encoded per step of a pass over a streamed corpus (naive Bayes counts).
const PASS_CHUNK: usize = 8192;

/// Turns a window of streamed records into training examples (snippets added, labels mapped
/// onto the run's classes).
pub struct StreamEncoder<'a> {
    /// The run's tokenizer.
    pub tok: &'a Tokenizer,
    /// The encoding pool.
    pub pool: &'a rayon::ThreadPool,
    /// How examples are made (`classes` set to the run's classes).
    pub opts: ExampleOptions<'a>,
    /// Also cut each record into snippets of this many words (`[data] augment_snippets`).
    pub snippets: Option<usize>,
    /// The corpus, for error messages.
    pub source: &'a Path,
}

impl StreamEncoder<'_> {
    /// The examples of `records` (and of their snippets).
    pub fn encode(&self, mut records: Vec<Record>) -> Result<Vec<Example>> {
        if let Some(w) = self.snippets {
            let extra = data::snippets(&records, w);
            records.extend(extra);
        }
        let set = data::from_records(
            records,
            IssueLog::default(),
            self.source,
            self.tok,
            self.pool,
            &self.opts,
        )?;
        Ok(set.examples)
    }
}

/// The training examples a micro-batch is drawn from.
pub enum Feed<'a> {
    /// The whole encoded corpus, drawn by the language sampler.
    InMemory {
        /// The examples.
        examples: Vec<Example>,
        /// Example indices by language.
        by_lang: ByLanguage<usize>,
        /// The sampler.
        sampler: LanguageSampler,
    },
    /// A stream over a folder per language.
    Streamed {
        /// The batches.
        stream: Box<WindowStream>,
        /// How records become examples.
        encoder: StreamEncoder<'a>,
        /// Records in the corpus.
        records: u64,
        /// The batch being used.
        current: Vec<Example>,
    },
}

impl<'a> Feed<'a> {
    /// A feed over `examples` in memory, languages drawn with smoothing exponent `alpha`.
    pub fn in_memory(examples: Vec<Example>, alpha: f64, seed: u64) -> Result<Self> {
        let by_lang = ByLanguage::group(
            examples
                .iter()
                .enumerate()
                .map(|(i, e)| (e.lang.clone(), i)),
        );
        let sampler = LanguageSampler::new(by_lang.sizes(), SamplerConfig::epochs(alpha, seed))?;
        Ok(Feed::InMemory {
            examples,
            by_lang,
            sampler,
        })
    }

    /// A feed streaming `index` in batches of `batch_size`.
    pub fn streamed(
        index: &ShardIndex,
        cfg: StreamConfig,
        batch_size: usize,
        alpha: f64,
        seed: u64,
        encoder: StreamEncoder<'a>,
    ) -> Result<Self> {
        Ok(Feed::Streamed {
            stream: Box::new(WindowStream::new(index, cfg, batch_size, alpha, seed)?),
            encoder,
            records: index.records(),
            current: Vec::new(),
        })
    }

    /// Training records (examples, in memory).
    pub fn len(&self) -> u64 {
        match self {
            Feed::InMemory { examples, .. } => examples.len() as u64,
            Feed::Streamed { records, .. } => *records,
        }
    }

    /// Whether there is nothing to train on.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next micro-batch: `n` examples drawn in memory; a stream's next batch (of up to
    /// its batch size) when streamed.
    pub fn rows(&mut self, n: usize) -> Result<Vec<&Example>> {
        match self {
            Feed::InMemory {
                examples,
                by_lang,
                sampler,
            } => {
                let mut rows = Vec::with_capacity(n);
                while rows.len() < n {
                    match sampler.next_draw() {
                        Some(d) => rows.push(&examples[*by_lang.get(d)]),
                        None => sampler.next_epoch(),
                    }
                }
                Ok(rows)
            }
            Feed::Streamed {
                stream,
                encoder,
                current,
                ..
            } => {
                *current = stream.next_batch(|records| encoder.encode(records))?;
                Ok(current.iter().collect())
            }
        }
    }

    /// The sampler's epoch.
    pub fn epoch(&self) -> u64 {
        match self {
            Feed::InMemory { sampler, .. } => sampler.state().epoch,
            Feed::Streamed { stream, .. } => stream.epoch(),
        }
    }

    /// The state of a run that has not taken a step.
    pub fn initial_state(&self) -> TrainerState {
        let (sampler, stream) = self.position();
        TrainerState {
            step: 0,
            sampler,
            best: None,
            since_best: 0,
            stopped_early: false,
            stream,
        }
    }

    /// Records the position in `state`.
    pub fn save(&self, state: &mut TrainerState) {
        (state.sampler, state.stream) = self.position();
    }

    /// The sampler's state and, streamed, the stream's position (whose sampler is the same).
    fn position(&self) -> (SamplerState, Option<StreamState>) {
        match self {
            Feed::InMemory { sampler, .. } => (sampler.state().clone(), None),
            Feed::Streamed { stream, .. } => {
                let s = stream.state();
                (s.sampler.clone(), Some(s))
            }
        }
    }

    /// Continues from the position in `state`.
    pub fn restore(&mut self, state: &TrainerState) -> Result<()> {
        match (self, &state.stream) {
            (Feed::InMemory { sampler, .. }, None) => sampler.restore(state.sampler.clone())?,
            (Feed::Streamed { stream, .. }, Some(s)) => stream.restore(s.clone())?,
            (Feed::InMemory { .. }, Some(_)) => {
                return Err(Error::Invalid(
                    "the checkpoint is of a streamed run; keep [data] stream to resume it".into(),
                ))
            }
            (Feed::Streamed { .. }, None) => {
                return Err(Error::Invalid(
                    "the checkpoint is of a run that held its data in memory; remove [data] \
                     stream to resume it"
                        .into(),
                ))
            }
        }
        Ok(())
    }
}

/// The index of a streamed run's corpus, saved in the run folder.
pub fn index_file(run: &Path) -> PathBuf {
    run.join("shards.json")
}

/// The folder a streamed run splits a corpus that is not a folder per language into.
pub fn shards_dir(run: &Path) -> PathBuf {
    run.join("shards")
}

/// The streamed corpus of a run: on resume, the saved index (its files checked unchanged);
/// otherwise `train` indexed when it is a folder per language, or split into one under the
/// run folder first; `stage` is told which. Returns what reading the corpus dropped or kept
/// with a warning, too.
pub fn prepare_index(
    cfg: &TrainConfig,
    run: &Path,
    resume: bool,
    mut stage: impl FnMut(&'static str),
) -> Result<(ShardIndex, IssueLog)> {
    let file = index_file(run);
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    if resume {
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let index: ShardIndex = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(&file, format!("is not a shard index: {e}")))?;
        index.check()?;
        return Ok((index, IssueLog::default()));
    }
    // Absolute paths in the index: a resumed run may start from another folder.
    let train = &std::path::absolute(&cfg.data.train).map_err(|e| Error::io(&cfg.data.train, e))?;
    let (index, issues) = if train.is_dir() && stream::is_sharded(train) {
        stage("counting the training corpus");
        let index = ShardIndex::scan(train, |_| {})?;
        (index, IssueLog::default())
    } else {
        let out = std::path::absolute(shards_dir(run)).map_err(|e| Error::io(run, e))?;
        if out.exists() {
            // Left by a run that stopped before its first checkpoint: made by ferry, from
            // the same corpus or another; split again.
            std::fs::remove_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        }
        let copts = CorpusOptions {
            label_required: cfg.data.label == LabelKind::Label,
            strict_languages: cfg.data.strict_language_codes,
            ..CorpusOptions::default()
        };
        stage("splitting the training corpus by language");
        let mut reader = corpus::open(train, &copts)?;
        let index = stream::write_shards(&mut reader, &out, stream::shard::PART_BYTES, |_| {})?;
        (index, reader.issues().clone())
    };
    let json = serde_json::to_string_pretty(&index).map_err(|e| Error::Invalid(e.to_string()))?;
    ferry_io::atomic::write_atomic(&file, |w| {
        use std::io::Write;
        w.write_all(json.as_bytes())
            .map_err(|e| ferry_io::Error::io(&file, e))
    })?;
    Ok((index, issues))
}

/// Every record of `index` once (each language's in its block-shuffled order), for passes
/// that count (naive Bayes) rather than sample.
pub fn each_record(index: &ShardIndex, block: usize) -> impl Iterator<Item = Result<Record>> + '_ {
    index.langs.iter().enumerate().flat_map(move |(i, l)| {
        let mut reader = LangReader::new(l, i, block, 0);
        (0..l.records()).map(move |_| reader.next_record().map_err(Error::from))
    })
}

/// Encodes every record of `index` chunk by chunk with `encoder`, handing each chunk's
/// examples to `visit` (memory: one chunk).
pub fn for_each_chunk(
    index: &ShardIndex,
    block: usize,
    encoder: &StreamEncoder<'_>,
    mut visit: impl FnMut(&[Example]) -> Result<()>,
) -> Result<()> {
    let mut records = each_record(index, block);
    loop {
        let chunk = records
            .by_ref()
            .take(PASS_CHUNK)
            .collect::<Result<Vec<_>>>()?;
        if chunk.is_empty() {
            return Ok(());
        }
        visit(&encoder.encode(chunk)?)?;
    }
}
