//! Sharded checkpoints: a JSON index (`model.safetensors.index.json`,
//! `pytorch_model.bin.index.json`) naming the shard of every tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::checkpoint::{Checkpoint, Format};
use crate::error::{Error, Result};
use crate::meta::MetaValue;

/// Largest index file ferry parses.
const MAX_INDEX: u64 = 256 * 1024 * 1024;

/// Opens a shard index and every shard it names.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let bad = |msg: String| Error::malformed(path, msg);
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_INDEX {
        return Err(bad(format!("{len} bytes is too large for a shard index")));
    }
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let index: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let weight_map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object: not a shard index".into()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut files = BTreeSet::new();
    for (name, file) in weight_map {
        let f = file
            .as_str()
            .ok_or_else(|| bad(format!("`weight_map.{name}` is not a file name")))?;
        if f.contains('/') || f.contains('\\') || f == ".." {
            return Err(bad(format!(
                "shard `{f}` for `{name}` is not a plain file name"
            )));
        }
        files.insert(f.to_string());
    }
    let mut tensors = Vec::new();
    let mut metadata = crate::meta::Metadata::new();
    let mut shard_format = None;
    let mut found: HashMap<String, String> = HashMap::new();
    for f in &files {
        let shard_path = dir.join(f);
        // A shard that is itself an index (or the index itself) would recurse without end.
        if crate::formats::sniff(&shard_path)? == crate::formats::Sniffed::ShardIndex {
            return Err(Error::malformed(
                path,
                format!("`weight_map` names `{f}`, which is an index, not a shard; an index may only name shard files"),
            ));
        }
        let shard = crate::formats::open_file(&shard_path)?;
        shard_format.get_or_insert(shard.format);
        for t in shard.tensors {
            found.insert(t.name.clone(), f.clone());
            tensors.push(t);
        }
        for (k, v) in shard.metadata {
            metadata.entry(k).or_insert(v);
        }
    }
    for (name, file) in weight_map {
        let f = file.as_str().unwrap_or_default();
        match found.get(name) {
            Some(actual) if actual == f => {}
            Some(actual) => {
                return Err(bad(format!(
                    "the index puts `{name}` in `{f}` but it is in `{actual}`"
                )))
            }
            None => {
                return Err(bad(format!(
                    "the index names `{name}` in `{f}` but that shard does not hold it"
                )))
            }
        }
    }
    if let Some(meta) = index.get("metadata").and_then(Value::as_object) {
        for (k, v) in meta {
            metadata.insert(format!("index.{k}"), MetaValue::from_json(v));
        }
    }
    let format = match shard_format {
        Some(Format::Safetensors) | None => Format::SafetensorsSharded,
        Some(_) => Format::PytorchSharded,
    };
    Ok(Checkpoint {
        format,
        path: path.to_path_buf(),
        tensors,
        metadata,
        companions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    /// An index whose `weight_map` names itself (or another index) is an error naming the
    /// file, not a stack overflow.
    #[test]
    fn an_index_naming_an_index_is_an_error_not_a_stack_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let me = "model.safetensors.index.json";
        let other = "other.safetensors.index.json";
        let index =
            |target: &str| format!(r#"{{"metadata": {{}}, "weight_map": {{"x": "{target}"}}}}"#);
        std::fs::write(dir.path().join(me), index(me)).unwrap();
        std::fs::write(dir.path().join(other), index(me)).unwrap();
        for p in [me, other] {
            let err = crate::Checkpoint::open(dir.path().join(p))
                .unwrap_err()
                .to_string();
            assert!(err.contains("is an index, not a shard"), "{err}");
        }
    }
}
