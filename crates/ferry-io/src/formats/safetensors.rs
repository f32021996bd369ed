//! safetensors: reader (memory-mapped, every header field checked against the file) and
//! writer (with `__metadata__`, tied tensors written once, optional sharding).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::atomic::write_atomic;
use crate::checkpoint::{Checkpoint, Format};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::meta::{MetaValue, Metadata};
use crate::tensor::{Layout, Storage, TensorEntry};
use crate::write::{OutTensor, Progress};

/// Metadata key under which ferry records tied tensors it wrote once: a JSON object mapping
/// each omitted name to the name whose data it shares.
pub const TIED_KEY: &str = "ferry.tied";

/// Largest header ferry accepts (the format's reference implementation uses 100 MB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// The safetensors name of a dtype.
pub fn dtype_name(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::Bool => "BOOL",
        DType::U8 => "U8",
        DType::I8 => "I8",
        DType::I16 => "I16",
        DType::U16 => "U16",
        DType::I32 => "I32",
        DType::U32 => "U32",
        DType::I64 => "I64",
        DType::U64 => "U64",
        DType::F8E4M3 => "F8_E4M3",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F32 => "F32",
        DType::F64 => "F64",
        _ => return None,
    })
}

fn parse_dtype(s: &str) -> Option<DType> {
    crate::dtype::ALL_DTYPES
        .iter()
        .copied()
        .find(|&d| dtype_name(d) == Some(s))
}

/// Opens a single safetensors file.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let bad = |msg: String| Error::malformed(path, msg);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; ferry does not modify files it reads. A file truncated by
    // another process while mapped is outside what any reader can defend against.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    let header_end = header_end(path, &map)?;
    let header: Map<String, Value> = serde_json::from_slice(&map[8..header_end])
        .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let file_arc: Arc<Path> = Arc::from(path);

    let mut metadata = Metadata::new();
    let mut tied: BTreeMap<String, String> = BTreeMap::new();
    let mut entries: Vec<(usize, usize, TensorEntry)> = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            (metadata, tied) = read_metadata(path, info)?;
            continue;
        }
        entries.push(tensor_entry(path, name, info, &map, header_end, &file_arc)?);
    }
    entries.sort_by_key(|(s, e, _)| (*s, *e));
    check_no_overlap(path, &entries, header_end)?;
    let mut tensors: Vec<TensorEntry> = entries.into_iter().map(|(_, _, t)| t).collect();
    restore_tied(path, &mut tensors, &tied)?;
    Ok(Checkpoint {
        format: Format::Safetensors,
        path: path.to_path_buf(),
        tensors,
        metadata,
        companions: Vec::new(),
    })
}

/// The offset in `map` (the file at `path`) where the header ends and the data begins, after
/// checking the length prefix against the file and [`MAX_HEADER`].
fn header_end(path: &Path, map: &[u8]) -> Result<usize> {
    let bad = |msg: String| Error::malformed(path, msg);
    let len = map.len() as u64;
    if len < 8 {
        return Err(bad(format!(
            "{len} bytes is too short for a safetensors header"
        )));
    }
    let n = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER || n > len - 8 {
        return Err(bad(format!(
            "header claims {n} bytes but the file has {} after the length prefix (truncated or not safetensors)",
            len - 8
        )));
    }
    Ok(8 + n as usize)
}

/// The header's `__metadata__` object `info`: its string entries, and the tied tensors listed
/// under [`TIED_KEY`] (alias to target).
fn read_metadata(path: &Path, info: &Value) -> Result<(Metadata, BTreeMap<String, String>)> {
    let bad = |msg: String| Error::malformed(path, msg);
    let mut metadata = Metadata::new();
    let mut tied: BTreeMap<String, String> = BTreeMap::new();
    let obj = info
        .as_object()
        .ok_or_else(|| bad("`__metadata__` is not an object".into()))?;
    for (k, v) in obj {
        let s = v
            .as_str()
            .ok_or_else(|| bad(format!("`__metadata__.{k}` is not a string")))?;
        if k == TIED_KEY {
            tied = serde_json::from_str(s)
                .map_err(|e| bad(format!("`{TIED_KEY}` is not a JSON object of names: {e}")))?;
        } else {
            metadata.insert(k.clone(), MetaValue::String(s.to_string()));
        }
    }
    Ok((metadata, tied))
}

/// The tensor `name` of the header, described by `info`: its byte range in `map` (start,
/// end) and its entry, after checking its offsets against the data and its dtype and shape.
fn tensor_entry(
    path: &Path,
    name: &str,
    info: &Value,
    map: &Arc<memmap2::Mmap>,
    header_end: usize,
    file: &Arc<Path>,
) -> Result<(usize, usize, TensorEntry)> {
    let terr = |msg: String| Error::tensor(path, name, msg);
    let (dtype, shape, (start, end)) = tensor_fields(path, name, info)?;
    let data_len = map.len() - header_end;
    let numel = crate::tensor::numel(&shape).ok_or_else(|| terr("shape overflows".into()))?;
    let nbytes = dtype
        .storage_bytes(numel)
        .ok_or_else(|| terr("shape overflows".into()))?;
    if start > end || end > data_len as u64 {
        return Err(terr(format!(
            "data_offsets [{start}, {end}] run past the {data_len} data bytes of the file (truncated or corrupt)"
        )));
    }
    if end - start != nbytes {
        return Err(terr(format!(
            "data_offsets [{start}, {end}] span {} bytes but {dtype} {shape:?} needs {nbytes}",
            end - start
        )));
    }
    let (s, e) = (header_end + start as usize, header_end + end as usize);
    Ok((
        s,
        e,
        TensorEntry {
            name: name.to_string(),
            dtype,
            shape,
            storage: Storage::mapped(map.clone(), s..e),
            layout: Layout::Contiguous { offset: 0 },
            storage_key: None,
            file: file.clone(),
        },
    ))
}

/// The `dtype`, `shape` and `data_offsets` fields of the header entry `info` of tensor `name`,
/// each checked for its type (not yet against the file).
fn tensor_fields(path: &Path, name: &str, info: &Value) -> Result<(DType, Vec<usize>, (u64, u64))> {
    let terr = |msg: String| Error::tensor(path, name, msg);
    let dtype_s = info
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| terr("no `dtype` string in the header".into()))?;
    let dtype = parse_dtype(dtype_s).ok_or_else(|| {
        terr(format!("dtype `{dtype_s}` is not supported by ferry (supported: BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F8_E4M3, F16, BF16, F32, F64)"))
    })?;
    let shape: Vec<usize> = info
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| terr("no `shape` array in the header".into()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| terr("`shape` holds a value that is not a size".into()))?;
    let offs = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
        .ok_or_else(|| terr("`data_offsets` is not a pair of offsets".into()))?;
    Ok((dtype, shape, offs))
}

/// Refuses two of `entries` (sorted by byte range, offsets in the file) sharing bytes; the
/// error gives their ranges relative to the data, which starts at `header_end`.
fn check_no_overlap(
    path: &Path,
    entries: &[(usize, usize, TensorEntry)],
    header_end: usize,
) -> Result<()> {
    for w in entries.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.0 < a.1 {
            return Err(Error::malformed(path, format!(
                "tensors `{}` and `{}` overlap (bytes {}..{} and {}..{}); a valid file never shares bytes",
                a.2.name,
                b.2.name,
                a.0 - header_end,
                a.1 - header_end,
                b.0 - header_end,
                b.1 - header_end
            )));
        }
    }
    Ok(())
}

/// Adds to `tensors` each alias of `tied` (alias to target) as a copy of its target, both
/// marked as sharing the target's storage. An alias that is already a tensor, or a target
/// that is not one, is an error.
fn restore_tied(
    path: &Path,
    tensors: &mut Vec<TensorEntry>,
    tied: &BTreeMap<String, String>,
) -> Result<()> {
    let bad = |msg: String| Error::malformed(path, msg);
    for (alias, target) in tied {
        if tensors.iter().any(|t| &t.name == alias) {
            return Err(bad(format!(
                "`{TIED_KEY}` ties `{alias}` to `{target}`, but the file already holds a tensor named `{alias}`"
            )));
        }
        let src = tensors
            .iter_mut()
            .find(|t| &t.name == target)
            .ok_or_else(|| {
                bad(format!(
                    "`{TIED_KEY}` ties `{alias}` to `{target}`, which is not in the file"
                ))
            })?;
        src.storage_key = Some(target.clone());
        let mut copy = src.clone();
        copy.name = alias.clone();
        tensors.push(copy);
    }
    Ok(())
}

fn meta_string(v: &MetaValue) -> String {
    match v {
        MetaValue::String(s) => s.clone(),
        other => other.to_json().to_string(),
    }
}

/// Writes `tensors` to one safetensors file at `path` (atomically). Tensors with `tied_to`
/// set are not written again; they are listed under [`TIED_KEY`] and restored on reading.
pub fn write(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &Metadata,
    progress: Progress<'_>,
) -> Result<()> {
    let mut header = Map::new();
    let mut meta = Map::new();
    for (k, v) in metadata {
        meta.insert(k.clone(), Value::String(meta_string(v)));
    }
    let mut tied = Map::new();
    let mut offset = 0u64;
    for t in tensors {
        if let Some(target) = &t.tied_to {
            tied.insert(t.name.clone(), Value::String(target.clone()));
            continue;
        }
        let name = dtype_name(t.dtype).ok_or_else(|| {
            Error::tensor(path, &t.name, format!(
                "safetensors cannot hold {} data; write GGUF (`--to gguf`) or dequantize (`--dtype f32`)",
                t.dtype
            ))
        })?;
        let n = t.nbytes();
        header.insert(
            t.name.clone(),
            json!({"dtype": name, "shape": t.shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    if !tied.is_empty() {
        meta.insert(
            TIED_KEY.into(),
            Value::String(Value::Object(tied).to_string()),
        );
    }
    if !meta.is_empty() {
        // `__metadata__` first, as the reference implementation writes it.
        let mut with_meta = Map::new();
        with_meta.insert("__metadata__".into(), Value::Object(meta));
        with_meta.extend(header);
        header = with_meta;
    }
    let mut text = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| Error::malformed(path, e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    write_atomic(path, |w| {
        let io = |e| Error::io(path, e);
        w.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&text).map_err(io)?;
        for t in tensors.iter().filter(|t| t.tied_to.is_none()) {
            let n = t.write_to(path, w)?;
            progress(&t.name, n);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// A file with the given header JSON and `data_len` zero bytes of data.
    fn raw_file(dir: &Path, header: &str, data_len: usize) -> std::path::PathBuf {
        let p = dir.join("x.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data_len));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn open_err(header: &str, data_len: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        open(&raw_file(dir.path(), header, data_len))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn overlapping_offsets_are_refused() {
        let e = open_err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        );
        assert!(
            e.contains("overlap") && e.contains("`a`") && e.contains("`b`"),
            "{e}"
        );
    }

    #[test]
    fn offsets_past_the_end_are_refused() {
        let e = open_err(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        );
        assert!(e.contains("tensor `a`") && e.contains("run past"), "{e}");
    }

    #[test]
    fn a_header_claiming_1e15_elements_is_refused_without_allocating() {
        let e = open_err(
            r#"{"a":{"dtype":"F32","shape":[1000000,1000000000],"data_offsets":[0,4000000000000000]}}"#,
            8,
        );
        assert!(e.contains("tensor `a`"), "{e}");
    }

    #[test]
    fn header_length_beyond_the_file_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let mut b = (1u64 << 40).to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        std::fs::write(&p, &b).unwrap();
        assert!(open(&p).unwrap_err().to_string().contains("header claims"));
        assert!(open_err("{not json}", 0).contains("not a JSON object"));
        assert!(open_err(
            r#"{"a":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[0,1]}}"#,
            1
        )
        .contains("F8_E5M2"));
        assert!(open_err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            4
        )
        .contains("needs 8"));
    }

    #[test]
    fn write_read_round_trip_keeps_metadata_ties_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let w: Vec<u8> = (0..24u8).collect();
        let b: Vec<u8> = vec![1, 0, 0, 0, 0, 0, 0, 0];
        let mut outs = vec![
            OutTensor::new("embed.weight", DType::F32, vec![2, 3], || {
                Ok(Cow::Borrowed(&w[..]))
            }),
            OutTensor::new("step", DType::I64, vec![], || Ok(Cow::Borrowed(&b[..]))),
            OutTensor::new("lm_head.weight", DType::F32, vec![2, 3], || {
                Ok(Cow::Borrowed(&w[..]))
            }),
        ];
        outs[2].tied_to = Some("embed.weight".into());
        let mut meta = Metadata::new();
        meta.insert("format".into(), MetaValue::String("pt".into()));
        meta.insert("epoch".into(), MetaValue::I64(3));
        let mut seen = Vec::new();
        write(&p, &outs, &meta, &mut |n, _| seen.push(n.to_string())).unwrap();
        assert_eq!(seen, ["embed.weight", "step"], "tied tensor written once");
        let ck = open(&p).unwrap();
        assert_eq!(ck.metadata["format"], MetaValue::String("pt".into()));
        assert_eq!(ck.metadata["epoch"], MetaValue::String("3".into()));
        assert_eq!(&*ck.get("lm_head.weight").unwrap().data().unwrap(), &w[..]);
        assert_eq!(&*ck.get("step").unwrap().data().unwrap(), &b[..]);
        assert_eq!(
            ck.tied_groups(),
            vec![vec![
                "embed.weight".to_string(),
                "lm_head.weight".to_string()
            ]]
        );
    }
}
