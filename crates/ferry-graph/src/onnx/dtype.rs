//! ONNX `TensorProto.DataType` codes and ferry-io dtypes.

use ferry_io::DType;

/// The ferry dtype of an ONNX element type code, `None` for types ferry cannot hold
/// (strings, complex) and for those it holds wider ([`crate::ir::Narrow`]).
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::BF16,
        17 => DType::F8E4M3,
        _ => return None,
    })
}

/// The ONNX element type code of a ferry dtype, `None` for block-quantized types.
pub fn dtype_to_onnx(d: DType) -> Option<i32> {
    Some(match d {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::U16 => 4,
        DType::I16 => 5,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
        DType::F16 => 10,
        DType::F64 => 11,
        DType::U32 => 12,
        DType::U64 => 13,
        DType::BF16 => 16,
        DType::F8E4M3 => 17,
        _ => return None,
    })
}

/// The name of an ONNX element type code that ferry cannot hold, for error messages.
pub fn onnx_type_name(code: i32) -> &'static str {
    match code {
        0 => "UNDEFINED",
        8 => "STRING",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        _ => "an unknown type",
    }
}
