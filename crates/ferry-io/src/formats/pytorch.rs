//! PyTorch checkpoints: `torch.save` zip archives (torch >= 1.6), legacy `torch.save` streams,
//! TorchScript archives (`torch.jit.save`) for reading, and zip `.pth` for writing.
//!
//! Reading never runs code from the file: the pickles go through ferry's restricted VM
//! ([`super::pickle`]), tensors are rebuilt from their recorded `_rebuild_tensor*` calls, and
//! storages stay memory-mapped. Nested containers are flattened to dotted names
//! (`state_dict.encoder.weight`, `optimizer.state.0.exp_avg`); scalar leaves go to metadata.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use super::pickle::{self, Call, Global, Object, Options, Pickle, Value};
use super::zip::ZipArchive;
use crate::atomic::write_atomic;
use crate::budget::Meter;
use crate::checkpoint::{Checkpoint, Format};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::meta::{MetaValue, Metadata};
use crate::tensor::{is_row_major, Layout, Storage, TensorEntry};
use crate::write::{OutTensor, Progress};

/// Largest `data.pkl` ferry reads: the pickle only describes tensors (names, shapes), so even
/// a state dict of a million tensors stays far below this.
const MAX_PICKLE: u64 = 512 * 1024 * 1024;
/// Deepest container nesting ferry follows (deeper means a cycle or a hostile file).
const MAX_DEPTH: usize = 256;
/// Most container visits while flattening: shared sub-objects are visited once per reference,
/// so a hostile pickle could otherwise expand exponentially.
const MAX_VISITS: usize = 10_000_000;
/// Magic number opening legacy `torch.save` streams (`0x1950a86a20f9469cfc6c`), little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// Protocol version of legacy `torch.save` streams.
const LEGACY_PROTOCOL: i64 = 1001;
/// Module-state attributes of TorchScript objects that are not model data.
const TS_INTERNAL: &[&str] = &["training"];

// ---------------------------------------------------------------------------------------------
// dtypes and storage types
// ---------------------------------------------------------------------------------------------

/// What a storage type (or dtype object) in a pickle says about element types.
#[derive(Debug, Clone, PartialEq)]
enum StorageKind {
    /// A typed storage (or a dtype object) ferry can represent.
    Typed(DType),
    /// `torch.storage.UntypedStorage`: bytes; the dtype comes from `_rebuild_tensor_v3`.
    Untyped,
    /// A type ferry cannot represent (complex, quantized...): its torch name.
    Unsupported(String),
}

/// The ferry dtype of a legacy storage class name (`FloatStorage`).
fn storage_class_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}

/// The ferry dtype of a torch dtype name (`float32`, `half`...).
fn torch_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "float32" | "float" => DType::F32,
        "float64" | "double" => DType::F64,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint8" => DType::U8,
        "bool" => DType::Bool,
        "uint16" => DType::U16,
        "uint32" => DType::U32,
        "uint64" => DType::U64,
        "float8_e4m3fn" => DType::F8E4M3,
        _ => return None,
    })
}

/// Bytes per element of any storage type torch writes, including those ferry refuses (needed
/// to step over their data in legacy files).
fn storage_elem_size(kind: &StorageKind, g: &Global) -> Option<u64> {
    if let StorageKind::Typed(d) = kind {
        return Some(d.block_bytes() as u64);
    }
    if matches!(kind, StorageKind::Untyped) {
        return Some(1);
    }
    Some(match g.name.as_str() {
        "ComplexDoubleStorage" | "complex128" | "cdouble" => 16,
        "ComplexFloatStorage" | "complex64" | "cfloat" => 8,
        "QInt32Storage" | "qint32" | "complex32" | "chalf" => 4,
        "bits16" => 2,
        "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" | "qint8"
        | "quint8" | "quint4x2" | "quint2x4" | "bits8" | "float8_e5m2" | "float8_e4m3fnuz"
        | "float8_e5m2fnuz" | "float8_e8m0fnu" => 1,
        _ => return None,
    })
}

/// What a storage-type global means.
fn storage_kind(g: &Global) -> StorageKind {
    if g.is("torch.storage", "UntypedStorage") {
        return StorageKind::Untyped;
    }
    if g.module == "torch" {
        if let Some(d) = storage_class_dtype(&g.name).or_else(|| torch_dtype(&g.name)) {
            return StorageKind::Typed(d);
        }
    }
    StorageKind::Unsupported(g.dotted())
}

/// The legacy storage class that holds `d`, where torch has one.
fn storage_class_name(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "FloatStorage",
        DType::F64 => "DoubleStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::I8 => "CharStorage",
        DType::U8 => "ByteStorage",
        DType::Bool => "BoolStorage",
        _ => return None,
    })
}

/// The torch dtype name of `d` (`uint16`), for dtypes torch has.
fn torch_dtype_name(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I16 => "int16",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::Bool => "bool",
        DType::U16 => "uint16",
        DType::U32 => "uint32",
        DType::U64 => "uint64",
        DType::F8E4M3 => "float8_e4m3fn",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// storages behind persistent ids
// ---------------------------------------------------------------------------------------------

/// A storage a persistent id resolved to.
struct Resolved {
    key: String,
    kind: StorageKind,
    storage: Storage,
}

/// Where the storages of one file live.
trait StorageSource {
    /// Resolves a persistent id (already known to be a tuple) to its storage.
    fn resolve(&self, pk: &Pickle, pid: &[Value]) -> Result<Resolved>;
}

/// The storage type and key of a persistent id `('storage', type, key, location, numel, ...)`.
fn parse_pid(path: &Path, pk: &Pickle, pid: &[Value]) -> Result<(Global, StorageKind, String)> {
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
struct ZipStorages<'a> {
    archive: &'a ZipArchive,
    prefix: String,
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
struct LegacyStorages {
    path: std::path::PathBuf,
    by_key: HashMap<String, Storage>,
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
fn sub_range(s: &Storage, off: u64, len: u64) -> Option<Storage> {
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

// ---------------------------------------------------------------------------------------------
// flattening the object tree
// ---------------------------------------------------------------------------------------------

/// Walks an unpickled object tree, collecting tensors and metadata under dotted names.
struct Walker<'a> {
    path: &'a Path,
    file: Arc<Path>,
    pk: &'a Pickle,
    src: &'a dyn StorageSource,
    torchscript: bool,
    tensors: Vec<TensorEntry>,
    names: HashSet<String>,
    metadata: Metadata,
    visits: usize,
    /// Bytes of names and metadata values built, against the pickle budget.
    built: Meter,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A dictionary key as a name component, for the key types checkpoints use.
fn key_name(pk: &Pickle, k: &Value) -> Option<String> {
    Some(match k {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::None => "None".to_string(),
        Value::Float(f) => f.to_string(),
        Value::Ref(_) => pk.global(k)?.dotted(),
        _ => return None,
    })
}

impl<'a> Walker<'a> {
    fn new(path: &'a Path, pk: &'a Pickle, src: &'a dyn StorageSource, torchscript: bool) -> Self {
        Walker {
            path,
            file: Arc::from(path),
            pk,
            src,
            torchscript,
            tensors: Vec::new(),
            names: HashSet::new(),
            metadata: Metadata::new(),
            visits: 0,
            built: Meter::new(crate::budget::PICKLE),
        }
    }

    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::malformed(self.path, msg)
    }

    /// Counts `bytes` more of names and values against the pickle memory budget: shared
    /// references let a small pickle expand to a huge tree of names and scalars.
    fn charge(&mut self, bytes: u64) -> Result<()> {
        self.built.charge(bytes, self.path, || {
            "the names and values this checkpoint's object tree expands to (shared references multiply them)".into()
        })
    }

    /// `prefix.key`, charged against the budget.
    fn child(&mut self, prefix: &str, key: &str) -> Result<String> {
        self.charge((prefix.len() + key.len() + 1) as u64)?;
        Ok(join(prefix, key))
    }

    fn walk(&mut self, v: &Value, name: &str, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.bad(format!(
                "`{name}`: containers nested deeper than {MAX_DEPTH} (a cycle?)"
            )));
        }
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(self.bad(format!(
                "the object tree expands to more than {MAX_VISITS} entries (shared references in a loop?)"
            )));
        }
        if let Some(m) = self.scalar(v) {
            return self.add_meta(name, m);
        }
        let Some(obj) = self.pk.obj(v) else {
            return Ok(()); // bytes and huge integers carry no tensors
        };
        match obj {
            Object::Dict(d) => {
                for (k, item) in &d.items {
                    if let Some(key) = key_name(self.pk, k) {
                        let child = self.child(name, &key)?;
                        self.walk(item, &child, depth + 1)?;
                    }
                }
            }
            Object::Tuple(items) | Object::List(items) | Object::Set(items) => {
                self.walk_seq(items, name, depth)?
            }
            Object::Global(g) => self.add_meta(name, MetaValue::String(g.dotted()))?,
            Object::Call(c) => self.walk_call(c, name, depth)?,
            Object::PersistentId(_) => {}
        }
        Ok(())
    }

    /// Lists of scalars become one metadata array; other sequences are walked by index.
    fn walk_seq(&mut self, items: &[Value], name: &str, depth: usize) -> Result<()> {
        let all_scalars = !items.is_empty() && items.iter().all(|i| self.scalar_kind(i));
        if all_scalars {
            // Charged before the copy is made: a list referenced many times is copied each time.
            self.charge(items.len() as u64 * std::mem::size_of::<MetaValue>() as u64)?;
            let arr = items.iter().filter_map(|i| self.scalar(i)).collect();
            return self.add_meta(name, MetaValue::Array(arr));
        }
        for (i, item) in items.iter().enumerate() {
            let child = self.child(name, &i.to_string())?;
            self.walk(item, &child, depth + 1)?;
        }
        Ok(())
    }

    /// Whether `v` is a scalar [`Walker::scalar`] turns into a metadata value.
    fn scalar_kind(&self, v: &Value) -> bool {
        matches!(
            v,
            Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Str(_)
        )
    }

    fn scalar(&self, v: &Value) -> Option<MetaValue> {
        Some(match v {
            Value::None => MetaValue::Null,
            Value::Bool(b) => MetaValue::Bool(*b),
            Value::Int(i) => MetaValue::I64(*i),
            Value::Float(f) => MetaValue::F64(*f),
            Value::Str(s) => MetaValue::String(s.to_string()),
            _ => return None,
        })
    }

    fn add_meta(&mut self, name: &str, m: MetaValue) -> Result<()> {
        let name = if name.is_empty() { "value" } else { name };
        let strings = match &m {
            MetaValue::String(s) => s.len(),
            MetaValue::Array(a) => a
                .iter()
                .map(|v| match v {
                    MetaValue::String(s) => s.len(),
                    _ => 0,
                })
                .sum(),
            _ => 0,
        };
        self.charge((name.len() + strings + std::mem::size_of::<MetaValue>()) as u64)?;
        self.metadata.insert(name.to_string(), m);
        Ok(())
    }

    fn walk_call(&mut self, c: &Call, name: &str, depth: usize) -> Result<()> {
        let g = &c.func;
        if g.module == "__torch__" || g.module.starts_with("__torch__.") {
            return self.walk_module(c, name, depth);
        }
        if g.module == "torch._utils"
            || g.is("torch._tensor", "_rebuild_from_type_v2")
            || g.is("torch.nn.parameter", "Parameter")
        {
            let name = if name.is_empty() { "tensor" } else { name };
            let t = self.rebuild(g, &c.args, name, 0)?;
            return self.add_tensor(t);
        }
        Ok(()) // devices, slices, numpy dtypes...: no tensors, nothing worth keeping
    }

    /// A TorchScript object: its `BUILD` state holds attributes, submodules and tensors.
    fn walk_module(&mut self, c: &Call, name: &str, depth: usize) -> Result<()> {
        let Some(state) = &c.state else {
            return Ok(());
        };
        match self.pk.dict(state) {
            Some(d) => {
                for (k, item) in &d.items {
                    let Some(key) = key_name(self.pk, k) else {
                        continue;
                    };
                    if self.torchscript
                        && (TS_INTERNAL.contains(&key.as_str()) || key.starts_with('_'))
                    {
                        continue;
                    }
                    let child = self.child(name, &key)?;
                    self.walk(item, &child, depth + 1)?;
                }
                Ok(())
            }
            None => self.walk(state, name, depth + 1),
        }
    }

    fn add_tensor(&mut self, t: TensorEntry) -> Result<()> {
        t.validate()?;
        if !self.names.insert(t.name.clone()) {
            return Err(self.bad(format!("two tensors are both named `{}`", t.name)));
        }
        self.tensors.push(t);
        Ok(())
    }

    fn terr(&self, name: &str, msg: impl Into<String>) -> Error {
        Error::tensor(self.path, name, msg)
    }

    /// Rebuilds the tensor a `torch._utils._rebuild_*` call describes.
    fn rebuild(&self, g: &Global, args: &[Value], name: &str, hops: usize) -> Result<TensorEntry> {
        if hops > 8 {
            return Err(self.terr(name, "tensor rebuild calls nested too deeply"));
        }
        let unwrap = |this: &Self, v: Option<&Value>| -> Result<TensorEntry> {
            let inner = v.and_then(|v| this.pk.call(v)).ok_or_else(|| {
                this.terr(name, format!("`{}` does not wrap a tensor", g.dotted()))
            })?;
            this.rebuild(&inner.func, &inner.args, name, hops + 1)
        };
        match (g.module.as_str(), g.name.as_str()) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => self.tensor(args, None, name),
            ("torch._utils", "_rebuild_tensor_v3") => {
                let d = args
                    .get(6)
                    .and_then(|v| self.pk.global(v))
                    .ok_or_else(|| self.terr(name, "_rebuild_tensor_v3 without a dtype"))?;
                self.tensor(args, Some(d), name)
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") | ("torch.nn.parameter", "Parameter") => {
                unwrap(self, args.first())
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // _rebuild_from_type_v2(func, new_type, args, state): func(*args).
                let func = args
                    .first()
                    .and_then(|v| self.pk.global(v))
                    .ok_or_else(|| self.terr(name, "_rebuild_from_type_v2 without a function"))?;
                let inner = args.get(2).and_then(|v| self.pk.items(v)).unwrap_or(&[]);
                self.rebuild(func, inner, name, hops + 1)
            }
            ("torch._utils", "_rebuild_qtensor") => Err(self.terr(
                name,
                "quantized PyTorch tensors (torch.quantization) are not supported; dequantize in PyTorch \
                 (`t.dequantize()`) and save again, or quantize with ferry to GGUF",
            )),
            _ => Err(self.terr(name, format!("`{}` tensors are not supported by ferry", g.dotted()))),
        }
    }

    fn usizes(&self, v: Option<&Value>, name: &str, what: &str) -> Result<Vec<u64>> {
        let items = v
            .and_then(|v| self.pk.items(v))
            .ok_or_else(|| self.terr(name, format!("{what} is not a tuple")))?;
        items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n as u64),
                _ => Err(self.terr(name, format!("{what} holds a value that is not a size"))),
            })
            .collect()
    }

    /// `(storage, storage_offset, size, stride, ...)` to a tensor entry; `dtype` overrides the
    /// storage's element type (`_rebuild_tensor_v3`).
    fn tensor(&self, args: &[Value], dtype: Option<&Global>, name: &str) -> Result<TensorEntry> {
        let pid = args
            .first()
            .and_then(|v| match self.pk.obj(v) {
                Some(Object::PersistentId(p)) => self.pk.items(p),
                _ => None,
            })
            .ok_or_else(|| self.terr(name, "the tensor's storage is not a persistent id"))?;
        let r = self.src.resolve(self.pk, pid)?;
        let kind = match dtype {
            Some(g) => storage_kind(g),
            None => r.kind.clone(),
        };
        let dtype = match kind {
            StorageKind::Typed(d) => d,
            StorageKind::Untyped => return Err(self.terr(name, "an untyped storage without a dtype")),
            StorageKind::Unsupported(t) => {
                return Err(self.terr(
                    name,
                    format!("element type `{t}` is not supported by ferry (complex and quantized types have no counterpart)"),
                ))
            }
        };
        let offset = match args.get(1) {
            Some(Value::Int(o)) if *o >= 0 => *o as u64,
            _ => return Err(self.terr(name, "storage offset is not a size")),
        };
        let shape = self.usizes(args.get(2), name, "size")?;
        let strides = self.usizes(args.get(3), name, "stride")?;
        if shape.len() != strides.len() {
            return Err(self.terr(
                name,
                format!("{} strides for {} dimensions", strides.len(), shape.len()),
            ));
        }
        let shape: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| self.terr(name, "a dimension does not fit this machine"))?;
        let layout = if is_row_major(&shape, &strides) {
            let bytes = offset
                .checked_mul(dtype.block_bytes() as u64)
                .ok_or_else(|| self.terr(name, "storage offset overflows"))?;
            Layout::Contiguous { offset: bytes }
        } else {
            Layout::Strided { offset, strides }
        };
        Ok(TensorEntry {
            name: name.to_string(),
            dtype,
            shape,
            storage: r.storage,
            layout,
            storage_key: Some(r.key),
            file: self.file.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// readers
// ---------------------------------------------------------------------------------------------

/// The top folder of a torch zip archive: the `X` of the entry `X/data.pkl`.
pub fn archive_prefix(archive: &ZipArchive) -> Option<String> {
    archive
        .entries()
        .iter()
        .filter_map(|e| e.name.strip_suffix("/data.pkl"))
        .find(|p| !p.is_empty() && !p.contains('/'))
        .map(str::to_string)
}

/// Whether a zip archive is a TorchScript archive (`X/constants.pkl` or `X/code/...`).
pub fn is_torchscript(archive: &ZipArchive) -> bool {
    archive.entries().iter().any(|e| {
        e.name
            .split_once('/')
            .is_some_and(|(_, rest)| rest == "constants.pkl" || rest.starts_with("code/"))
    })
}

/// Opens a `torch.save` zip archive (`.pth`, `.bin`, `.pt`).
pub fn open_zip(path: &Path) -> Result<Checkpoint> {
    open_zip_archive(&ZipArchive::open(path)?)
}

/// Opens a TorchScript archive (`torch.jit.save`): every parameter and buffer, by module path.
pub fn open_torchscript(path: &Path) -> Result<Checkpoint> {
    open_torchscript_archive(&ZipArchive::open(path)?)
}

/// Reads a `torch.save` checkpoint from an opened zip archive.
pub fn open_zip_archive(archive: &ZipArchive) -> Result<Checkpoint> {
    read_archive(archive, false)
}

/// Reads a TorchScript module from an opened zip archive.
pub fn open_torchscript_archive(archive: &ZipArchive) -> Result<Checkpoint> {
    read_archive(archive, true)
}

fn read_archive(archive: &ZipArchive, torchscript: bool) -> Result<Checkpoint> {
    let path = archive.path();
    let prefix = archive_prefix(archive).ok_or_else(|| {
        Error::malformed(path, "no `<folder>/data.pkl` entry: not a PyTorch archive")
    })?;
    let byteorder = format!("{prefix}/byteorder");
    if archive.entry(&byteorder).is_some() {
        let order = archive.read_small(&byteorder, 16)?;
        if order.trim_ascii() == b"big" {
            return Err(Error::malformed(
                path,
                "the archive was saved on a big-endian machine; ferry reads little-endian data only \
                 (load and re-save it with torch on a little-endian machine)",
            ));
        }
    }
    let data = archive.read_small(&format!("{prefix}/data.pkl"), MAX_PICKLE)?;
    let (pk, _) = pickle::load(path, &data, &Options { torchscript })?;
    let src = ZipStorages { archive, prefix };
    let mut w = Walker::new(path, &pk, &src, torchscript);
    w.walk(&pk.root, "", 0)?;
    Ok(Checkpoint {
        format: if torchscript {
            Format::Torchscript
        } else {
            Format::PytorchZip
        },
        path: path.to_path_buf(),
        tensors: w.tensors,
        metadata: w.metadata,
        companions: Vec::new(),
    })
}

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
fn legacy_elem_sizes(path: &Path, pk: &Pickle) -> Result<HashMap<String, u64>> {
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
fn legacy_storage(
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

// ---------------------------------------------------------------------------------------------
// writer
// ---------------------------------------------------------------------------------------------

/// Builds the protocol-2 pickle of a state dict, memoizing globals and repeated strings.
struct PickleWriter {
    out: Vec<u8>,
    memo: HashMap<String, u32>,
}

impl PickleWriter {
    fn new() -> Self {
        PickleWriter {
            out: vec![0x80, 2],
            memo: HashMap::new(),
        }
    }

    fn put(&mut self, key: String) {
        let i = self.memo.len() as u32;
        self.memo.insert(key, i);
        if i < 256 {
            self.out.extend_from_slice(&[b'q', i as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    /// Emits a memoized item, or runs `emit` and memoizes it under `key`.
    fn memoized(&mut self, key: String, emit: impl FnOnce(&mut Self)) {
        match self.memo.get(&key) {
            Some(&i) if i < 256 => self.out.extend_from_slice(&[b'h', i as u8]),
            Some(&i) => {
                self.out.push(b'j');
                self.out.extend_from_slice(&i.to_le_bytes());
            }
            None => {
                emit(self);
                self.put(key);
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.memoized(format!("g:{module} {name}"), |w| {
            w.out.push(b'c');
            w.out
                .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        });
    }

    fn str(&mut self, s: &str) {
        self.memoized(format!("s:{s}"), |w| {
            w.out.push(b'X');
            w.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            w.out.extend_from_slice(s.as_bytes());
        });
    }

    fn int(&mut self, v: u64) {
        if v < 256 {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if v < 65536 {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= i32::MAX as u64 {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, with a zero byte when the sign bit is set.
            let mut b = v.to_le_bytes().to_vec();
            while b.len() > 1 && b[b.len() - 1] == 0 && b[b.len() - 2] & 0x80 == 0 {
                b.pop();
            }
            if b[b.len() - 1] & 0x80 != 0 {
                b.push(0);
            }
            self.out.extend_from_slice(&[0x8a, b.len() as u8]);
            self.out.extend_from_slice(&b);
        }
    }

    fn tuple(&mut self, items: &[u64]) {
        match items.len() {
            0 => self.out.push(b')'),
            n => {
                if n > 3 {
                    self.out.push(b'(');
                }
                for &i in items {
                    self.int(i);
                }
                self.out.push(match n {
                    1 => 0x85,
                    2 => 0x86,
                    3 => 0x87,
                    _ => b't',
                });
            }
        }
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
    }

    /// `name: _rebuild_tensor_v2(pid, 0, shape, strides, False, OrderedDict())`, or `_v3` with
    /// an untyped storage and a dtype argument for dtypes without a legacy storage class.
    fn tensor(&mut self, name: &str, dtype: DType, shape: &[usize], key: &str, storage_numel: u64) {
        let class = storage_class_name(dtype);
        self.str(name);
        self.global(
            "torch._utils",
            if class.is_some() {
                "_rebuild_tensor_v2"
            } else {
                "_rebuild_tensor_v3"
            },
        );
        self.out.push(b'(');
        self.out.push(b'(');
        self.str("storage");
        match class {
            Some(c) => self.global("torch", c),
            None => self.global("torch.storage", "UntypedStorage"),
        }
        self.str(key);
        self.str("cpu");
        let numel = if class.is_some() {
            storage_numel
        } else {
            storage_numel * dtype.block_bytes() as u64
        };
        self.int(numel);
        self.out.extend_from_slice(b"tQ");
        self.int(0);
        let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        self.tuple(&dims);
        self.tuple(&row_major_strides(shape));
        self.out.push(0x89);
        self.empty_ordered_dict();
        if class.is_none() {
            if let Some(n) = torch_dtype_name(dtype) {
                self.global("torch", n);
            }
        }
        self.out.extend_from_slice(b"tR");
    }
}

fn row_major_strides(shape: &[usize]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1] as u64);
    }
    strides
}

/// Where each output tensor's data go: its own storage, or a tied target's.
struct Planned {
    key: String,
    storage_numel: u64,
    writes: bool,
}

fn plan(path: &Path, tensors: &[OutTensor<'_>]) -> Result<Vec<Planned>> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Planned> = Vec::with_capacity(tensors.len());
    let mut next_key = 0usize;
    for (i, t) in tensors.iter().enumerate() {
        if t.dtype.is_quantized() || torch_dtype_name(t.dtype).is_none() {
            return Err(Error::tensor(
                path,
                &t.name,
                format!(
                    "PyTorch .pth cannot hold {} data; write GGUF (`--to gguf`) or dequantize (`--dtype f32`)",
                    t.dtype
                ),
            ));
        }
        if crate::tensor::numel(&t.shape).is_none() {
            return Err(Error::tensor(path, &t.name, "shape overflows"));
        }
        if by_name.insert(&t.name, i).is_some() {
            return Err(Error::tensor(
                path,
                &t.name,
                "two output tensors have this name",
            ));
        }
        let planned = match &t.tied_to {
            Some(target) => {
                let &j = by_name
                    .get(target.as_str())
                    .filter(|&&j| j < i)
                    .ok_or_else(|| {
                        Error::tensor(
                            path,
                            &t.name,
                            format!("tied to `{target}`, which is not written before it"),
                        )
                    })?;
                let src = &tensors[j];
                if src.dtype != t.dtype || t.numel() > out[j].storage_numel {
                    return Err(Error::tensor(
                        path,
                        &t.name,
                        format!(
                            "tied to `{target}` but its dtype or size differs ({} {:?} vs {} {:?})",
                            t.dtype, t.shape, src.dtype, src.shape
                        ),
                    ));
                }
                Planned {
                    key: out[j].key.clone(),
                    storage_numel: out[j].storage_numel,
                    writes: false,
                }
            }
            None => {
                next_key += 1;
                Planned {
                    key: (next_key - 1).to_string(),
                    storage_numel: t.numel(),
                    writes: true,
                }
            }
        };
        out.push(planned);
    }
    Ok(out)
}

/// The `data.pkl` of a state dict: an `OrderedDict` of name -> tensor.
fn state_dict_pickle(tensors: &[OutTensor<'_>], planned: &[Planned]) -> Vec<u8> {
    let mut w = PickleWriter::new();
    w.empty_ordered_dict();
    if !tensors.is_empty() {
        w.out.push(b'(');
        for (t, p) in tensors.iter().zip(planned) {
            w.tensor(&t.name, t.dtype, &t.shape, &p.key, p.storage_numel);
        }
        w.out.push(b'u');
    }
    w.out.push(b'.');
    w.out
}

/// Name of the top folder inside archives ferry writes.
pub const ARCHIVE_PREFIX: &str = "archive";

/// Writes `tensors` as a zip `.pth` that `torch.load(path, weights_only=True)` accepts: an
/// `OrderedDict` state dict, one storage per tensor (tied tensors share their target's), data
/// aligned to 64 bytes. Tensors are produced and written one at a time. Only tensors are
/// written: `metadata` has no place in a state dict and is not stored.
pub fn write(
    path: &Path,
    tensors: &[OutTensor<'_>],
    metadata: &Metadata,
    progress: Progress<'_>,
) -> Result<()> {
    let _ = metadata;
    let planned = plan(path, tensors)?;
    let pkl = state_dict_pickle(tensors, &planned);
    write_atomic(path, |file| {
        let mut z = super::zip::ZipWriter::new(file, path);
        let mut id = Sha256::new();
        id.update(&pkl);
        let p = ARCHIVE_PREFIX;
        z.add(&format!("{p}/data.pkl"), &pkl)?;
        z.add(&format!("{p}/.format_version"), b"1")?;
        z.add(&format!("{p}/.storage_alignment"), b"64")?;
        z.add(&format!("{p}/byteorder"), b"little")?;
        for (t, plan) in tensors.iter().zip(&planned) {
            if !plan.writes {
                progress(&t.name, 0);
                continue;
            }
            let bytes = t.bytes_checked(path)?;
            z.add(&format!("{p}/data/{}", plan.key), &bytes)?;
            id.update(crc_of(&bytes).to_le_bytes());
            progress(&t.name, bytes.len() as u64);
        }
        z.add(&format!("{p}/version"), b"3\n")?;
        z.add(
            &format!("{p}/.data/serialization_id"),
            serialization_id(id).as_bytes(),
        )?;
        z.finish()?.flush().map_err(|e| Error::io(path, e))
    })
}

fn crc_of(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

/// A 40-digit id like the one torch writes, derived from the content so output is reproducible.
fn serialization_id(h: Sha256) -> String {
    let mut s = String::with_capacity(40);
    for b in h.finalize().iter().take(20) {
        let _ = write!(s, "{:02}", b % 100);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn out<'a>(name: &str, dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> OutTensor<'a> {
        OutTensor::new(name, dtype, shape, move || Ok(Cow::Owned(data.clone())))
    }

    fn write_tmp(tensors: &[OutTensor<'_>]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.pth");
        write(&p, tensors, &Metadata::new(), &mut |_, _| {}).unwrap();
        (dir, p)
    }

    #[test]
    fn round_trip_every_dtype_and_ties() {
        let mut ts = Vec::new();
        let dtypes = [
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::I16,
            DType::I8,
            DType::U8,
            DType::Bool,
            DType::U16,
            DType::U32,
            DType::U64,
            DType::F8E4M3,
        ];
        for (i, d) in dtypes.iter().enumerate() {
            let n = 6 * d.block_bytes();
            let data: Vec<u8> = (0..n)
                .map(|k| {
                    if *d == DType::Bool {
                        (k % 2) as u8
                    } else {
                        (k * 7 + i) as u8
                    }
                })
                .collect();
            ts.push(out(&format!("layer.{i}.w"), *d, vec![2, 3], data));
        }
        let mut tied = out("lm_head.weight", DType::F32, vec![3, 2], vec![0; 24]);
        tied.tied_to = Some("layer.0.w".into());
        ts.push(tied);
        ts.push(out("empty", DType::F32, vec![0, 4], vec![]));
        ts.push(out(
            "scalar",
            DType::I64,
            vec![],
            5i64.to_le_bytes().to_vec(),
        ));
        let (_d, p) = write_tmp(&ts);
        let ck = open_zip(&p).unwrap();
        assert_eq!(ck.format, Format::PytorchZip);
        assert_eq!(ck.tensors.len(), ts.len());
        for t in &ts {
            let e = ck.get(&t.name).unwrap();
            assert_eq!(e.dtype, t.dtype, "{}", t.name);
            assert_eq!(e.shape, t.shape, "{}", t.name);
            let want = if t.name == "lm_head.weight" {
                ts[0].bytes().unwrap()
            } else {
                t.bytes().unwrap()
            };
            assert_eq!(&*e.data().unwrap(), &*want, "{}", t.name);
        }
        assert_eq!(
            ck.tied_groups(),
            vec![vec!["layer.0.w".to_string(), "lm_head.weight".to_string()]]
        );
        // Reproducible output.
        let (_d2, p2) = write_tmp(&ts);
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());
    }

    #[test]
    fn writer_refuses_quantized_and_bad_ties() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.pth");
        let e = write(
            &p,
            &[out("q", DType::Q4_0, vec![32], vec![0; 18])],
            &Metadata::new(),
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`q`") && e.contains("GGUF"), "{e}");
        let mut t = out("b", DType::F32, vec![1], vec![0; 4]);
        t.tied_to = Some("zzz".into());
        assert!(write(&p, &[t], &Metadata::new(), &mut |_, _| {}).is_err());
        assert!(!p.exists());
    }

    /// A zip holding `pkl` as `a/data.pkl` plus storages.
    fn archive_with(
        pkl: &[u8],
        storages: &[(&str, &[u8])],
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pth");
        let mut z = super::super::zip::ZipWriter::new(Vec::new(), &p);
        z.add("a/data.pkl", pkl).unwrap();
        for (k, d) in storages {
            z.add(&format!("a/data/{k}"), d).unwrap();
        }
        std::fs::write(&p, z.finish().unwrap()).unwrap();
        (dir, p)
    }

    /// `{'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', n), offset, shape, stride, False, OrderedDict())}`
    fn tensor_pickle(offset: u64, shape: &[u64], stride: &[u64], storage: &str) -> Vec<u8> {
        let mut w = PickleWriter::new();
        w.out.push(b'}');
        w.str("w");
        w.global("torch._utils", "_rebuild_tensor_v2");
        w.out.extend_from_slice(b"((");
        w.str("storage");
        w.global("torch", storage);
        w.str("0");
        w.str("cpu");
        w.int(4);
        w.out.extend_from_slice(b"tQ");
        w.int(offset);
        w.tuple(shape);
        w.tuple(stride);
        w.out.push(0x89);
        w.empty_ordered_dict();
        w.out.extend_from_slice(b"tRs.");
        w.out
    }

    #[test]
    fn views_offsets_and_bad_bounds() {
        let data: Vec<u8> = (0..6u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
        // Transposed 3x2 view of a 2x3 storage.
        let (_d, p) = archive_with(
            &tensor_pickle(0, &[3, 2], &[1, 3], "FloatStorage"),
            &[("0", &data)],
        );
        let ck = open_zip(&p).unwrap();
        let got: Vec<f32> = ck.tensors[0]
            .data()
            .unwrap()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![0., 3., 1., 4., 2., 5.]);
        // Contiguous with an element offset.
        let (_d, p) = archive_with(
            &tensor_pickle(2, &[4], &[1], "FloatStorage"),
            &[("0", &data)],
        );
        let ck = open_zip(&p).unwrap();
        assert_eq!(ck.tensors[0].layout, Layout::Contiguous { offset: 8 });
        // Offset past the end: a named error at open.
        let (_d, p) = archive_with(
            &tensor_pickle(5, &[4], &[1], "FloatStorage"),
            &[("0", &data)],
        );
        let e = open_zip(&p).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("storage holds"), "{e}");
        // A shape claiming 10^15 elements: refused without allocating.
        let (_d, p) = archive_with(
            &tensor_pickle(0, &[1_000_000_000_000_000], &[1], "FloatStorage"),
            &[("0", &data)],
        );
        let e = open_zip(&p).unwrap_err().to_string();
        assert!(e.contains("`w`"), "{e}");
        // Unsupported storage types are named, never skipped.
        let (_d, p) = archive_with(
            &tensor_pickle(0, &[1], &[1], "ComplexFloatStorage"),
            &[("0", &data)],
        );
        let e = open_zip(&p).unwrap_err().to_string();
        assert!(
            e.contains("`w`") && e.contains("ComplexFloatStorage"),
            "{e}"
        );
        // A missing storage entry.
        let (_d, p) = archive_with(&tensor_pickle(0, &[1], &[1], "FloatStorage"), &[]);
        let e = open_zip(&p).unwrap_err().to_string();
        assert!(e.contains("a/data/0"), "{e}");
    }

    #[test]
    fn hostile_pickle_in_an_archive_is_refused() {
        let (_d, p) = archive_with(
            b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00lsq\x00\x85q\x01Rq\x02.",
            &[],
        );
        match open_zip(&p) {
            Err(Error::UnsafePickle { global, .. }) => assert_eq!(global, "posix system"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn legacy_truncated_and_wrong_magic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.pth");
        std::fs::write(&p, b"\x80\x02K\x01.").unwrap();
        assert!(open_legacy(&p).unwrap_err().to_string().contains("magic"));
        std::fs::write(
            &p,
            b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9",
        )
        .unwrap();
        assert!(matches!(open_legacy(&p), Err(Error::Malformed { .. })));
    }

    #[test]
    fn int_encoding_round_trips_through_the_vm() {
        for v in [
            0u64,
            255,
            256,
            65535,
            65536,
            i32::MAX as u64,
            1 << 31,
            1 << 40,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut w = PickleWriter::new();
            w.int(v);
            w.out.push(b'.');
            let (pk, _) = pickle::load(Path::new("t"), &w.out, &Options::default()).unwrap();
            match pk.root {
                Value::Int(i) => assert_eq!(i as u64, v),
                Value::BigInt(b) => {
                    assert_eq!(&b[..8], &v.to_le_bytes());
                    assert!(b[8..].iter().all(|&x| x == 0));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
