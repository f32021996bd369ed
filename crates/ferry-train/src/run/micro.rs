//! One micro-batch's loss and gradients, split across CPU workers (data parallelism).

use candle_core::Device;
use ferry_data::batch::{collate, BatchConfig, Example};

use crate::config::LossKind;
use crate::grads::Grads;
use crate::models::Classifier;
use crate::{Error, Result};

/// The loss of a micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct LossSpec {
    /// The loss function.
    pub kind: LossKind,
    /// Label smoothing (cross entropy).
    pub smoothing: f64,
    /// A factor on the loss (1 / micro-batches per step).
    pub scale: f64,
}

/// Loss and gradients of one micro-batch, split across `workers` (data parallel): each
/// worker takes a contiguous share of the rows; losses are weighted by share size so the sum
/// is the whole batch's mean; gradients are summed in worker order (deterministic).
pub fn micro_batch(
    model: &Classifier,
    rows: &[&Example],
    bcfg: &BatchConfig,
    loss: &LossSpec,
    workers: usize,
    device: &Device,
) -> Result<(f32, Grads)> {
    let shard = |rows: &[&Example], weight: f64| -> Result<(f32, Grads)> {
        let batch = collate(rows, bcfg, device)?;
        let labels = batch
            .labels
            .as_ref()
            .ok_or_else(|| Error::Invalid("a training example has no label".into()))?;
        let logits = model.forward(&batch.input_ids, Some(&batch.attention_mask))?;
        let l = match loss.kind {
            LossKind::CrossEntropy => crate::loss::cross_entropy(&logits, labels, loss.smoothing)?,
            LossKind::Nll => crate::loss::nll(&ferry_kernels::log_softmax(&logits)?, labels)?,
        };
        let l = (l * (weight * loss.scale))?;
        let value: f32 = l.to_scalar()?;
        Ok((value, Grads::from_loss(model.params(), &l)?))
    };
    if workers <= 1 {
        return shard(rows, 1.0);
    }
    let n = rows.len();
    let bounds: Vec<(usize, usize)> = (0..workers)
        .map(|w| (w * n / workers, (w + 1) * n / workers))
        .filter(|(a, b)| b > a)
        .collect();
    let results: Vec<Result<(f32, Grads)>> = std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .iter()
            .map(|&(a, b)| s.spawn(move || shard(&rows[a..b], (b - a) as f64 / n as f64)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a data-parallel worker panicked"))
            .collect()
    });
    let mut total = 0f32;
    let mut grads: Option<Grads> = None;
    for r in results {
        let (l, g) = r?;
        total += l;
        match grads.as_mut() {
            None => grads = Some(g),
            Some(acc) => acc.accumulate(g)?,
        }
    }
    Ok((total, grads.expect("at least one worker")))
}
