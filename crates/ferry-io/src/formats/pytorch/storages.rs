//! Storages behind a pickle's persistent ids: entries of a zip archive, or mapped ranges of a
//! legacy stream, with older files' views into them.

use std::collections::HashMap;
use std::path::Path;

use super::dtypes::{storage_elem_size, storage_kind, StorageKind};
use crate::error::{Error, Result};
use crate::formats::pickle::{Global, Pickle, Value};
use crate::formats::zip::ZipArchive;
use crate::tensor::Storage;

/// A storage a persistent id resolved to.
pub(super) struct Resolved {
    pub(super) key: String,
    pub(super) kind: StorageKind,
    pub(super) storage: Storage,
}

/// Where the storages of one file live.
pub(super) trait StorageSource {
    /// Resolves a persistent id (already known to be a tuple) to its storage.
    fn resolve(&self, pk: &Pickle, pid: &[Value]) -> Result<Resolved>;
}

/// The storage type and key of a persistent id `('storage', type, key, location, numel, ...)`.
pub(super) fn parse_pid(
    path: &Path,
    pk: &Pickle,
    pid: &[Value],
) -> Result<(Global, StorageKind, String)> {
    let bad = |m: &str| Error::malformed(path, format!("persistent id {m}"));
    if pid.first().and_then(|v| pk.str(v)) != Some("storage") || pid.len() < 5 {
        return Err(bad("is not a ('storage', type, key, location, size) tuple"));
    }
    let g = pk
        .global(&pid[1])
        .ok_or_else(|| bad("names no storage type"))?
        .clone();
    let key = match &pid[2] {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        _ => return Err(bad("has a key that is not a string")),
    };
    let kind = storage_kind(&g);
    Ok((g, kind, key))
}

/// Storages of a zip archive: `<prefix>/data/<key>`.
pub(super) struct ZipStorages<'a> {
    pub(super) archive: &'a ZipArchive,
    pub(super) prefix: String,
}

impl StorageSource for ZipStorages<'_> {
    fn resolve(&self, pk: &Pickle, pid: &[Value]) -> Result<Resolved> {
        let (_, kind, key) = parse_pid(self.archive.path(), pk, pid)?;
        if key.contains('/') || key.contains("..") {
            return Err(Error::malformed(
                self.archive.path(),
                format!("storage key `{key}` is not a plain name"),
            ));
        }
        let storage = self
            .archive
            .entry_storage(&format!("{}/data/{key}", self.prefix))?;
        Ok(Resolved { key, kind, storage })
    }
}

/// Storages of a legacy stream: mapped ranges after the pickles.
pub(super) struct LegacyStorages {
    pub(super) path: std::path::PathBuf,
    pub(super) by_key: HashMap<String, Storage>,
}

impl StorageSource for LegacyStorages {
    fn resolve(&self, pk: &Pickle, pid: &[Value]) -> Result<Resolved> {
        let (g, kind, key) = parse_pid(&self.path, pk, pid)?;
        let root = self.by_key.get(&key).ok_or_else(|| {
            Error::malformed(&self.path, format!("storage `{key}` is not in the file"))
        })?;
        // Views of older files: (view_key, offset, size), in elements of the root storage.
        let view = pid.get(5).and_then(|v| pk.items(v));
        let Some(view) = view else {
            return Ok(Resolved {
                key,
                kind,
                storage: root.clone(),
            });
        };
        let elem = storage_elem_size(&kind, &g).unwrap_or(1);
        let (off, len) = match view {
            [_, Value::Int(o), Value::Int(n)] if *o >= 0 && *n >= 0 => (*o as u64, *n as u64),
            _ => {
                return Err(Error::malformed(
                    &self.path,
                    format!("storage `{key}` has a bad view"),
                ))
            }
        };
        let range = sub_range(root, off.saturating_mul(elem), len.saturating_mul(elem))
            .ok_or_else(|| {
                Error::malformed(
                    &self.path,
                    format!("view of storage `{key}` runs past its end"),
                )
            })?;
        // Views share the root's memory: they keep the root's key, so ties are seen.
        Ok(Resolved {
            key,
            kind,
            storage: range,
        })
    }
}

/// `len` bytes at `off` of a mapped storage, if they lie inside.
pub(super) fn sub_range(s: &Storage, off: u64, len: u64) -> Option<Storage> {
    match s {
        Storage::Mapped { map, range } => {
            let start = (range.start as u64).checked_add(off)?;
            let end = start.checked_add(len)?;
            if end > range.end as u64 {
                return None;
            }
            Some(Storage::mapped(map.clone(), start as usize..end as usize))
        }
        _ => None,
    }
}
