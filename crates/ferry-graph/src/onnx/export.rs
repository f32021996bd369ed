//! [`OnnxModel`] -> `.onnx`. Initializers go inline, or into one external-data file beside the
//! model when they would pass protobuf's 2 GiB limit (or when asked). Both files are written
//! atomically: an interrupted run leaves no half-written model.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use ferry_io::TensorEntry;
use prost::Message;

use super::dtype::dtype_to_onnx;
use super::proto;
use crate::error::{Error, Result};
use crate::ir::{Attr, Dim, Graph, Narrow, Node, OnnxModel, ValueInfo};

/// Where initializer bytes go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExternalData {
    /// Inline, unless the initializers total more than [`INLINE_LIMIT`].
    #[default]
    Auto,
    /// Always in `<model file>.data`.
    Always,
    /// Always inline (an error past the limit).
    Never,
}

/// Initializer bytes above which [`ExternalData::Auto`] moves them out of the protobuf
/// (whose messages cannot exceed 2 GiB; 64 MiB are left for the graph and attributes).
pub const INLINE_LIMIT: u64 = (1 << 31) - (64 << 20);
/// Tensors smaller than this stay inline even in external mode (as onnx's own saver does).
const EXTERNAL_MIN_BYTES: u64 = 1024;
/// Alignment of tensors in the external-data file (lets readers map them).
const EXTERNAL_ALIGN: u64 = 4096;

/// Options of [`write_model`].
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Where initializer bytes go.
    pub external_data: ExternalData,
}

/// Writes `model` to `path` (and `path.data` when weights go external). Returns the
/// external-data file's path when one was written.
pub fn write_model(
    model: &OnnxModel,
    path: &Path,
    opts: &ExportOptions,
) -> Result<Option<std::path::PathBuf>> {
    model
        .graph
        .validate()
        .map_err(|e| Error::malformed(path, e.to_string()))?;
    let total: u64 = model
        .graph
        .initializers
        .values()
        .map(TensorEntry::nbytes)
        .sum();
    let external = match opts.external_data {
        ExternalData::Always => true,
        ExternalData::Never if total >= INLINE_LIMIT => {
            return Err(Error::malformed(
                path,
                format!("{total} bytes of weights cannot be stored inline (protobuf's limit is 2 GiB); use external data"),
            ))
        }
        ExternalData::Never => false,
        ExternalData::Auto => total >= INLINE_LIMIT,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::malformed(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let data_name = format!("{file_name}.data");
    let data_path = path.with_file_name(&data_name);

    let mut initializers = Vec::with_capacity(model.graph.initializers.len());
    let mut external_list: Vec<&TensorEntry> = Vec::new();
    let mut offset = 0u64;
    for e in model.graph.initializers.values() {
        if let Some(&n) = model.graph.narrow.get(&e.name) {
            initializers.push(narrow_tensor_proto(e, n, path)?);
        } else if external && e.nbytes() >= EXTERNAL_MIN_BYTES {
            offset = offset.div_ceil(EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
            let mut t = tensor_header(e, path)?;
            t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
            t.external_data = vec![
                kv("location", &data_name),
                kv("offset", &offset.to_string()),
                kv("length", &e.nbytes().to_string()),
            ];
            offset += e.nbytes();
            initializers.push(t);
            external_list.push(e);
        } else {
            initializers.push(tensor_proto(e, path)?);
        }
    }
    if external {
        ferry_io::atomic::write_atomic(&data_path, |w| {
            let mut at = 0u64;
            for e in &external_list {
                let start = at.div_ceil(EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
                w.write_all(&vec![0u8; (start - at) as usize])
                    .map_err(|err| ferry_io::Error::io(&data_path, err))?;
                let bytes = e.data()?;
                w.write_all(&bytes)
                    .map_err(|err| ferry_io::Error::io(&data_path, err))?;
                at = start + bytes.len() as u64;
            }
            Ok(())
        })?;
    }
    let proto = model_proto(model, initializers, path)?;
    let encoded = proto.encode_to_vec();
    ferry_io::atomic::write_atomic(path, |w| {
        w.write_all(&encoded)
            .map_err(|e| ferry_io::Error::io(path, e))
    })?;
    Ok(external.then_some(data_path))
}

fn kv(k: &str, v: &str) -> proto::StringStringEntryProto {
    proto::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

fn tensor_header(e: &TensorEntry, path: &Path) -> Result<proto::TensorProto> {
    let code = dtype_to_onnx(e.dtype).ok_or_else(|| {
        Error::Io(ferry_io::Error::tensor(
            path,
            &e.name,
            format!("{} has no ONNX element type; dequantize it first", e.dtype),
        ))
    })?;
    Ok(proto::TensorProto {
        name: Some(e.name.clone()),
        data_type: Some(code),
        dims: e.shape.iter().map(|&d| d as i64).collect(),
        ..Default::default()
    })
}

fn tensor_proto(e: &TensorEntry, path: &Path) -> Result<proto::TensorProto> {
    let mut t = tensor_header(e, path)?;
    t.raw_data = Some(Bytes::from(e.data()?.into_owned()));
    Ok(t)
}

/// An initializer of a narrow type, packed back into the file's bytes (always inline: such
/// tensors are small, and their bytes differ from what ferry holds).
fn narrow_tensor_proto(e: &TensorEntry, n: Narrow, path: &Path) -> Result<proto::TensorProto> {
    let terr = |msg: String| Error::Io(ferry_io::Error::tensor(path, &e.name, msg));
    if e.dtype != n.held() {
        return Err(terr(format!(
            "declared {} but holds {} (a pass changed it?)",
            n.name(),
            e.dtype
        )));
    }
    let packed = n.encode(&e.data()?).map_err(terr)?;
    Ok(proto::TensorProto {
        name: Some(e.name.clone()),
        data_type: Some(n.onnx()),
        dims: e.shape.iter().map(|&d| d as i64).collect(),
        raw_data: Some(Bytes::from(packed)),
        ..Default::default()
    })
}

fn model_proto(
    model: &OnnxModel,
    initializer: Vec<proto::TensorProto>,
    path: &Path,
) -> Result<proto::ModelProto> {
    let g = &model.graph;
    let mut opsets = model.opsets.clone();
    for n in g.all_nodes() {
        if !n.domain.is_empty() && !opsets.contains_key(&n.domain) {
            opsets.insert(n.domain.clone(), 1);
        }
    }
    let functions = super::functions::for_model(model, &opsets);
    Ok(proto::ModelProto {
        // IR 8 introduced model-local functions; keep newer versions as read.
        ir_version: Some(model.ir_version.max(8)),
        opset_import: opsets
            .iter()
            .map(|(d, v)| proto::OperatorSetIdProto {
                domain: Some(d.clone()),
                version: Some(*v),
            })
            .collect(),
        producer_name: Some("ferry".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph_proto(g, "main", initializer, path)?),
        metadata_props: model.metadata.iter().map(|(k, v)| kv(k, v)).collect(),
        functions,
        ..Default::default()
    })
}

/// A graph with the given initializer protos (the main graph's may point into the
/// external-data file); its nodes' subgraphs are written with theirs inline. `default_name`
/// names a graph without a name.
fn graph_proto(
    g: &Graph,
    default_name: &str,
    initializer: Vec<proto::TensorProto>,
    path: &Path,
) -> Result<proto::GraphProto> {
    let node = g
        .nodes
        .iter()
        .map(|n| node_proto(n, path))
        .collect::<Result<Vec<_>>>()?;
    Ok(proto::GraphProto {
        name: Some(if g.name.is_empty() {
            default_name.into()
        } else {
            g.name.clone()
        }),
        node,
        initializer,
        input: g.inputs.iter().map(|v| value_info_proto(v, g)).collect(),
        output: g.outputs.iter().map(|v| value_info_proto(v, g)).collect(),
        // Only values that still exist (passes remove some).
        value_info: g
            .value_info
            .values()
            .filter(|v| g.nodes.iter().any(|n| n.outputs.contains(&v.name)))
            .map(|v| value_info_proto(v, g))
            .collect(),
        ..Default::default()
    })
}

pub(super) fn node_proto(n: &Node, path: &Path) -> Result<proto::NodeProto> {
    let attribute = n
        .attrs
        .iter()
        .map(|(k, v)| attr_proto(k, v, path))
        .collect::<Result<Vec<_>>>()?;
    Ok(proto::NodeProto {
        name: Some(n.name.clone()),
        op_type: Some(n.op_type.clone()),
        domain: Some(n.domain.clone()),
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        attribute,
        ..Default::default()
    })
}

pub(super) fn attr_proto(name: &str, v: &Attr, path: &Path) -> Result<proto::AttributeProto> {
    use proto::attribute_proto::AttributeType as T;
    let mut a = proto::AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    let ty = match v {
        Attr::Float(f) => {
            a.f = Some(*f);
            T::Float
        }
        Attr::Int(i) => {
            a.i = Some(*i);
            T::Int
        }
        Attr::String(s) => {
            a.s = Some(Bytes::from(s.clone().into_bytes()));
            T::String
        }
        Attr::Tensor(t) => {
            a.t = Some(tensor_proto(t, path)?);
            T::Tensor
        }
        Attr::Floats(f) => {
            a.floats = f.clone();
            T::Floats
        }
        Attr::Ints(i) => {
            a.ints = i.clone();
            T::Ints
        }
        Attr::Strings(s) => {
            a.strings = s
                .iter()
                .map(|s| Bytes::from(s.clone().into_bytes()))
                .collect();
            T::Strings
        }
        Attr::Graph(g) => {
            let inits = g
                .initializers
                .values()
                .map(|e| match g.narrow.get(&e.name) {
                    Some(&n) => narrow_tensor_proto(e, n, path),
                    None => tensor_proto(e, path),
                })
                .collect::<Result<Vec<_>>>()?;
            a.g = Some(graph_proto(g, name, inits, path)?);
            T::Graph
        }
    };
    a.r#type = Some(ty as i32);
    Ok(a)
}

/// `v` as a `ValueInfoProto`, with the element type `g` declares for it where ferry holds it
/// wider.
fn value_info_proto(v: &ValueInfo, g: &Graph) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{dimension::Value as D, Dimension};
    use proto::type_proto::{Tensor, Value as T};
    let shape = v.shape.as_ref().map(|s| proto::TensorShapeProto {
        dim: s
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::Fixed(n) => Some(D::DimValue(*n as i64)),
                    Dim::Symbolic(p) => Some(D::DimParam(p.clone())),
                    Dim::Unknown => None,
                },
                denotation: None,
            })
            .collect(),
    });
    proto::ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: g
            .narrow
            .get(&v.name)
            .map(|n| n.onnx())
            .or_else(|| v.dtype.and_then(dtype_to_onnx))
            .map(|code| proto::TypeProto {
                value: Some(T::TensorType(Tensor {
                    elem_type: Some(code),
                    shape,
                })),
                denotation: None,
            }),
        ..Default::default()
    }
}
