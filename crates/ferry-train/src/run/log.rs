//! The run's `metrics.jsonl`: a line per step and per evaluation, trimmed on resume.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::{Error, Result};

/// Appends `value` as a JSON line to `path`.
pub(super) fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let line = serde_json::to_string(value).map_err(|e| Error::Invalid(e.to_string()))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

/// Drops metrics lines after `step` (written by a run that was killed after its last
/// checkpoint), so a resumed log has each step once.
pub(super) fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    ferry_io::atomic::write_atomic(path, |w| {
        w.write_all(kept.as_bytes())
            .map_err(|e| ferry_io::Error::io(path, e))
    })?;
    Ok(())
}
