//! Flattening the unpickled object tree: tensors rebuilt from their recorded
//! `_rebuild_tensor*` calls under dotted names, scalar leaves into metadata, with budgets on
//! depth, visits and memory against hostile files.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::dtypes::{storage_kind, StorageKind};
use super::storages::StorageSource;
use crate::budget::Meter;
use crate::error::{Error, Result};
use crate::formats::pickle::{Call, Global, Object, Pickle, Value};
use crate::meta::{MetaValue, Metadata};
use crate::tensor::{is_row_major, Layout, TensorEntry};

/// Deepest container nesting ferry follows (deeper means a cycle or a hostile file).
const MAX_DEPTH: usize = 256;
/// Most container visits while flattening: shared sub-objects are visited once per reference,
/// so a hostile pickle could otherwise expand exponentially.
const MAX_VISITS: usize = 10_000_000;
/// Module-state attributes of TorchScript objects that are not model data.
const TS_INTERNAL: &[&str] = &["training"];

/// Walks an unpickled object tree, collecting tensors and metadata under dotted names.
pub(super) struct Walker<'a> {
    pub(super) path: &'a Path,
    pub(super) file: Arc<Path>,
    pub(super) pk: &'a Pickle,
    pub(super) src: &'a dyn StorageSource,
    pub(super) torchscript: bool,
    pub(super) tensors: Vec<TensorEntry>,
    pub(super) names: HashSet<String>,
    pub(super) metadata: Metadata,
    pub(super) visits: usize,
    /// Bytes of names and metadata values built, against the pickle budget.
    pub(super) built: Meter,
}

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A dictionary key as a name component, for the key types checkpoints use.
pub(super) fn key_name(pk: &Pickle, k: &Value) -> Option<String> {
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
    pub(super) fn new(
        path: &'a Path,
        pk: &'a Pickle,
        src: &'a dyn StorageSource,
        torchscript: bool,
    ) -> Self {
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

    pub(super) fn bad(&self, msg: impl Into<String>) -> Error {
        Error::malformed(self.path, msg)
    }

    /// Counts `bytes` more of names and values against the pickle memory budget: shared
    /// references let a small pickle expand to a huge tree of names and scalars.
    pub(super) fn charge(&mut self, bytes: u64) -> Result<()> {
        self.built.charge(bytes, self.path, || {
            "the names and values this checkpoint's object tree expands to (shared references multiply them)".into()
        })
    }

    /// `prefix.key`, charged against the budget.
    pub(super) fn child(&mut self, prefix: &str, key: &str) -> Result<String> {
        self.charge((prefix.len() + key.len() + 1) as u64)?;
        Ok(join(prefix, key))
    }

    pub(super) fn walk(&mut self, v: &Value, name: &str, depth: usize) -> Result<()> {
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
    pub(super) fn walk_seq(&mut self, items: &[Value], name: &str, depth: usize) -> Result<()> {
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
    pub(super) fn scalar_kind(&self, v: &Value) -> bool {
        matches!(
            v,
            Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Str(_)
        )
    }

    pub(super) fn scalar(&self, v: &Value) -> Option<MetaValue> {
        Some(match v {
            Value::None => MetaValue::Null,
            Value::Bool(b) => MetaValue::Bool(*b),
            Value::Int(i) => MetaValue::I64(*i),
            Value::Float(f) => MetaValue::F64(*f),
            Value::Str(s) => MetaValue::String(s.to_string()),
            _ => return None,
        })
    }

    pub(super) fn add_meta(&mut self, name: &str, m: MetaValue) -> Result<()> {
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

    pub(super) fn walk_call(&mut self, c: &Call, name: &str, depth: usize) -> Result<()> {
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
    pub(super) fn walk_module(&mut self, c: &Call, name: &str, depth: usize) -> Result<()> {
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

    pub(super) fn add_tensor(&mut self, t: TensorEntry) -> Result<()> {
        t.validate()?;
        if !self.names.insert(t.name.clone()) {
            return Err(self.bad(format!("two tensors are both named `{}`", t.name)));
        }
        self.tensors.push(t);
        Ok(())
    }

    pub(super) fn terr(&self, name: &str, msg: impl Into<String>) -> Error {
        Error::tensor(self.path, name, msg)
    }

    /// Rebuilds the tensor a `torch._utils._rebuild_*` call describes.
    pub(super) fn rebuild(
        &self,
        g: &Global,
        args: &[Value],
        name: &str,
        hops: usize,
    ) -> Result<TensorEntry> {
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

    pub(super) fn usizes(&self, v: Option<&Value>, name: &str, what: &str) -> Result<Vec<u64>> {
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
    pub(super) fn tensor(
        &self,
        args: &[Value],
        dtype: Option<&Global>,
        name: &str,
    ) -> Result<TensorEntry> {
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
