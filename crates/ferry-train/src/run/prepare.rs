//! Everything a run needs before its first step: the training corpus (read into memory, or
//! indexed for streaming), the tokenizer, the encoded examples and their classes, and the dev
//! sets.

use ferry_data::issues::IssueLog;
use ferry_data::sampling::{ByLanguage, LanguageSampler, SamplerConfig, Stopping};
use ferry_data::stream::{Draws, ShardIndex};
use ferry_data::tokenize::{self, Tokenizer};
use ferry_data::Record;

use super::{Event, RunDirs, RunOptions};
use crate::config::{LabelKind, TrainConfig};
use crate::data::{self, ExampleOptions, Examples};
use crate::feed;
use crate::{Error, Result};

/// What a run's tokenizer is trained on.
enum TrainTexts<'a> {
    /// The training records, in memory.
    Records(&'a [Record]),
    /// A streamed corpus, read in blocks of this many records.
    Shards(&'a ShardIndex, usize),
}

/// The training corpus before it is encoded.
pub(super) enum TrainSource {
    /// Read into memory, with what reading dropped or kept with a warning.
    Records(Vec<Record>, IssueLog),
    /// Streamed from a folder per language.
    Shards(ShardIndex),
}

/// The run's tokenizer: the configured file, or one trained on a language-balanced sample of
/// the training texts (as many draws as there are records).
fn prepare_tokenizer(
    cfg: &TrainConfig,
    dirs: &RunDirs,
    texts: TrainTexts<'_>,
) -> Result<Tokenizer> {
    if let Some(file) = cfg.tokenizer_file() {
        let tok = Tokenizer::from_file(&file)?;
        std::fs::create_dir_all(&dirs.root).map_err(|e| Error::io(&dirs.root, e))?;
        std::fs::copy(&file, dirs.tokenizer()).map_err(|e| Error::io(&file, e))?;
        return Ok(tok);
    }
    if let Some(n) = &cfg.tokenizer.char_ngrams {
        std::fs::create_dir_all(&dirs.root).map_err(|e| Error::io(&dirs.root, e))?;
        n.save(&dirs.tokenizer())?;
        return Ok(Tokenizer::from_char_ngrams(n.clone(), dirs.tokenizer()));
    }
    let t = cfg
        .tokenizer
        .train
        .as_ref()
        .ok_or_else(|| Error::Invalid("no tokenizer configured".into()))?;
    let scfg = |total| SamplerConfig {
        alpha: t.alpha,
        epoch_size: Some(total),
        stopping: Stopping::AllExhausted,
        replacement: false,
        seed: cfg.train.seed,
    };
    let spec = tokenize::train::TrainSpec {
        kind: t.kind,
        vocab_size: t.vocab_size,
        min_frequency: 2,
        nfkc: true,
        byte_fallback: t.kind != tokenize::train::Kind::WordPiece,
        lang_tags: None,
    };
    let tok = match texts {
        TrainTexts::Records(records) => {
            let by_lang =
                ByLanguage::group(records.iter().map(|r| (r.lang.clone(), r.text.as_str())));
            let total: u64 = by_lang.sizes().iter().sum();
            let sampler = LanguageSampler::new(by_lang.sizes(), scfg(total))?;
            let sample: Vec<&str> = sampler.map(|d| *by_lang.get(d)).collect();
            tokenize::train::train(&spec, sample.into_iter())?
        }
        TrainTexts::Shards(index, block) => {
            // The trainer holds word counts, not the sample: draws are read as it goes.
            let mut failed = None;
            let draws = Draws::new(index, scfg(index.records()), block)?;
            let texts = draws.map_while(|r| match r {
                Ok(r) => Some(r.text),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
            let tok = tokenize::train::train(&spec, texts)?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            tok
        }
    };
    tokenize::train::save(&tok, &dirs.tokenizer())?;
    Ok(tok)
}

/// Reads the training corpus into memory, or (`[data] stream`) indexes it, split by language
/// first when it is not a folder per language; keeps `[data] languages`.
pub(super) fn read_training(
    cfg: &TrainConfig,
    opts: &RunOptions,
    dirs: &RunDirs,
    base: &ExampleOptions<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<TrainSource> {
    let keep = cfg.data.languages.as_deref();
    if cfg.data.stream.is_none() {
        let (mut records, issues) = data::read_records(&cfg.data.train, base)?;
        on_event(Event::Read {
            file: &cfg.data.train,
            records: records.len(),
            issues: &issues,
        });
        if let Some(keep) = keep {
            records.retain(|r| keep.contains(&r.lang));
        }
        return Ok(TrainSource::Records(records, issues));
    }
    let (mut index, issues) = feed::prepare_index(cfg, &dirs.root, opts.resume, |s| {
        on_event(Event::Preparing(s))
    })?;
    on_event(Event::Read {
        file: &cfg.data.train,
        records: usize::try_from(index.records()).unwrap_or(usize::MAX),
        issues: &issues,
    });
    if let Some(keep) = keep {
        index.retain_languages(keep);
        if index.langs.is_empty() {
            return Err(Error::malformed(
                &cfg.data.train,
                "has no records in the languages of [data] languages",
            ));
        }
    }
    Ok(TrainSource::Shards(index))
}

/// The run's tokenizer: the saved one on resume, else as the config says.
pub(super) fn tokenizer(
    cfg: &TrainConfig,
    opts: &RunOptions,
    dirs: &RunDirs,
    source: &TrainSource,
) -> Result<Tokenizer> {
    if opts.resume {
        return Ok(Tokenizer::from_file(dirs.tokenizer())?);
    }
    let block = cfg.data.stream.as_ref().map_or(0, |s| s.block);
    let texts = match source {
        TrainSource::Records(r, _) => TrainTexts::Records(r),
        TrainSource::Shards(index) => TrainTexts::Shards(index, block),
    };
    prepare_tokenizer(cfg, dirs, texts)
}

/// The training examples: encoded and held, or streamed.
pub(super) enum TrainSet {
    /// Encoded, in memory.
    InMemory(Examples),
    /// The index of a folder per language, streamed.
    Streamed(ShardIndex),
}

/// The training data once the tokenizer is known.
pub(super) struct TrainData {
    /// The examples.
    pub(super) set: TrainSet,
    /// The classes, sorted: label ids index them.
    pub(super) classes: Vec<String>,
    /// The languages trained on, sorted.
    pub(super) languages: Vec<String>,
}

/// Encodes the training records (snippets added), or takes the streamed corpus's classes
/// from its index.
pub(super) fn encode_training(
    cfg: &TrainConfig,
    source: TrainSource,
    tok: &Tokenizer,
    pool: &rayon::ThreadPool,
    base: &ExampleOptions<'_>,
) -> Result<TrainData> {
    match source {
        TrainSource::Records(mut records, issues) => {
            if let Some(w) = cfg.data.augment_snippets {
                let extra = data::snippets(&records, w);
                records.extend(extra);
            }
            let set = data::from_records(records, issues, &cfg.data.train, tok, pool, base)?;
            let langs: std::collections::BTreeSet<&String> =
                set.examples.iter().map(|e| &e.lang).collect();
            Ok(TrainData {
                languages: langs.into_iter().cloned().collect(),
                classes: set.classes.clone(),
                set: TrainSet::InMemory(set),
            })
        }
        TrainSource::Shards(index) => {
            let classes = match cfg.data.label {
                LabelKind::Lang => index.languages(),
                LabelKind::Label if index.labels.is_empty() => {
                    return Err(Error::malformed(
                        &cfg.data.train,
                        "has no labels to train on: label = \"label\" needs a label column \
                         (a folder per language of text files has none)",
                    ))
                }
                LabelKind::Label => {
                    // Every record needs a class: refused before training, not at the step
                    // that first draws one without.
                    if let Some(l) = index.langs.iter().find(|l| l.unlabeled > 0) {
                        return Err(Error::malformed(
                            &cfg.data.train,
                            format!(
                                "has {} records without a label in language {} (the first at \
                                 {}); every training record needs one",
                                l.unlabeled,
                                l.lang,
                                l.first_unlabeled.as_deref().unwrap_or("?")
                            ),
                        ));
                    }
                    index.labels.clone()
                }
            };
            Ok(TrainData {
                languages: index.languages(),
                classes,
                set: TrainSet::Streamed(index),
            })
        }
    }
}

/// The dev set, and its snippets when a naive Bayes start calibrates on them.
#[derive(Default)]
pub(super) struct DevSets {
    /// The dev set.
    pub(super) dev: Option<Examples>,
    /// Its snippets (`[eval] snippet_words`, default 4).
    pub(super) snippets: Option<Examples>,
}

/// Reads and encodes the dev set. A naive Bayes start calibrates its confidence on the dev
/// texts and their snippets, so that short, ambiguous inputs weigh in as they do in use: the
/// snippets are cut from the records read here, not from a second read.
pub(super) fn dev_sets(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    pool: &rayon::ThreadPool,
    dev_opts: &ExampleOptions<'_>,
    with_snippets: bool,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<DevSets> {
    let Some(p) = &cfg.data.dev else {
        return Ok(DevSets::default());
    };
    let (records, issues) = data::read_records(p, dev_opts)?;
    let snippets = with_snippets
        .then(|| data::snippets(&records, cfg.eval.snippet_words.unwrap_or(4)))
        .filter(|s| !s.is_empty())
        .map(|s| data::from_records(s, IssueLog::default(), p, tok, pool, dev_opts))
        .transpose()?;
    let dev = data::from_records(records, issues, p, tok, pool, dev_opts)?;
    on_event(Event::Read {
        file: p,
        records: dev.examples.len(),
        issues: &dev.issues,
    });
    Ok(DevSets {
        dev: Some(dev),
        snippets,
    })
}
