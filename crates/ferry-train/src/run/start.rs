//! The model, optimizer and trainer state a run starts its loop with: loaded from the newest
//! checkpoint on resume, or made fresh (a pretrained encoder, a naive Bayes start counted over
//! the training data in memory or streamed), and the feed of micro-batches restored to it.

use std::path::PathBuf;

use ferry_data::batch::Example;

use super::prepare::{DevSets, TrainSet};
use super::steps::Training;
use super::{Event, Run};
use crate::config::TrainConfig;
use crate::feed::{self, Feed, StreamEncoder};
use crate::model_dir::{self, ModelCard, TrainerState};
use crate::models::{BagInit, Classifier, ModelConfig, ModelSpec, NaiveBayesCounts};
use crate::optim::Optimizer;
use crate::{Error, Result};

/// Where a run starts.
pub(super) struct Start {
    /// The model.
    pub(super) model: Classifier,
    /// Its optimizer.
    pub(super) optimizer: Optimizer,
    /// The saved state, when resuming.
    pub(super) state: Option<TrainerState>,
}

/// Loads the checkpoint in `resume_from`, or makes a fresh model as the config says.
pub(super) fn start(
    run: &Run<'_>,
    spec: &ModelSpec,
    resume_from: Option<PathBuf>,
    train: &TrainSet,
    encoder: &StreamEncoder<'_>,
    dev: &DevSets,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Start> {
    let Run { cfg, opts, dirs } = *run;
    let device = &opts.device;
    if let Some(dir) = resume_from {
        let loaded = model_dir::load_model(&dir, None, device)?;
        if &loaded.card.spec != spec {
            return Err(Error::malformed(
                &dir,
                "was made with another model or data config than the one given",
            ));
        }
        let mut model = loaded.model;
        freeze(cfg, &mut model);
        let mut optimizer = cfg.optimizer.build(model.params());
        let state = model_dir::load_training_state(&dir, &model, &mut optimizer)?;
        super::log::truncate_metrics(&dirs.metrics(), state.step)?;
        return Ok(Start {
            model,
            optimizer,
            state: Some(state),
        });
    }
    let mut model = match cfg.model.pretrained() {
        Some(p) => Classifier::from_pretrained(spec, p, cfg.train.seed, device)?,
        None => Classifier::new(spec, cfg.train.seed, device)?,
    };
    if let BagInit::NaiveBayes { alpha } = cfg.model.bag_init() {
        on_event(Event::Preparing("naive Bayes start"));
        let calibration: Vec<&Example> = [&dev.dev, &dev.snippets]
            .into_iter()
            .flatten()
            .flat_map(|set| &set.examples)
            .collect();
        let mut counts = NaiveBayesCounts::new(spec.vocab_size, spec.classes.len());
        match train {
            TrainSet::InMemory(set) => counts.add(&set.examples)?,
            TrainSet::Streamed(index) => {
                let block = cfg.data.stream.as_ref().map_or(1, |s| s.block);
                feed::for_each_chunk(index, block, encoder, |ex| counts.add(ex))?
            }
        }
        model.init_naive_bayes(&counts, &calibration, alpha, device)?;
    }
    freeze(cfg, &mut model);
    let optimizer = cfg.optimizer.build(model.params());
    let _ = std::fs::remove_file(dirs.metrics());
    Ok(Start {
        model,
        optimizer,
        state: None,
    })
}

/// What the loop starts with: `started`, the `card`, and the feed of micro-batches (`train`
/// in memory, or streamed through `encoder`), restored to the resumed state or at its
/// initial one.
pub(super) fn training<'f>(
    cfg: &TrainConfig,
    started: Start,
    train: TrainSet,
    encoder: StreamEncoder<'f>,
    card: ModelCard,
) -> Result<Training<'f>> {
    let (alpha, seed) = (cfg.train.alpha, cfg.train.seed);
    let mut feed = match (train, &cfg.data.stream) {
        (TrainSet::InMemory(set), _) => Feed::in_memory(set.examples, alpha, seed)?,
        (TrainSet::Streamed(index), Some(s)) => {
            let bs = cfg.train.batch_size;
            Feed::streamed(&index, s.clone(), bs, alpha, seed, encoder)?
        }
        (TrainSet::Streamed(_), None) => unreachable!("only a streamed run indexes"),
    };
    let state = match started.state {
        Some(s) => {
            feed.restore(&s)?;
            s
        }
        None => feed.initial_state(),
    };
    Ok(Training {
        model: started.model,
        optimizer: started.optimizer,
        state,
        card,
        feed,
    })
}

/// Freezes what the config freezes (a BERT encoder under its head).
fn freeze(cfg: &TrainConfig, model: &mut Classifier) {
    if let ModelConfig::Bert {
        freeze_encoder: true,
        ..
    } = cfg.model
    {
        model.params_mut().freeze("embeddings.");
        model.params_mut().freeze("encoder.");
    }
}
