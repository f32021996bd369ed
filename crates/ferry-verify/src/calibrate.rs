//! Multilingual calibration: an importance matrix (llama.cpp's imatrix: per linear layer, the
//! mean of each input column's square) from a language-balanced sample of text, run through
//! ferry's runtime.
//!
//! The sample: the corpus's texts grouped by language, each language given a share of the
//! token budget by XLM-R's exponent smoothing (`p_l ~ q_l^alpha` over the languages' text
//! counts, ferry-data's [`smoothed_probabilities`]; alpha 0.3 by default, 0 is uniform, 1 the
//! corpus's own mix), its texts drawn in the order ferry-data's [`LanguageSampler`] draws them
//! (seeded, without replacement until a language runs out, then again), each text one
//! sequence with the tokenizer's special tokens, cut at the sequence limit and at what is
//! left of its language's share. Every language with a share runs; the budget is met
//! exactly.
//!
//! The default corpus is the UDHR training articles embedded in ferry (47 languages), not the
//! test articles `ferry verify` probes with, so that a verification after calibrated
//! quantization judges text the calibration did not see.
//!
//! Memory: one f64 per input column per linear layer while running (SmolLM2-135M: 210
//! matrices, 1.2 MB) plus the tokenized sample; the model's forward pass on one sequence is
//! the peak, as in `ferry verify`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use ferry_data::sampling::{
    smoothed_probabilities, ByLanguage, LanguageSampler, SamplerConfig, Stopping,
};
use ferry_io::formats::gguf::names::{ArchLayout, Direction, Family, Mapped, Variant};
use ferry_io::imatrix::{self, Imatrix, ImatrixEntry};
use ferry_io::meta::MetaValue;
use ferry_runtime::{ActivationStats, ArchConfig, Model, Tokenizer};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::probes::{self, Probe, ProbeOptions};

/// The UDHR training articles (`corpora/udhr/train.tsv`, 47 languages): the default
/// calibration text, disjoint from the probes `ferry verify` uses.
const EMBEDDED: &str = include_str!("../../../corpora/udhr/train.tsv");

/// The name the embedded corpus is recorded under (`imatrix.datasets`).
pub const EMBEDDED_NAME: &str = "embedded:udhr-train";

/// The token budget unless told: about 175 tokens per language of the embedded corpus, a
/// minute or less for SmolLM2-135M on 2 cores.
pub const DEFAULT_TOKENS: usize = 8192;

/// The longest sequence unless told (llama.cpp's imatrix chunk size).
pub const DEFAULT_MAX_SEQ: usize = 512;

/// How to calibrate.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrateOptions {
    /// The language smoothing exponent (0 uniform, 1 the corpus's own mix).
    pub alpha: f64,
    /// Tokens to run, over all languages (special tokens included).
    pub tokens: usize,
    /// The most tokens one sequence (one text) may have.
    pub max_seq: usize,
    /// The sampler's seed.
    pub seed: u64,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            alpha: 0.3,
            tokens: DEFAULT_TOKENS,
            max_seq: DEFAULT_MAX_SEQ,
            seed: 0,
        }
    }
}

/// The calibration text: the corpus at `path` (any layout ferry-data reads), else the
/// embedded UDHR training articles; only `languages` when given. Returns where it came from.
pub fn texts(path: Option<&Path>, languages: &[String]) -> Result<(String, Vec<Probe>)> {
    let opts = ProbeOptions {
        languages: languages.to_vec(),
        limit: None,
    };
    match path {
        Some(p) => Ok((p.display().to_string(), probes::from_corpus(p, &opts)?)),
        None => {
            let all: Vec<Probe> = probes::udhr_tsv(EMBEDDED)
                .into_iter()
                .filter(|p| languages.is_empty() || languages.contains(&p.lang))
                .collect();
            if let Some(missing) = languages
                .iter()
                .find(|l| !all.iter().any(|p| &p.lang == *l))
            {
                return Err(Error::Probes(format!(
                    "{EMBEDDED_NAME}: no text in language `{missing}`"
                )));
            }
            Ok((EMBEDDED_NAME.to_string(), all))
        }
    }
}

/// One language's part of the sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguageShare {
    /// The language.
    pub lang: String,
    /// Its texts in the corpus.
    pub corpus_texts: usize,
    /// Its sampling probability (`q^alpha`, normalized).
    pub probability: f64,
    /// Sequences run.
    pub sequences: usize,
    /// Tokens run.
    pub tokens: u64,
}

/// The sequences to run, in order, and each language's share.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Token ids of each sequence, with the index of its language in [`Sample::languages`].
    pub sequences: Vec<(usize, Vec<u32>)>,
    /// Every language of the corpus, sorted by code.
    pub languages: Vec<LanguageShare>,
}

impl Sample {
    /// Tokens over all sequences.
    pub fn tokens(&self) -> u64 {
        self.sequences.iter().map(|(_, s)| s.len() as u64).sum()
    }
}

/// Token shares summing exactly to `total`, proportional to `probs` (largest remainders, ties
/// to the earlier language).
fn quotas(probs: &[f64], total: usize) -> Vec<usize> {
    let exact: Vec<f64> = probs.iter().map(|p| p * total as f64).collect();
    let mut q: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut left = total.saturating_sub(q.iter().sum());
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(probs.len() * 2) {
        if left == 0 {
            break;
        }
        if probs[i] > 0.0 {
            q[i] += 1;
            left -= 1;
        }
    }
    q
}

/// Draws the calibration sample from `texts` (see the module's description), tokenized by
/// `tokenizer`. Deterministic for the same texts, tokenizer and options.
pub fn sample(texts: &[Probe], tokenizer: &Tokenizer, opts: &CalibrateOptions) -> Result<Sample> {
    if opts.tokens == 0 || opts.max_seq == 0 {
        return Err(Error::Options(
            "calibration needs a token budget and a sequence length above 0".into(),
        ));
    }
    let groups = ByLanguage::group(texts.iter().map(|p| (p.lang.clone(), p.text.as_str())));
    let sizes = groups.sizes();
    let probs = smoothed_probabilities(&sizes, opts.alpha);
    let mut left = quotas(&probs, opts.tokens);
    let cfg = SamplerConfig {
        alpha: opts.alpha,
        epoch_size: None,
        stopping: Stopping::AllExhausted,
        replacement: false,
        seed: opts.seed,
    };
    let mut sampler =
        LanguageSampler::new(sizes.clone(), cfg).map_err(|e| Error::Options(e.to_string()))?;
    let mut languages: Vec<LanguageShare> = groups
        .languages()
        .iter()
        .zip(&sizes)
        .zip(&probs)
        .map(|((lang, &n), &p)| LanguageShare {
            lang: lang.clone(),
            corpus_texts: n as usize,
            probability: p,
            sequences: 0,
            tokens: 0,
        })
        .collect();
    let mut cache: HashMap<(usize, u64), Vec<u32>> = HashMap::new();
    // Texts drawn in a row that tokenize to nothing, per language: a language of empty texts
    // gives up its share instead of looping.
    let mut empty = vec![0u64; sizes.len()];
    let mut sequences = Vec::new();
    while left.iter().any(|&n| n > 0) {
        let Some((l, i)) = sampler.next_draw() else {
            sampler.next_epoch();
            continue;
        };
        if left[l] == 0 {
            continue;
        }
        let ids = match cache.get(&(l, i)) {
            Some(ids) => ids,
            None => {
                let ids = tokenizer.encode(groups.get((l, i)), None)?;
                cache.entry((l, i)).or_insert(ids)
            }
        };
        let n = ids.len().min(opts.max_seq).min(left[l]);
        if n == 0 {
            empty[l] += 1;
            if empty[l] >= sizes[l] {
                left[l] = 0;
            }
            continue;
        }
        empty[l] = 0;
        left[l] -= n;
        languages[l].sequences += 1;
        languages[l].tokens += n as u64;
        sequences.push((l, ids[..n].to_vec()));
    }
    Ok(Sample {
        sequences,
        languages,
    })
}

/// The longest sequence `model` takes (an encoder's position table; RoBERTa's less its
/// offset), if it has a limit.
pub fn max_positions(model: &Model) -> Option<usize> {
    match &model.config {
        ArchConfig::Encoder(c) => {
            let offset = match c.family {
                ferry_runtime::config::EncoderFamily::Roberta => c.bert.pad_token_id + 1,
                _ => 0,
            };
            Some(c.bert.max_position_embeddings.saturating_sub(offset))
        }
        _ => None,
    }
}

/// The weight matrices calibration observes in a model of `config`, and the input columns
/// over all of them: what the statistics hold in memory (8 bytes a column while running, 4 in
/// the file, whatever the token count). `None` for models calibration does not run.
pub fn observed_size(config: &ArchConfig) -> Option<(usize, usize)> {
    match config {
        ArchConfig::Decoder(c) => {
            let per_block = 3 * c.hidden + c.heads * c.head_dim + 2 * c.hidden + c.intermediate;
            let head = usize::from(!c.tied);
            Some((c.layers * 7 + head, c.layers * per_block + head * c.hidden))
        }
        ArchConfig::Encoder(c) => {
            let b = &c.bert;
            Some((
                b.num_hidden_layers * 6,
                b.num_hidden_layers * (5 * b.hidden_size + b.intermediate_size),
            ))
        }
        _ => None,
    }
}

fn vocab_size(model: &Model) -> Option<usize> {
    match &model.config {
        ArchConfig::Decoder(c) => Some(c.vocab),
        ArchConfig::Encoder(c) => Some(c.bert.vocab_size),
        _ => None,
    }
}

/// Runs every sequence of `sample` through `model`, gathering each linear layer's input
/// statistics; `progress(done, total)` after each. Ids outside the model's vocabulary (a
/// tokenizer that is not the model's) are an error naming the tokenizer.
pub fn collect(
    model: &Model,
    tokenizer: &Path,
    sample: &Sample,
    mut progress: impl FnMut(usize, usize),
) -> Result<ActivationStats> {
    let vocab = vocab_size(model);
    let mut stats = ActivationStats::new();
    let total = sample.sequences.len();
    for (k, (l, ids)) in sample.sequences.iter().enumerate() {
        progress(k, total);
        let outside = vocab.and_then(|v| Some((v, *ids.iter().find(|&&id| id as usize >= v)?)));
        if let Some((v, bad)) = outside {
            return Err(Error::Mismatch(format!(
                "{}: token id {bad} (in a `{}` text) is outside {}'s vocabulary of {v}: this is \
                 not the model's tokenizer (pass --tokenizer with the model's tokenizer.json)",
                tokenizer.display(),
                sample.languages[*l].lang,
                model.path.display()
            )));
        }
        let x = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu)?;
        model.forward_collecting(&x, None, &mut stats)?;
    }
    progress(total, total);
    Ok(stats)
}

/// What a calibration did, for reports and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// The model, as given.
    pub model: String,
    /// Where the text came from (`imatrix.datasets`).
    pub dataset: String,
    /// The options.
    pub options: CalibrateOptions,
    /// Sequences run (`imatrix.chunk_count`).
    pub sequences: usize,
    /// Tokens run.
    pub tokens: u64,
    /// Every language of the corpus with its share.
    pub languages: Vec<LanguageShare>,
    /// Importance-matrix entries (weight matrices observed).
    pub entries: usize,
    /// Seconds spent running the model.
    pub seconds: f64,
}

/// The GGUF (llama.cpp) name of a weight the runtime observed under its Hugging Face name.
fn gguf_name(model: &Model, hf: &str) -> Result<String> {
    let family = match &model.config {
        ArchConfig::Encoder(_) => Family::Bert,
        _ => Family::Llama,
    };
    // The runtime names encoder weights as BERT's, and an untied head `lm_head`, whatever the
    // checkpoint's own names.
    let layout = ArchLayout {
        family,
        n_head: 0,
        n_head_kv: 0,
        tied: false,
        variant: Variant::Plain,
    };
    match layout.map(hf, Direction::ToGguf) {
        Mapped::To(name, _) => Ok(name),
        other => Err(Error::Mismatch(format!(
            "{}: the observed weight `{hf}` has no llama.cpp name ({other:?})",
            model.path.display()
        ))),
    }
}

/// The importance matrix of `stats` under llama.cpp's names, with the sample's provenance:
/// `imatrix.datasets`, `imatrix.chunk_count` (sequences) and `imatrix.chunk_size` (the
/// sequence limit), and `ferry.imatrix.*` (languages, tokens per language, alpha, seed,
/// tokens, model).
pub fn to_imatrix(
    stats: &ActivationStats,
    model: &Model,
    sample: &Sample,
    run: &Calibration,
) -> Result<Imatrix> {
    let mut im = Imatrix {
        datasets: vec![run.dataset.clone()],
        chunk_count: u32::try_from(sample.sequences.len()).unwrap_or(u32::MAX),
        chunk_size: u32::try_from(run.options.max_seq).unwrap_or(u32::MAX),
        ..Imatrix::default()
    };
    for (hf, s) in stats.entries() {
        im.entries.insert(
            gguf_name(model, hf)?,
            ImatrixEntry {
                sum_sq: s.sum_sq.iter().map(|&v| v as f32).collect(),
                counts: vec![s.count as f32],
            },
        );
    }
    let ran: Vec<&LanguageShare> = sample.languages.iter().filter(|l| l.tokens > 0).collect();
    let m = &mut im.extra;
    m.insert(
        imatrix::KEY_LANGUAGES.into(),
        MetaValue::Array(
            ran.iter()
                .map(|l| MetaValue::String(l.lang.clone()))
                .collect(),
        ),
    );
    m.insert(
        imatrix::KEY_LANGUAGE_TOKENS.into(),
        MetaValue::Array(ran.iter().map(|l| MetaValue::U64(l.tokens)).collect()),
    );
    m.insert(
        "ferry.imatrix.alpha".into(),
        MetaValue::F64(run.options.alpha),
    );
    m.insert(
        "ferry.imatrix.seed".into(),
        MetaValue::U64(run.options.seed),
    );
    m.insert(
        "ferry.imatrix.tokens".into(),
        MetaValue::U64(sample.tokens()),
    );
    m.insert(
        "ferry.imatrix.model".into(),
        MetaValue::String(run.model.clone()),
    );
    Ok(im)
}

/// `opts` fitted to `model`: the sequence limit capped by an encoder's position table.
pub fn fit_options(model: &Model, opts: &CalibrateOptions) -> CalibrateOptions {
    let mut opts = opts.clone();
    if let Some(limit) = max_positions(model) {
        opts.max_seq = opts.max_seq.min(limit);
    }
    opts
}

/// Runs `model` on `sample` (drawn from `dataset` with `opts`, see [`sample`] and
/// [`fit_options`]) and returns the importance matrix with what was done. `tokenizer` names
/// the tokenizer in errors; `progress(done, total)` counts sequences.
pub fn run(
    model: &Model,
    tokenizer: &Path,
    dataset: &str,
    sample: &Sample,
    opts: &CalibrateOptions,
    progress: impl FnMut(usize, usize),
) -> Result<(Imatrix, Calibration)> {
    let start = Instant::now();
    let stats = collect(model, tokenizer, sample, progress)?;
    let run = Calibration {
        model: model.path.file_name().map_or_else(
            || model.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        dataset: dataset.to_string(),
        options: opts.clone(),
        sequences: sample.sequences.len(),
        tokens: sample.tokens(),
        languages: sample.languages.clone(),
        entries: stats.entries().len(),
        seconds: start.elapsed().as_secs_f64(),
    };
    let im = to_imatrix(&stats, model, sample, &run)?;
    Ok((im, run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_sum_to_the_budget_and_follow_the_probabilities() {
        let p = smoothed_probabilities(&[100, 10, 1, 0], 0.3);
        let q = quotas(&p, 1000);
        assert_eq!(q.iter().sum::<usize>(), 1000);
        assert_eq!(q[3], 0);
        assert!(q[0] > q[1] && q[1] > q[2] && q[2] > 100, "{q:?}");
        assert_eq!(quotas(&[0.5, 0.5], 3), vec![2, 1]);
        assert_eq!(quotas(&[1.0 / 3.0; 3], 2).iter().sum::<usize>(), 2);
    }

    #[test]
    fn the_embedded_corpus_has_every_language_and_is_not_the_probe_set() {
        let (name, all) = texts(None, &[]).unwrap();
        assert_eq!(name, EMBEDDED_NAME);
        let mut langs: Vec<&str> = all.iter().map(|p| p.lang.as_str()).collect();
        langs.dedup();
        assert_eq!(langs.len(), 47);
        let probes = crate::probes::embedded(&ProbeOptions::default()).unwrap();
        assert!(probes.iter().all(|p| !all.iter().any(|t| t.text == p.text)));
        let (_, de) = texts(None, &["de".into()]).unwrap();
        assert!(!de.is_empty() && de.iter().all(|p| p.lang == "de"));
        let e = texts(None, &["xx".into()]).unwrap_err().to_string();
        assert!(e.contains("`xx`"), "{e}");
    }
}
