//! Memory budgets: the most bytes ferry builds from what an input *claims*, as opposed to what
//! it holds. A header, a pickle or a strided view can describe far more data than the file
//! contains (a 1 KB pickle that expands to gigabytes, a 1.8 KB `.pth` holding a stride-0 view
//! of 16 GiB); every such allocation is checked against a budget first, and going over it is an
//! [`Error::OverBudget`] naming the file, what needed the memory and how to raise the budget.
//!
//! Budgets are per allocation (one tensor, one pickle's values), not per process. Each can be
//! raised (or lowered) with an environment variable holding a byte count (`8GiB`, `512MiB`,
//! `1000000`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::units::human;

/// A named memory budget with a default and an environment variable that overrides it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// What the budget bounds, in words ("tensor", "pickle").
    pub name: &'static str,
    /// The environment variable that overrides the default.
    pub env: &'static str,
    /// The default, in bytes.
    pub default: u64,
}

/// One tensor materialized in memory from a view or a decoded container (a strided view
/// gathered, a stride-0 expansion written out): 4 GiB.
pub const TENSOR: Budget = Budget {
    name: "tensor",
    env: "FERRY_MAX_TENSOR_BYTES",
    default: 4 << 30,
};

/// The values one pickle builds (objects, copies of lists and strings, and the names and
/// scalars a checkpoint's object tree expands to): 256 MiB. A real state dict takes about
/// 2 KiB per tensor here (its tensor bytes live in storages, not in the pickle): room for
/// 100,000 tensors with their optimizer state.
pub const PICKLE: Budget = Budget {
    name: "pickle",
    env: "FERRY_MAX_PICKLE_BYTES",
    default: 256 << 20,
};

impl Budget {
    /// The budget in bytes: the environment variable when set to a byte count, else the
    /// default (a value that is not a byte count is reported once on stderr, not ignored
    /// silently).
    pub fn bytes(&self) -> u64 {
        let Ok(v) = std::env::var(self.env) else {
            return self.default;
        };
        parse_bytes(&v).unwrap_or_else(|| {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "warning: {}={v:?} is not a byte count (such as 16GiB); using the default {}",
                    self.env,
                    human(self.default)
                )
            });
            self.default
        })
    }

    /// The [`Error::OverBudget`] for `path`: `what` needed `needed` bytes, over `limit` (this
    /// budget's value, read once by the caller).
    pub fn error(&self, path: &Path, what: String, needed: u64, limit: u64) -> Error {
        Error::OverBudget {
            path: path.to_path_buf(),
            what,
            needed,
            budget: limit,
            name: self.name,
            env: self.env,
        }
    }
}

/// Bytes counted against one budget as they are built (the budget read once, at the start).
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    budget: Budget,
    limit: u64,
    used: u64,
}

impl Meter {
    /// A meter at zero for `budget`.
    pub fn new(budget: Budget) -> Self {
        Meter {
            budget,
            limit: budget.bytes(),
            used: 0,
        }
    }

    /// Counts `bytes` more; over the budget, an [`Error::OverBudget`] for `path` naming
    /// `what` (built only then).
    pub fn charge(&mut self, bytes: u64, path: &Path, what: impl FnOnce() -> String) -> Result<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used <= self.limit {
            return Ok(());
        }
        Err(self.budget.error(path, what(), self.used, self.limit))
    }
}

/// Parses `123`, `4GiB`, `512MiB`, `2GB`, `10KiB` (binary and decimal units, case-insensitive).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = num * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("4GiB"), Some(4 << 30));
        assert_eq!(parse_bytes("512 mib"), Some(512 << 20));
        assert_eq!(parse_bytes("2GB"), Some(2_000_000_000));
        assert_eq!(parse_bytes("1.5KiB"), Some(1536));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(human(16 << 30), "16.0 GiB");
        assert_eq!(human(12), "12 B");
    }

    #[test]
    fn over_budget_names_file_what_and_variable() {
        let b = Budget {
            name: "test",
            env: "FERRY_TEST_BUDGET_NEVER_SET",
            default: 10,
        };
        let mut m = Meter::new(b);
        assert!(m.charge(10, Path::new("x"), || "y".into()).is_ok());
        let e = m
            .charge(1, Path::new("m.pth"), || "tensor `w`".into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.pth")
                && e.contains("tensor `w`")
                && e.contains("FERRY_TEST_BUDGET_NEVER_SET"),
            "{e}"
        );
    }
}
