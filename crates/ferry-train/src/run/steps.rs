//! The training loop: optimizer steps of accumulated micro-batches, dev evaluation with
//! keep-best and early stopping, checkpoints and their pruning, until the last step, early
//! stopping or `stop_after`.

use ferry_data::batch::{BatchConfig, BatchSize, PadSide};

use super::log::append_jsonl;
use super::micro::{micro_batch, LossSpec};
use super::{EvalRecord, Event, Run, RunDirs, StepRecord};
use crate::config::Metric;
use crate::data::Examples;
use crate::eval::{evaluate, EvalContext};
use crate::feed::Feed;
use crate::grads::{clip_factor, Grads};
use crate::model_dir::{self, ModelCard, TrainerState};
use crate::models::Classifier;
use crate::optim::Optimizer;
use crate::{Error, Result};

/// What the loop reads.
pub(super) struct Loop<'a> {
    /// The config, options and folders.
    pub(super) run: Run<'a>,
    /// The dev set, when there is one.
    pub(super) dev: Option<&'a Examples>,
    /// How the dev set is evaluated.
    pub(super) dev_ctx: EvalContext<'a>,
}

/// What the loop changes.
pub(super) struct Training<'f> {
    /// The model being trained.
    pub(super) model: Classifier,
    /// Its optimizer.
    pub(super) optimizer: Optimizer,
    /// Step, sampler position, best evaluation, early stopping.
    pub(super) state: TrainerState,
    /// The card saved with every model folder.
    pub(super) card: ModelCard,
    /// Where micro-batches come from.
    pub(super) feed: Feed<'f>,
}

/// Runs steps until the last, early stopping or `stop_after`; returns each step's loss.
pub(super) fn run(
    lp: &Loop<'_>,
    t: &mut Training<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<f32>> {
    let Run { cfg, opts, dirs } = lp.run;
    let total = cfg.train.steps;
    let ckpt_every = cfg.train.checkpoint_every.or(cfg.train.eval_every);
    let mut losses = Vec::new();
    while t.state.step < total && !t.state.stopped_early {
        let rec = step(lp, t)?;
        losses.push(rec.loss);
        append_jsonl(&dirs.metrics(), &rec)?;
        on_event(Event::Step(&rec));

        let step = t.state.step;
        let last = step == total;
        let eval_due = cfg.train.eval_every.is_some_and(|n| step.is_multiple_of(n)) || last;
        if let (true, Some(dev)) = (eval_due, lp.dev) {
            evaluate_dev(lp, t, dev, on_event)?;
        }
        if ckpt_every.is_some_and(|n| step.is_multiple_of(n)) || last || t.state.stopped_early {
            save_checkpoint(lp, t, on_event)?;
        }
        if opts.stop_after == Some(step) {
            break;
        }
    }
    Ok(losses)
}

/// One optimizer step over `grad_accum` micro-batches.
fn step(lp: &Loop<'_>, t: &mut Training<'_>) -> Result<StepRecord> {
    let Run { cfg, opts, .. } = lp.run;
    let total = cfg.train.steps;
    let lr = cfg.optimizer.lr() * cfg.schedule.factor(t.state.step, total);
    let bcfg = BatchConfig {
        size: BatchSize::Examples(cfg.train.batch_size),
        bucket: false,
        shuffle: None,
        pad_id: lp.dev_ctx.pad_id,
        side: PadSide::Right,
        pad_to_multiple_of: None,
    };
    let loss = LossSpec {
        kind: cfg.train.loss,
        smoothing: cfg.train.label_smoothing,
        scale: 1.0 / cfg.train.grad_accum as f64,
    };
    let mut grads: Option<Grads> = None;
    let mut step_loss = 0f32;
    let mut tokens = 0;
    for _ in 0..cfg.train.grad_accum {
        let rows = t.feed.rows(cfg.train.batch_size)?;
        tokens += rows.iter().map(|e| e.ids.len()).sum::<usize>();
        let workers = cfg.train.workers;
        let (l, g) = micro_batch(&t.model, &rows, &bcfg, &loss, workers, &opts.device)?;
        step_loss += l;
        match grads.as_mut() {
            None => grads = Some(g),
            Some(acc) => acc.accumulate(g)?,
        }
    }
    let grads = grads.expect("grad_accum >= 1");
    let norm = grads.global_norm()?;
    let clip = clip_factor(norm, cfg.train.clip_norm);
    t.optimizer.step(t.model.params(), &grads, lr, clip)?;
    if !step_loss.is_finite() {
        return Err(Error::Invalid(format!(
            "the loss became {step_loss} at step {}; lower the learning rate or set clip_norm",
            t.state.step + 1
        )));
    }
    t.state.step += 1;
    t.feed.save(&mut t.state);
    Ok(StepRecord {
        step: t.state.step,
        loss: step_loss,
        grad_norm: norm,
        lr,
        tokens,
        epoch: t.feed.epoch(),
    })
}

/// Evaluates on dev after a step: saves `best/` when the metric improved, counts toward early
/// stopping when it did not.
fn evaluate_dev(
    lp: &Loop<'_>,
    t: &mut Training<'_>,
    dev: &Examples,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    let Run { cfg, opts, dirs } = lp.run;
    let ev = evaluate(&t.model, dev, &lp.dev_ctx, &opts.device)?;
    let value = match cfg.train.metric {
        Metric::MacroF1 => ev.report.overall.macro_f1,
        Metric::Accuracy => ev.report.overall.accuracy,
        Metric::Loss => ev.loss,
    };
    let state = &mut t.state;
    let is_best = state
        .best
        .is_none_or(|(_, b)| cfg.train.metric.better(value, b));
    if is_best {
        state.best = Some((state.step, value));
        state.since_best = 0;
        t.card.step = state.step;
        model_dir::save_model(&dirs.best(), &t.model, &t.card, &dirs.tokenizer())?;
    } else {
        state.since_best += 1;
        let patience = cfg.train.early_stopping.map(|e| e.patience);
        if patience.is_some_and(|p| state.since_best >= p) {
            state.stopped_early = true;
        }
    }
    let er = EvalRecord::new(state.step, &ev, is_best);
    append_jsonl(&dirs.metrics(), &er)?;
    on_event(Event::Evaluated(&er));
    Ok(())
}

/// Writes a checkpoint of the current step and prunes the old ones.
fn save_checkpoint(
    lp: &Loop<'_>,
    t: &mut Training<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    let Run { cfg, dirs, .. } = lp.run;
    t.card.step = t.state.step;
    let dir = dirs
        .checkpoints()
        .join(model_dir::checkpoint_name(t.state.step));
    let tok = dirs.tokenizer();
    model_dir::save_checkpoint(&dir, &t.model, &t.card, &tok, &t.optimizer, &t.state)?;
    prune(dirs, cfg.train.keep_last, t.state.best.map(|b| b.0));
    on_event(Event::Checkpoint(&dir));
    Ok(())
}

/// Keeps the newest `keep` checkpoints and the best one.
fn prune(dirs: &RunDirs, keep: usize, best: Option<u64>) {
    let all = model_dir::list_checkpoints(&dirs.checkpoints());
    let n = all.len();
    for (i, (step, dir)) in all.into_iter().enumerate() {
        if i + keep.max(1) < n && Some(step) != best {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
