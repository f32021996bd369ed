//! From a corpus to encoded examples and padded batches: the whole data path in one place,
//! used by `ferry data batch`, training and the benchmarks.

use std::collections::BTreeSet;

use candle_core::Device;
use rayon::prelude::*;

use crate::batch::{add_lang_tag, collate, plan, Batch, BatchConfig, Example};
use crate::error::Result;
use crate::lang::LangTagStyle;
use crate::record::Record;
use crate::tokenize::Tokenizer;

/// Records read and encoded per parallel step: bounds memory held as text.
const CHUNK: usize = 8192;

/// What becomes an example's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelFrom {
    /// No class.
    #[default]
    None,
    /// The record's label column.
    Label,
    /// The record's language (language identification).
    Lang,
}

/// How records are encoded.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    /// Let the tokenizer add its special tokens (`[CLS]`, `</s>`, ...).
    pub add_special_tokens: bool,
    /// Add a language tag token of this style to source (and target) ids.
    pub lang_tags: Option<LangTagStyle>,
    /// What becomes the class id.
    pub label_from: LabelFrom,
    /// Keep at most this many source tokens per example, cut as each is encoded (so a corpus
    /// of long texts is never held at full length).
    pub max_len: Option<usize>,
}

/// Encoded examples and the class names their label ids index.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The examples, in corpus order.
    pub examples: Vec<Example>,
    /// Sorted class names; `label` ids index this list.
    pub classes: Vec<String>,
}

/// Reads the whole corpus (a [`crate::corpus::CorpusReader`], or records already read) and
/// encodes it in parallel in `pool`, chunk by chunk. The result does not depend on the number
/// of threads.
pub fn encode_corpus(
    mut reader: impl Iterator<Item = Result<Record>>,
    tok: &Tokenizer,
    pool: &rayon::ThreadPool,
    opts: &EncodeOptions,
    mut progress: impl FnMut(u64),
) -> Result<Encoded> {
    let mut examples = Vec::new();
    let mut names: Vec<Option<String>> = Vec::new();
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        for r in reader.by_ref().take(CHUNK) {
            chunk.push(r?);
        }
        if chunk.is_empty() {
            break;
        }
        let encoded: Vec<Example> = pool.install(|| {
            chunk
                .par_iter()
                .with_min_len(64)
                .map(|r| -> Result<Example> {
                    let mut ids = tok.encode(&r.text, opts.add_special_tokens)?;
                    let mut target = match &r.target {
                        Some(t) => Some(tok.encode(&t.text, opts.add_special_tokens)?),
                        None => None,
                    };
                    if let Some(style) = &opts.lang_tags {
                        add_lang_tag(&mut ids, tok.token_id(&style.tag(&r.lang))?, style, false);
                        if let (Some(t), Some(tr)) = (target.as_mut(), &r.target) {
                            add_lang_tag(t, tok.token_id(&style.tag(&tr.lang))?, style, true);
                        }
                    }
                    // Only a cut example gives memory back (the others are not reallocated).
                    if let Some(n) = opts.max_len.filter(|&n| ids.len() > n) {
                        ids.truncate(n);
                        ids.shrink_to_fit();
                    }
                    Ok(Example {
                        ids,
                        lang: r.lang.clone(),
                        label: None,
                        target,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        names.extend(chunk.iter().map(|r| match opts.label_from {
            LabelFrom::None => None,
            LabelFrom::Label => r.label.clone(),
            LabelFrom::Lang => Some(r.lang.clone()),
        }));
        examples.extend(encoded);
        progress(examples.len() as u64);
    }
    let classes: Vec<String> = names
        .iter()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for (e, n) in examples.iter_mut().zip(&names) {
        e.label = n
            .as_ref()
            .and_then(|n| classes.binary_search(n).ok())
            .map(|i| i as u32);
    }
    Ok(Encoded { examples, classes })
}

/// Plans batches over `examples` and builds all their tensors on `device`, in parallel.
pub fn batch_all(
    examples: &[Example],
    cfg: &BatchConfig,
    device: &Device,
    pool: &rayon::ThreadPool,
) -> Result<Vec<Batch>> {
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let plan = plan(&lengths, cfg)?;
    pool.install(|| {
        plan.par_iter()
            .map(|idx| {
                let rows: Vec<&Example> = idx.iter().map(|&i| &examples[i]).collect();
                collate(&rows, cfg, device)
            })
            .collect()
    })
}
