//! Learning-rate schedules (Hugging Face `get_*_schedule_with_warmup` semantics): the factor
//! for optimizer step `s` (from 0) multiplies the peak learning rate.

use serde::{Deserialize, Serialize};

/// A schedule as a config file names it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The peak rate throughout.
    #[default]
    Constant,
    /// Linear warmup from 0, then linear decay to 0 at the last step.
    Linear {
        /// Warmup steps.
        warmup: u64,
    },
    /// Linear warmup from 0, then half a cosine down to 0 at the last step.
    Cosine {
        /// Warmup steps.
        warmup: u64,
    },
}

impl Schedule {
    /// The factor at step `step` of `total`.
    pub fn factor(&self, step: u64, total: u64) -> f64 {
        let warm = |w: u64| -> Option<f64> { (step < w).then(|| step as f64 / w.max(1) as f64) };
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Linear { warmup } => warm(warmup).unwrap_or_else(|| {
                ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64)
                    .max(0.0)
            }),
            Schedule::Cosine { warmup } => warm(warmup).unwrap_or_else(|| {
                let progress =
                    (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_the_hugging_face_definitions() {
        let lin = Schedule::Linear { warmup: 3 };
        let f: Vec<f64> = (0..11).map(|s| lin.factor(s, 10)).collect();
        assert_eq!(&f[..4], &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert!((f[6] - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(f[10], 0.0);
        let cos = Schedule::Cosine { warmup: 2 };
        assert_eq!(cos.factor(1, 8), 0.5);
        assert!((cos.factor(2, 8) - 1.0).abs() < 1e-12);
        assert!((cos.factor(5, 8) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule::Constant.factor(99, 10), 1.0);
    }
}
