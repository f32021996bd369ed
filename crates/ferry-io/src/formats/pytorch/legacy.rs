//! Legacy (non-zip) `torch.save` streams, read.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::dtypes::storage_elem_size;
use super::storages::{parse_pid, LegacyStorages};
use super::walk::Walker;
use crate::checkpoint::{Checkpoint, Format};
use crate::error::{Error, Result};
use crate::formats::pickle::{self, Object, Options, Pickle, Value};
use crate::tensor::Storage;

/// Magic number opening legacy `torch.save` streams (`0x1950a86a20f9469cfc6c`), little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// Protocol version of legacy `torch.save` streams.
const LEGACY_PROTOCOL: i64 = 1001;

/// Opens a legacy (non-zip) `torch.save` file: magic number, protocol version, system info,
/// the object pickle, the list of storage keys, then each storage's element count and bytes.
pub fn open_legacy(path: &Path) -> Result<Checkpoint> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map of a file ferry does not modify (see `safetensors::open`).
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let bad = |m: String| Error::malformed(path, m);
    let opts = Options::default();
    let mut pos = 0usize;
    let next = |pos: &mut usize| -> Result<Pickle> {
        let (pk, n) = pickle::load(path, &map[*pos..], &opts)?;
        *pos += n;
        Ok(pk)
    };
    let magic = next(&mut pos)?;
    let magic_ok = match &magic.root {
        Value::BigInt(b) => {
            b.len() >= 10 && b[..10] == LEGACY_MAGIC && b[10..].iter().all(|&x| x == 0)
        }
        _ => false,
    };
    if !magic_ok {
        return Err(bad(
            "a pickle without torch's magic number: not a torch.save file".into(),
        ));
    }
    let proto = next(&mut pos)?;
    if proto.root != Value::Int(LEGACY_PROTOCOL) {
        return Err(bad(format!(
            "legacy protocol version {:?}, expected {LEGACY_PROTOCOL}",
            proto.root
        )));
    }
    let sys = next(&mut pos)?;
    if sys.dict(&sys.root).and_then(|d| d.get_str("little_endian")) == Some(&Value::Bool(false)) {
        return Err(bad(
            "the file was saved on a big-endian machine; ferry reads little-endian data only"
                .into(),
        ));
    }
    let pk = next(&mut pos)?;
    let keys = next(&mut pos)?;
    let keys: Vec<String> = keys
        .items(&keys.root)
        .ok_or_else(|| bad("the storage key list is not a list".into()))?
        .iter()
        .map(|k| keys.str(k).map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a storage key is not a string".into()))?;
    let elem_sizes = legacy_elem_sizes(path, &pk)?;
    let mut by_key = HashMap::new();
    for key in keys {
        let elem = *elem_sizes.get(&key).ok_or_else(|| {
            bad(format!(
                "storage `{key}` is listed but no tensor names its type"
            ))
        })?;
        let storage = legacy_storage(path, &map, &mut pos, elem, &key)?;
        by_key.insert(key, storage);
    }
    let src = LegacyStorages {
        path: path.to_path_buf(),
        by_key,
    };
    let mut w = Walker::new(path, &pk, &src, false);
    w.walk(&pk.root, "", 0)?;
    Ok(Checkpoint {
        format: Format::PytorchLegacy,
        path: path.to_path_buf(),
        tensors: w.tensors,
        metadata: w.metadata,
        companions: Vec::new(),
    })
}

/// Element size of every storage key the persistent ids of `pk` name.
pub(super) fn legacy_elem_sizes(path: &Path, pk: &Pickle) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for o in &pk.objects {
        let Object::PersistentId(p) = o else { continue };
        let Some(pid) = pk.items(p) else { continue };
        let (g, kind, key) = parse_pid(path, pk, pid)?;
        let size = storage_elem_size(&kind, &g).ok_or_else(|| {
            Error::malformed(
                path,
                format!("storage `{key}` has unknown type `{}`", g.dotted()),
            )
        })?;
        out.insert(key, size);
    }
    Ok(out)
}

/// Reads one legacy storage record at `pos`: an 8-byte element count, then the bytes.
pub(super) fn legacy_storage(
    path: &Path,
    map: &Arc<Mmap>,
    pos: &mut usize,
    elem: u64,
    key: &str,
) -> Result<Storage> {
    let bad = |m: String| Error::malformed(path, format!("storage `{key}`: {m}"));
    let head = map
        .get(*pos..pos.saturating_add(8))
        .ok_or_else(|| bad("the file ends before its size (truncated)".into()))?;
    let mut n = [0u8; 8];
    n.copy_from_slice(head);
    let numel = u64::from_le_bytes(n);
    let start = *pos + 8;
    let len = numel
        .checked_mul(elem)
        .filter(|&l| l <= (map.len() - start) as u64)
        .ok_or_else(|| {
            bad(format!(
                "claims {numel} elements of {elem} bytes but only {} bytes remain (truncated)",
                map.len() - start
            ))
        })?;
    let end = start + len as usize;
    *pos = end;
    Ok(Storage::mapped(map.clone(), start..end))
}
