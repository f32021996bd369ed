//! Sharded checkpoints: a JSON index (`model.safetensors.index.json`,
//! `pytorch_model.bin.index.json`) naming the shard of every tensor.
//!
//! A set of files cannot be replaced atomically, so the writer stages the whole set in a
//! hidden folder beside the output, then removes the old index, moves the new shards in and
//! moves the new index in last (each step a rename, the folder synced between them). A kill at
//! any point leaves the old set whole, or no index at all (the folder then does not open as a
//! model: [`crate::hub`] refuses lone shards), never a new index over old shards. Each shard
//! and the index carry one set id ([`SET_KEY`]); the reader refuses a shard from another set.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::checkpoint::{Checkpoint, Format};
use crate::error::{Error, Result};
use crate::meta::{MetaValue, Metadata};
use crate::write::{OutTensor, Progress};

/// Metadata key (in every shard's `__metadata__` and the index's `metadata`) holding the id of
/// the write that made the set.
pub const SET_KEY: &str = "ferry.shard_set";

/// Largest index file ferry parses.
const MAX_INDEX: u64 = 256 * 1024 * 1024;

/// Opens a shard index and every shard it names.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let bad = |msg: String| Error::malformed(path, msg);
    let index = read_index(path)?;
    let weight_map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object: not a shard index".into()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let files = shard_files(path, weight_map)?;
    let mut tensors = Vec::new();
    let mut metadata = crate::meta::Metadata::new();
    let mut shard_format = None;
    let mut found: HashMap<String, String> = HashMap::new();
    for f in &files {
        let shard = open_shard(path, &dir.join(f), f)?;
        shard_format.get_or_insert(shard.format);
        check_same_set(path, f, &index, &shard.metadata)?;
        for t in shard.tensors {
            if !weight_map.contains_key(&t.name) {
                return Err(bad(format!(
                    "shard `{f}` holds `{}`, which the index does not list: the index and its shards do not match",
                    t.name
                )));
            }
            found.insert(t.name.clone(), f.clone());
            tensors.push(t);
        }
        for (k, v) in shard.metadata {
            metadata.entry(k).or_insert(v);
        }
    }
    check_weight_map(path, weight_map, &found)?;
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

/// The JSON of the shard index at `path`, refused unread when larger than [`MAX_INDEX`].
fn read_index(path: &Path) -> Result<Value> {
    let bad = |msg: String| Error::malformed(path, msg);
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_INDEX {
        return Err(bad(format!("{len} bytes is too large for a shard index")));
    }
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))
}

/// The distinct shard files `weight_map` (of the index at `path`) names, sorted; each must be a
/// plain file name in the index's folder.
fn shard_files(path: &Path, weight_map: &Map<String, Value>) -> Result<BTreeSet<String>> {
    let bad = |msg: String| Error::malformed(path, msg);
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
    Ok(files)
}

/// Opens the shard `f` at `shard_path`, named by the index at `path`; a shard that is itself
/// an index is refused.
fn open_shard(path: &Path, shard_path: &Path, f: &str) -> Result<Checkpoint> {
    // A shard that is itself an index (or the index itself) would recurse without end.
    if crate::formats::sniff(shard_path)? == crate::formats::Sniffed::ShardIndex {
        return Err(Error::malformed(
            path,
            format!("`weight_map` names `{f}`, which is an index, not a shard; an index may only name shard files"),
        ));
    }
    crate::formats::open_file(shard_path)
}

/// Refuses the shard `f` when both it (`shard_meta`) and the index at `path` (`index`) carry
/// a set id ([`SET_KEY`]) and the ids differ.
fn check_same_set(path: &Path, f: &str, index: &Value, shard_meta: &Metadata) -> Result<()> {
    let set = |m: Option<&MetaValue>| match m {
        Some(MetaValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let index_set = index
        .get("metadata")
        .and_then(|m| m.get(SET_KEY))
        .and_then(Value::as_str);
    if let (Some(want), Some(got)) = (index_set, set(shard_meta.get(SET_KEY))) {
        if want != got {
            return Err(Error::malformed(
                path,
                format!(
                "shard `{f}` was written by another run than this index (set {got}, index {want}): \
                 the folder mixes files of two writes; write the model again"
            ),
            ));
        }
    }
    Ok(())
}

/// Checks that every tensor `weight_map` (of the index at `path`) lists was `found` in the
/// shard it names (`found`: tensor name to the shard that holds it).
fn check_weight_map(
    path: &Path,
    weight_map: &Map<String, Value>,
    found: &HashMap<String, String>,
) -> Result<()> {
    let bad = |msg: String| Error::malformed(path, msg);
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
    Ok(())
}

/// `NAME-00001-of-00003.safetensors`: the shard number and count, when `file` is named as a
/// shard.
pub fn shard_number(file: &str) -> Option<(u32, u32)> {
    let stem = file.strip_suffix(".safetensors")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (_, k) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(k) && digits(count)).then(|| Some((k.parse().ok()?, count.parse().ok()?)))?
}

/// Writes `tensors` as shards of at most `shard_bytes` each (a tensor larger than that gets a
/// shard of its own) plus `<stem>.safetensors.index.json`, Hugging Face style, replacing an
/// older set of the same stem as described in the module docs. Returns the written paths,
/// the index last. With one shard, writes a plain file at `path` (and removes an older set).
pub fn write(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &Metadata,
    shard_bytes: u64,
    progress: Progress<'_>,
) -> Result<Vec<PathBuf>> {
    let shards = split(path, tensors, shard_bytes)?;
    let dir = crate::atomic::parent_dir(path);
    let stem = path
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(".safetensors")
                .to_string()
        })
        .unwrap_or_else(|| "model".into());
    let index_path = dir.join(format!("{stem}.safetensors.index.json"));
    if shards.len() == 1 {
        super::safetensors::write(path, tensors, metadata, progress)?;
        remove_old_set(dir, &stem, &index_path, &[])?;
        return Ok(vec![path.to_path_buf()]);
    }
    let staging = crate::atomic::staging_folder(dir, &stem)?;
    let set_id = staging
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
        .unwrap_or_default();
    let mut shard_meta = metadata.clone();
    shard_meta.insert(SET_KEY.into(), MetaValue::String(set_id.clone()));
    let count = shards.len();
    let mut weight_map = Map::new();
    let mut names = Vec::new();
    let mut total = 0u64;
    for (k, part) in shards.iter().enumerate() {
        let file = format!("{stem}-{:05}-of-{count:05}.safetensors", k + 1);
        let outs: Vec<OutTensor<'_>> = part
            .iter()
            .map(|&i| {
                let t = &tensors[i];
                let mut o =
                    OutTensor::new(t.name.clone(), t.dtype, t.shape.clone(), move || t.bytes());
                o.tied_to = t.tied_to.clone();
                o.view = t.view;
                o.file_extent = t.file_extent.clone();
                if t.tied_to.is_none() {
                    total += t.nbytes();
                }
                weight_map.insert(t.name.clone(), Value::String(file.clone()));
                o
            })
            .collect();
        super::safetensors::write(&staging.path().join(&file), &outs, &shard_meta, progress)?;
        names.push(file);
    }
    let index = json!({
        "metadata": {"total_size": total, SET_KEY: set_id},
        "weight_map": weight_map,
    });
    let staged_index = staging
        .path()
        .join(index_path.file_name().unwrap_or_default());
    crate::atomic::write_atomic(&staged_index, |w| {
        serde_json::to_writer_pretty(&mut *w, &index)
            .map_err(|e| Error::malformed(&staged_index, e.to_string()))?;
        w.write_all(b"\n").map_err(|e| Error::io(&staged_index, e))
    })?;
    // Commit: no index, then the new shards, then the new index.
    remove_file_if_present(&index_path)?;
    sync_dir(dir);
    let mut written = Vec::new();
    for f in &names {
        let to = dir.join(f);
        std::fs::rename(staging.path().join(f), &to).map_err(|e| Error::io(&to, e))?;
        written.push(to);
    }
    sync_dir(dir);
    std::fs::rename(&staged_index, &index_path).map_err(|e| Error::io(&index_path, e))?;
    sync_dir(dir);
    written.push(index_path.clone());
    remove_old_set(dir, &stem, &index_path, &names)?;
    Ok(written)
}

/// Groups tensor indices into shards of at most `shard_bytes`; a tied tensor must land in the
/// shard of its target.
fn split(path: &Path, tensors: &[OutTensor<'_>], shard_bytes: u64) -> Result<Vec<Vec<usize>>> {
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let n = if t.tied_to.is_some() { 0 } else { t.nbytes() };
        if size > 0 && size + n > shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("non-empty").push(i);
        size += n;
    }
    for part in &shards {
        for &i in part {
            let Some(target) = &tensors[i].tied_to else {
                continue;
            };
            if !part.iter().any(|&j| &tensors[j].name == target) {
                return Err(Error::tensor(
                    path,
                    &tensors[i].name,
                    format!(
                        "tied to `{target}`, which landed in another shard; raise --shard-size"
                    ),
                ));
            }
        }
    }
    Ok(shards)
}

/// Removes what is left of an older set of `stem` in `dir`: its index unless it is `keep_index`
/// (the new one), and every `STEM-NNNNN-of-MMMMM.safetensors` that is not one of `keep`.
fn remove_old_set(dir: &Path, stem: &str, index: &Path, keep: &[String]) -> Result<()> {
    if keep.is_empty() {
        remove_file_if_present(index)?;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let ours = name
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with('-') && shard_number(&name).is_some());
        if ours && !keep.contains(&name) {
            remove_file_if_present(&e.path())?;
        }
    }
    sync_dir(dir);
    Ok(())
}

fn remove_file_if_present(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
        _ => Ok(()),
    }
}

/// Makes the renames in `dir` durable, so the commit order survives a power cut too.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::DType;

    fn outs(data: &[Vec<u8>]) -> Vec<OutTensor<'_>> {
        data.iter()
            .enumerate()
            .map(|(i, d)| {
                OutTensor::new(format!("t{i}"), DType::F32, vec![d.len() / 4], move || {
                    Ok(Cow::Borrowed(&d[..]))
                })
            })
            .collect()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sharded_write_produces_an_index_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        let data: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 400]).collect();
        let files = write(&p, &outs(&data), &Metadata::new(), 900, &mut |_, _| {}).unwrap();
        assert_eq!(
            files.len(),
            4,
            "3 shards of <= 900 bytes + index: {files:?}"
        );
        assert!(files[0].ends_with("model-00001-of-00003.safetensors"));
        let ck = crate::Checkpoint::open(files.last().unwrap()).unwrap();
        assert_eq!(ck.format, Format::SafetensorsSharded);
        assert_eq!(ck.tensors.len(), 5);
        assert_eq!(&*ck.get("t4").unwrap().data().unwrap(), &data[4][..]);
        assert_eq!(ck.metadata["index.total_size"], MetaValue::I64(2000));
        // The reference reader accepts every shard.
        for f in &files[..3] {
            safetensors::SafeTensors::deserialize(&std::fs::read(f).unwrap()).unwrap();
        }
        // No staging folder or temporary is left.
        assert_eq!(listing(dir.path()).len(), 4, "{:?}", listing(dir.path()));
    }

    /// A new set over an older one of another shard count replaces it whole: the old shards
    /// go, and the folder opens as the new model (issue 14, finding 7).
    #[test]
    fn a_new_set_replaces_an_older_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        let old: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 400]).collect();
        write(&p, &outs(&old), &Metadata::new(), 500, &mut |_, _| {}).unwrap();
        assert_eq!(listing(dir.path()).len(), 6);
        let new: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 10; 400]).collect();
        write(&p, &outs(&new), &Metadata::new(), 900, &mut |_, _| {}).unwrap();
        assert_eq!(
            listing(dir.path()),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json"
            ]
        );
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.tensors.len(), 4);
        assert_eq!(&*ck.get("t3").unwrap().data().unwrap(), &new[3][..]);
        // One shard: a plain file, and the older set is gone.
        write(&p, &outs(&new[..1]), &Metadata::new(), 900, &mut |_, _| {}).unwrap();
        assert_eq!(listing(dir.path()), ["model.safetensors"]);
    }

    /// A shard from another write under an index, or a shard holding a tensor the index does
    /// not list, is refused: a mixed or partial set never opens as a model.
    #[test]
    fn shards_of_another_write_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 400]).collect();
        for d in [&a, &b] {
            write(
                &d.path().join("model.safetensors"),
                &outs(&data),
                &Metadata::new(),
                900,
                &mut |_, _| {},
            )
            .unwrap();
        }
        let shard = "model-00002-of-00002.safetensors";
        std::fs::copy(b.path().join(shard), a.path().join(shard)).unwrap();
        let e = Checkpoint::open(a.path()).unwrap_err().to_string();
        assert!(e.contains("another run") && e.contains(shard), "{e}");
        // A shard listing a tensor the index does not.
        let index = a.path().join("model.safetensors.index.json");
        std::fs::copy(b.path().join(shard), a.path().join(shard)).unwrap();
        let mut v: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
        v["metadata"].as_object_mut().unwrap().remove(SET_KEY);
        v["weight_map"].as_object_mut().unwrap().remove("t3");
        std::fs::write(&index, v.to_string()).unwrap();
        let e = crate::Checkpoint::open(&index).unwrap_err().to_string();
        assert!(e.contains("`t3`") && e.contains("does not list"), "{e}");
    }

    #[test]
    fn shard_names() {
        assert_eq!(
            shard_number("model-00002-of-00003.safetensors"),
            Some((2, 3))
        );
        assert_eq!(
            shard_number("my-model-00001-of-00001.safetensors"),
            Some((1, 1))
        );
        assert_eq!(shard_number("model.safetensors"), None);
        assert_eq!(shard_number("model-2-of-3.safetensors"), None);
    }
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
