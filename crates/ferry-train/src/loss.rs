//! Classification losses: cross entropy (with label smoothing, PyTorch semantics) and
//! negative log-likelihood over log-probabilities.

use candle_core::{DType, Tensor, D};

use ferry_kernels::log_softmax;

/// Mean negative log-likelihood of `labels` (`[batch]`, u32) under `log_probs` `[batch, classes]`.
pub fn nll(log_probs: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let picked = log_probs.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    picked.neg()?.mean_all()
}

/// Mean cross entropy of `logits` `[batch, classes]` against `labels`; with `smoothing` > 0
/// the target puts `1 - smoothing` on the label and spreads `smoothing` over all classes
/// (PyTorch's `CrossEntropyLoss(label_smoothing=...)`).
pub fn cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
) -> candle_core::Result<Tensor> {
    let lp = log_softmax(logits)?;
    let loss = nll(&lp, labels)?;
    if smoothing == 0.0 {
        return Ok(loss);
    }
    let uniform = lp.mean(D::Minus1)?.neg()?.mean_all()?;
    (loss * (1.0 - smoothing))? + (uniform * smoothing)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let lse = |r: [f64; 3]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
        let (a, b) = ([2.0, 0.0, -1.0], [0.5, 0.5, 3.0]);
        let nll_ref = ((lse(a) - 2.0) + (lse(b) - 0.5)) / 2.0;
        let got: f32 = cross_entropy(&logits, &labels, 0.0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((got as f64 - nll_ref).abs() < 1e-6);
        let smooth_ref = {
            let u = |r: [f64; 3]| r.iter().map(|x| lse(r) - x).sum::<f64>() / 3.0;
            0.9 * nll_ref + 0.1 * (u(a) + u(b)) / 2.0
        };
        let got: f32 = cross_entropy(&logits, &labels, 0.1)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            (got as f64 - smooth_ref).abs() < 1e-6,
            "{got} vs {smooth_ref}"
        );
    }
}
