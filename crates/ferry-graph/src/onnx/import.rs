//! `.onnx` -> [`OnnxModel`]. The file is memory-mapped and decoded with `Bytes` fields, so each
//! initializer's `raw_data` is a slice of the map and becomes a mapped ferry-io tensor;
//! external-data files are mapped too. Nothing is executed and no size is trusted: every
//! tensor's byte count is checked against its shape before it is accepted.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ferry_io::{DType, Layout, Storage, TensorEntry};
use indexmap::IndexMap;
use memmap2::Mmap;
use prost::Message;

use super::dtype::{dtype_from_onnx, onnx_type_name};
use super::proto;
use crate::error::{Error, Result};
use crate::ir::{Attr, Dim, Graph, Narrow, Node, OnnxModel, ValueInfo};

/// Owner of a mapped file for `Bytes::from_owner`.
struct MapOwner(Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; like every reader of ferry-io, ferry assumes model files
    // are not modified while they are open.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(map))
}

/// Reads an `.onnx` file, with external data resolved relative to its folder.
pub fn read_model(path: &Path) -> Result<OnnxModel> {
    let map = map_file(path)?;
    let bytes = Bytes::from_owner(MapOwner(map.clone()));
    decode_model(bytes, Some((path, map)))
}

/// Decodes ONNX bytes. `source` (the file and its map) lets initializers borrow the map and
/// resolves external data; without it, tensors are copied and external data is an error.
pub fn decode_model(bytes: Bytes, source: Option<(&Path, Arc<Mmap>)>) -> Result<OnnxModel> {
    let path: PathBuf = source
        .as_ref()
        .map(|(p, _)| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("<memory>"));
    let proto = proto::ModelProto::decode(bytes).map_err(|e| {
        Error::malformed(
            &path,
            format!("not an ONNX model (protobuf decoding failed: {e})"),
        )
    })?;
    let mut ctx = Importer {
        path: path.clone(),
        map: source.map(|(_, m)| m),
        external: HashMap::new(),
    };
    let g = proto
        .graph
        .ok_or_else(|| Error::malformed(&path, "the model has no graph"))?;
    let opsets: IndexMap<String, i64> = proto
        .opset_import
        .iter()
        .map(|o| {
            let d = o.domain.clone().unwrap_or_default();
            (
                if d == "ai.onnx" { String::new() } else { d },
                o.version.unwrap_or(0),
            )
        })
        .collect();
    let graph = ctx.graph(g, None)?;
    graph
        .validate()
        .map_err(|e| Error::malformed(&path, e.to_string()))?;
    Ok(OnnxModel {
        graph,
        opsets,
        ir_version: proto.ir_version.unwrap_or(0),
        producer: (
            proto.producer_name.unwrap_or_default(),
            proto.producer_version.unwrap_or_default(),
        ),
        metadata: proto
            .metadata_props
            .into_iter()
            .map(|p| (p.key.unwrap_or_default(), p.value.unwrap_or_default()))
            .collect(),
    })
}

/// Reads one serialized ONNX `TensorProto` file, such as the `test_data_set_N/input_K.pb` and
/// `output_K.pb` files of ONNX's backend tests, with the checks an initializer gets: a known
/// element type, a byte count that matches the shape, raw or typed data. Load it with
/// [`crate::ir::entry_to_candle`]. External data and segments are refused.
pub fn read_tensor(path: &Path) -> Result<TensorEntry> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let t = proto::TensorProto::decode(bytes.as_slice()).map_err(|e| {
        Error::malformed(
            path,
            format!("not an ONNX TensorProto (protobuf decoding failed: {e})"),
        )
    })?;
    if t.data_location == Some(proto::tensor_proto::DataLocation::External as i32) {
        return Err(Error::malformed(
            path,
            "a TensorProto with external data: only inline tensors are read here",
        ));
    }
    Importer {
        path: path.to_path_buf(),
        map: None,
        external: HashMap::new(),
    }
    .tensor(t, "tensor")
}

struct Importer {
    path: PathBuf,
    map: Option<Arc<Mmap>>,
    external: HashMap<PathBuf, Arc<Mmap>>,
}

impl Importer {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::malformed(&self.path, msg)
    }

    /// Reads a graph and, recursively, its subgraphs. `scope` is `None` for the main graph,
    /// and for a subgraph the path of its node and attribute (`Loop_3/body`), which prefixes
    /// the names it generates for nameless nodes. Nodes are put in topological order; the
    /// caller validates the whole tree (a subgraph may read values of enclosing graphs).
    fn graph(&mut self, g: proto::GraphProto, scope: Option<&str>) -> Result<Graph> {
        let mut initializers = IndexMap::new();
        let mut narrow = IndexMap::new();
        for t in g.initializer {
            let declared = t.data_type.and_then(Narrow::from_onnx);
            let e = self.tensor(t, "initializer")?;
            if let Some(n) = declared {
                narrow.insert(e.name.clone(), n);
            }
            initializers.insert(e.name.clone(), e);
        }
        for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
            if let Some(n) = declared_narrow(v) {
                narrow.insert(v.name.clone().unwrap_or_default(), n);
            }
        }
        if let Some(s) = g.sparse_initializer.first() {
            let name = s
                .values
                .as_ref()
                .and_then(|v| v.name.clone())
                .unwrap_or_default();
            return Err(self.err(format!(
                "sparse initializer `{name}`: sparse tensors are not supported; densify it first (onnx.numpy_helper)"
            )));
        }
        let inputs = g
            .input
            .iter()
            .map(value_info)
            .filter(|v| !initializers.contains_key(&v.name))
            .collect();
        let outputs = g.output.iter().map(value_info).collect();
        let value_info = g
            .value_info
            .iter()
            .map(|v| {
                let v = value_info(v);
                (v.name.clone(), v)
            })
            .collect();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut nodes = Vec::with_capacity(g.node.len());
        for (i, n) in g.node.into_iter().enumerate() {
            let op_type = n.op_type.clone().unwrap_or_default();
            let mut name =
                n.name
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| match scope {
                        Some(s) => format!("{s}/{op_type}_{i}"),
                        None => format!("{op_type}_{i}"),
                    });
            // Unique even when a file's own names collide with generated ones.
            while names.contains_key(&name) {
                let seen = names.get_mut(&name).expect("present");
                *seen += 1;
                name = format!("{name}__{seen}");
            }
            names.insert(name.clone(), 1);
            let mut attrs = IndexMap::new();
            for a in n.attribute {
                let key = a.name.clone().unwrap_or_default();
                let v = self.attr(a, &name).map_err(|e| {
                    self.err(format!("node `{name}` ({op_type}), attribute `{key}`: {e}"))
                })?;
                attrs.insert(key, v);
            }
            let domain = n.domain.unwrap_or_default();
            nodes.push(Node {
                name,
                op_type,
                domain: if domain == "ai.onnx" {
                    String::new()
                } else {
                    domain
                },
                inputs: n.input,
                outputs: n.output,
                attrs,
                device: None,
            });
        }
        let mut graph = Graph {
            name: g.name.unwrap_or_default(),
            inputs,
            outputs,
            nodes,
            initializers,
            value_info,
            narrow,
        };
        graph.sort().map_err(|e| self.err(e.to_string()))?;
        Ok(graph)
    }

    /// One attribute of node `node`.
    fn attr(&mut self, a: proto::AttributeProto, node: &str) -> std::result::Result<Attr, String> {
        use proto::attribute_proto::AttributeType as T;
        // Files from before IR 3 leave `type` unset: infer it from the field that holds a value.
        let inferred = if a.f.is_some() {
            T::Float
        } else if a.i.is_some() {
            T::Int
        } else if a.s.is_some() {
            T::String
        } else if a.t.is_some() {
            T::Tensor
        } else if a.g.is_some() {
            T::Graph
        } else if !a.floats.is_empty() {
            T::Floats
        } else if !a.ints.is_empty() {
            T::Ints
        } else if !a.strings.is_empty() {
            T::Strings
        } else {
            T::Undefined
        };
        let ty = a
            .r#type
            .and_then(|t| T::try_from(t).ok())
            .filter(|t| *t != T::Undefined)
            .unwrap_or(inferred);
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        Ok(match ty {
            T::Float => Attr::Float(a.f.unwrap_or(0.0)),
            T::Int => Attr::Int(a.i.unwrap_or(0)),
            T::String => Attr::String(a.s.as_ref().map(text).unwrap_or_default()),
            T::Tensor => {
                let t = a.t.ok_or("tensor attribute without a tensor")?;
                Attr::Tensor(self.tensor(t, "attribute").map_err(|e| e.to_string())?)
            }
            T::Floats => Attr::Floats(a.floats),
            T::Ints => Attr::Ints(a.ints),
            T::Strings => Attr::Strings(a.strings.iter().map(text).collect()),
            T::Graph => {
                let g = a.g.ok_or("graph attribute without a graph")?;
                let scope = format!("{node}/{}", a.name.as_deref().unwrap_or_default());
                let g = self.graph(g, Some(&scope)).map_err(|e| match e {
                    Error::File(f) => f.problem.to_string(),
                    e => e.to_string(),
                })?;
                Attr::Graph(Box::new(g))
            }
            T::Graphs => {
                return Err(
                    "lists of subgraphs (attribute type GRAPHS) are not supported; no standard op takes one"
                        .into(),
                )
            }
            other => return Err(format!("attribute type {other:?} is not supported")),
        })
    }

    fn tensor(&mut self, t: proto::TensorProto, what: &str) -> Result<TensorEntry> {
        let name = t.name.clone().unwrap_or_default();
        let path = self.path.clone();
        let terr = |msg: String| Error::Io(ferry_io::Error::tensor(&path, &name, msg));
        let code = t.data_type.unwrap_or(0);
        let narrow = Narrow::from_onnx(code);
        let dtype = dtype_from_onnx(code)
            .or(narrow.map(Narrow::held))
            .ok_or_else(|| {
                terr(format!(
                    "{what} of element type {code} ({}), which ferry cannot hold",
                    onnx_type_name(code)
                ))
            })?;
        let mut shape = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            shape.push(usize::try_from(d).map_err(|_| terr(format!("negative dimension {d}")))?);
        }
        let numel = ferry_io::tensor::numel(&shape)
            .ok_or_else(|| terr(format!("shape {shape:?} overflows")))?;
        let nbytes = match narrow {
            Some(n) => n.file_bytes(numel),
            None => dtype.storage_bytes(numel),
        }
        .ok_or_else(|| terr(format!("shape {shape:?} overflows")))?;
        if t.segment.is_some() {
            return Err(terr("segmented tensors are not supported".into()));
        }
        let external = t.data_location == Some(proto::tensor_proto::DataLocation::External as i32);
        let (storage, file): (Storage, Arc<Path>) = if let Some(n) = narrow {
            let packed = if external {
                let (storage, _) = self.external_storage(&t, nbytes).map_err(terr)?;
                let bytes = storage.bytes().map_err(|e| terr(e.to_string()))?;
                bytes.to_vec()
            } else if let Some(raw) = &t.raw_data {
                raw.to_vec()
            } else {
                // One element (float8) or one packed byte (4- and 2-bit) per int32_data entry.
                t.int32_data.iter().map(|&v| v as u8).collect()
            };
            let held = n.decode(&packed, numel as usize).map_err(terr)?;
            (Storage::owned(held), Arc::from(self.path.as_path()))
        } else if external {
            self.external_storage(&t, nbytes).map_err(terr)?
        } else if let Some(raw) = &t.raw_data {
            if raw.len() as u64 != nbytes {
                return Err(terr(format!(
                    "raw_data holds {} bytes but {dtype} {shape:?} needs {nbytes} (file truncated or corrupt)",
                    raw.len()
                )));
            }
            (self.borrow_or_copy(raw), Arc::from(self.path.as_path()))
        } else {
            let data = typed_data(&t, dtype).map_err(terr)?;
            if data.len() as u64 != nbytes {
                return Err(terr(format!(
                    "holds {} bytes of typed data but {dtype} {shape:?} needs {nbytes}",
                    data.len()
                )));
            }
            (Storage::owned(data), Arc::from(self.path.as_path()))
        };
        Ok(TensorEntry {
            name,
            dtype,
            shape,
            storage,
            layout: Layout::Contiguous { offset: 0 },
            storage_key: None,
            file,
        })
    }

    /// A mapped storage when `raw` lies inside the model's map, else a copy.
    fn borrow_or_copy(&self, raw: &Bytes) -> Storage {
        if let Some(map) = &self.map {
            let base = map.as_ptr() as usize;
            let p = raw.as_ptr() as usize;
            if p >= base && p + raw.len() <= base + map.len() {
                return Storage::mapped(map.clone(), p - base..p - base + raw.len());
            }
        }
        Storage::owned(raw.to_vec())
    }

    fn external_storage(
        &mut self,
        t: &proto::TensorProto,
        nbytes: u64,
    ) -> std::result::Result<(Storage, Arc<Path>), String> {
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for kv in &t.external_data {
            let v = kv.value.clone().unwrap_or_default();
            match kv.key.as_deref() {
                Some("location") => location = Some(v),
                Some("offset") => {
                    offset = v
                        .parse()
                        .map_err(|_| format!("bad external offset `{v}`"))?
                }
                Some("length") => {
                    length = Some(
                        v.parse::<u64>()
                            .map_err(|_| format!("bad external length `{v}`"))?,
                    )
                }
                _ => {}
            }
        }
        let location = location.ok_or("external data without a location")?;
        if self.map.is_none() {
            return Err(format!("external data `{location}`: the model was not read from a file, so there is no folder to find it in"));
        }
        let rel = Path::new(&location);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!(
                "external data location `{location}` leaves the model's folder; ONNX locations are relative paths inside it"
            ));
        }
        if let Some(l) = length {
            if l != nbytes {
                return Err(format!(
                    "external length {l} but the shape needs {nbytes} bytes"
                ));
            }
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let file = dir.join(rel);
        // A symlink inside the folder must not lead out of it either.
        if let (Ok(real), Ok(root)) = (file.canonicalize(), dir.canonicalize()) {
            if !real.starts_with(&root) {
                return Err(format!("external data location `{location}` resolves to {}, outside the model's folder", real.display()));
            }
        }
        let map = match self.external.get(&file) {
            Some(m) => m.clone(),
            None => {
                let m = map_file(&file).map_err(|e| e.to_string())?;
                self.external.insert(file.clone(), m.clone());
                m
            }
        };
        let end = offset
            .checked_add(nbytes)
            .filter(|&e| e <= map.len() as u64)
            .ok_or_else(|| {
                format!(
                    "needs bytes {offset}..{} of {} but the file holds {} (truncated?)",
                    offset.saturating_add(nbytes),
                    file.display(),
                    map.len()
                )
            })?;
        Ok((
            Storage::mapped(map, offset as usize..end as usize),
            Arc::from(file.as_path()),
        ))
    }
}

/// Values stored in the typed repeated fields, as little-endian bytes of `dtype`.
fn typed_data(t: &proto::TensorProto, dtype: DType) -> std::result::Result<Vec<u8>, String> {
    let bytes = |it: &mut dyn Iterator<Item = Vec<u8>>| it.flatten().collect::<Vec<u8>>();
    Ok(match dtype {
        DType::F32 => bytes(&mut t.float_data.iter().map(|v| v.to_le_bytes().to_vec())),
        DType::F64 => bytes(&mut t.double_data.iter().map(|v| v.to_le_bytes().to_vec())),
        DType::I64 => bytes(&mut t.int64_data.iter().map(|v| v.to_le_bytes().to_vec())),
        DType::U32 | DType::U64 => {
            let w = if dtype == DType::U32 { 4 } else { 8 };
            bytes(&mut t.uint64_data.iter().map(|v| v.to_le_bytes()[..w].to_vec()))
        }
        DType::I32 => bytes(&mut t.int32_data.iter().map(|v| v.to_le_bytes().to_vec())),
        // Narrow types sit in int32_data, one value (or 16-bit pattern) per entry.
        DType::Bool | DType::U8 | DType::I8 | DType::F8E4M3 => {
            t.int32_data.iter().map(|&v| v as u8).collect()
        }
        DType::I16 | DType::U16 | DType::F16 | DType::BF16 => bytes(
            &mut t
                .int32_data
                .iter()
                .map(|&v| (v as u16).to_le_bytes().to_vec()),
        ),
        other => return Err(format!("typed data for {other} is not supported")),
    })
}

/// The narrow element type a value info declares, if any.
fn declared_narrow(v: &proto::ValueInfoProto) -> Option<Narrow> {
    use proto::type_proto::Value as T;
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(tt)) => tt.elem_type.and_then(Narrow::from_onnx),
        _ => None,
    }
}

fn value_info(v: &proto::ValueInfoProto) -> ValueInfo {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let name = v.name.clone().unwrap_or_default();
    let Some(T::TensorType(tt)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return ValueInfo::untyped(name);
    };
    ValueInfo {
        name,
        dtype: tt
            .elem_type
            .and_then(|c| dtype_from_onnx(c).or(Narrow::from_onnx(c).map(Narrow::held))),
        shape: tt.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(D::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                    Some(D::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                    _ => Dim::Unknown,
                })
                .collect()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, t: proto::TensorProto) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, t.encode_to_vec()).unwrap();
        p
    }

    /// ONNX test data: raw and typed values decode; a short buffer or a string tensor is an
    /// error naming the file, not a panic.
    #[test]
    fn read_tensor_takes_raw_and_typed_data_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let raw = write(
            dir.path(),
            "raw.pb",
            proto::TensorProto {
                dims: vec![2],
                data_type: Some(1),
                raw_data: Some(Bytes::from([1.5f32, -2.0].map(f32::to_le_bytes).concat())),
                ..Default::default()
            },
        );
        let t = read_tensor(&raw).unwrap();
        let t = crate::ir::entry_to_candle(&t, &candle_core::Device::Cpu).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), [1.5, -2.0]);

        // float16 values sit in int32_data as bit patterns.
        let typed = write(
            dir.path(),
            "typed.pb",
            proto::TensorProto {
                dims: vec![1, 2],
                data_type: Some(10),
                int32_data: vec![0x3C00, 0xC000],
                ..Default::default()
            },
        );
        let t = read_tensor(&typed).unwrap();
        let t = crate::ir::entry_to_candle(&t, &candle_core::Device::Cpu).unwrap();
        assert_eq!(
            t.to_dtype(candle_core::DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            [[1.0, -2.0]]
        );

        let short = write(
            dir.path(),
            "short.pb",
            proto::TensorProto {
                dims: vec![3],
                data_type: Some(1),
                raw_data: Some(Bytes::from_static(&[0; 8])),
                ..Default::default()
            },
        );
        let e = read_tensor(&short).unwrap_err().to_string();
        assert!(
            e.contains("short.pb") && e.contains("raw_data holds 8 bytes"),
            "{e}"
        );

        let string = write(
            dir.path(),
            "string.pb",
            proto::TensorProto {
                dims: vec![1],
                data_type: Some(8),
                string_data: vec![Bytes::from_static(b"a")],
                ..Default::default()
            },
        );
        let e = read_tensor(&string).unwrap_err().to_string();
        assert!(e.contains("STRING"), "{e}");

        std::fs::write(dir.path().join("junk.pb"), [0xff; 7]).unwrap();
        let e = read_tensor(&dir.path().join("junk.pb"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an ONNX TensorProto"), "{e}");
    }
}
