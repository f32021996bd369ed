//! Element types: torch's storage classes and dtype names, and ferry's dtypes.

use crate::dtype::DType;
use crate::formats::pickle::Global;

/// What a storage type (or dtype object) in a pickle says about element types.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum StorageKind {
    /// A typed storage (or a dtype object) ferry can represent.
    Typed(DType),
    /// `torch.storage.UntypedStorage`: bytes; the dtype comes from `_rebuild_tensor_v3`.
    Untyped,
    /// A type ferry cannot represent (complex, quantized...): its torch name.
    Unsupported(String),
}

/// The ferry dtype of a legacy storage class name (`FloatStorage`).
pub(super) fn storage_class_dtype(name: &str) -> Option<DType> {
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
pub(super) fn torch_dtype(name: &str) -> Option<DType> {
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
pub(super) fn storage_elem_size(kind: &StorageKind, g: &Global) -> Option<u64> {
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
pub(super) fn storage_kind(g: &Global) -> StorageKind {
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
pub(super) fn storage_class_name(d: DType) -> Option<&'static str> {
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
pub(super) fn torch_dtype_name(d: DType) -> Option<&'static str> {
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
