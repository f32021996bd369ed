//! Tolerances a verification is judged by, per language: named presets for the usual
//! conversions and custom budgets (`kld<=0.01,top1>=0.93`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bounds on the statistics; a language fails when any bound it can be judged by is crossed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Budget {
    /// The preset's name, or `custom`.
    pub name: String,
    /// Largest mean KL divergence (decoders), nats.
    pub kld: Option<f64>,
    /// Smallest same-top-1 share (decoders), 0..1.
    pub top1: Option<f64>,
    /// Smallest cosine of pooled embeddings (encoders).
    pub cosine: Option<f64>,
}

/// The named presets: (name, kld, top1, cosine, what it is for). Judged per language, on a
/// few dozen tokens each, so same top-1 (one token is 1.5% of 64) is bounded looser than the
/// mean KLD. Calibrated on SmolLM2-135M (docs/benchmarks.md): q8_0 gives a mean KLD of 0.003
/// overall and same top-1 0.96 overall, 0.91 in its worst language; q4_k (with llama.cpp's
/// fallbacks) 0.10-0.25 per language and same top-1 down to 0.53. A broken file (wrong names
/// or layouts) gives several nats.
pub const PRESETS: &[(&str, f64, f64, f64, &str)] = &[
    (
        "exact",
        1e-6,
        0.99,
        0.999_999,
        "same weights, another container or names",
    ),
    ("f16", 1e-3, 0.95, 0.9999, "f16 weights"),
    ("bf16", 5e-3, 0.9, 0.999, "bf16 weights"),
    ("q8", 0.01, 0.85, 0.995, "8-bit GGML types (q8_0)"),
    (
        "q4",
        0.3,
        0.5,
        0.97,
        "4- to 6-bit GGML types (q4_k with its fallbacks, q5_0...)",
    ),
];

impl Budget {
    /// The preset a conversion to `dtype` implies (by its name: `f32`, `f16`, `q8_0`, `q4_k`...).
    pub fn for_dtype(dtype: &str) -> Budget {
        let name = match dtype {
            "f32" | "f64" => "exact",
            "f16" => "f16",
            "bf16" => "bf16",
            "q8_0" | "q8_1" | "q8_k" | "q6_k" => "q8",
            _ => "q4",
        };
        name.parse().unwrap_or_default()
    }
}

impl Budget {
    /// The preset a placement's compute adds to a migration's own error: that of its
    /// lowest-precision device dtype (bf16, f16), `f16` for f32 on an accelerator (another
    /// summation order), none for f32 on the CPU (the reference itself).
    pub fn for_placement(plan: &ferry_device::Plan) -> Option<Budget> {
        plan.used()
            .filter_map(|d| match d.dtype {
                candle_core::DType::F32 | candle_core::DType::F64 if !d.device.is_accelerator() => {
                    None
                }
                candle_core::DType::F32 | candle_core::DType::F64 => Some(Budget::for_dtype("f16")),
                other => Some(Budget::for_dtype(other.as_str())),
            })
            .reduce(Budget::looser)
    }

    /// The looser of two budgets (the one allowing the larger KL divergence).
    pub fn looser(self, other: Budget) -> Budget {
        if other.kld.unwrap_or(0.0) > self.kld.unwrap_or(0.0) {
            other
        } else {
            self
        }
    }
}

impl FromStr for Budget {
    type Err = Error;

    fn from_str(s: &str) -> Result<Budget, Error> {
        if let Some((name, kld, top1, cos, _)) = PRESETS.iter().find(|p| p.0 == s) {
            return Ok(Budget {
                name: name.to_string(),
                kld: Some(*kld),
                top1: Some(*top1),
                cosine: Some(*cos),
            });
        }
        let mut b = Budget {
            name: "custom".into(),
            ..Budget::default()
        };
        for part in s.split(',').map(str::trim) {
            let bad = || {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                Error::Options(format!(
                    "tolerance `{s}`: `{part}` is not a bound; use a preset ({}) or bounds like \
                     kld<=0.01,top1>=0.93,cos>=0.99",
                    names.join(", ")
                ))
            };
            let (key, value) = part
                .split_once("<=")
                .or_else(|| part.split_once(">="))
                .ok_or_else(bad)?;
            let v: f64 = value.trim().parse().map_err(|_| bad())?;
            match (key.trim(), part.contains("<=")) {
                ("kld", true) => b.kld = Some(v),
                ("top1", false) => b.top1 = Some(v),
                ("cos" | "cosine", false) => b.cosine = Some(v),
                _ => return Err(bad()),
            }
        }
        Ok(b)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = self.kld {
            parts.push(format!("kld<={v}"));
        }
        if let Some(v) = self.top1 {
            parts.push(format!("top1>={v}"));
        }
        if let Some(v) = self.cosine {
            parts.push(format!("cos>={v}"));
        }
        write!(f, "{} ({})", self.name, parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_custom_budgets_parse() {
        let q8: Budget = "q8".parse().unwrap();
        assert_eq!((q8.kld, q8.top1), (Some(0.01), Some(0.85)));
        let c: Budget = "kld<=0.02, top1>=0.97".parse().unwrap();
        assert_eq!(
            (c.name.as_str(), c.kld, c.top1, c.cosine),
            ("custom", Some(0.02), Some(0.97), None)
        );
        let err = "kld>=3".parse::<Budget>().unwrap_err().to_string();
        assert!(err.contains("q8") && err.contains("kld>=3"), "{err}");
        assert_eq!(Budget::for_dtype("q4_k").name, "q4");
        assert_eq!(Budget::for_dtype("f16").name, "f16");
    }
}
