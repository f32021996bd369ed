//! Element types ferry can carry, plain and block-quantized (GGML), with their sizes and
//! their counterparts in candle.

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;

use crate::error::{Error, Result};

/// The element type of a stored tensor. Wider than candle's `DType`: PyTorch checkpoints hold
/// `int8`, `bool`, `uint16`..., and GGUF holds block-quantized types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum DType {
    Bool,
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F8E4M3,
    F16,
    BF16,
    F32,
    F64,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

/// Every dtype, in declaration order (useful for help texts and tests).
pub const ALL_DTYPES: [DType; 26] = [
    DType::Bool,
    DType::U8,
    DType::I8,
    DType::I16,
    DType::U16,
    DType::I32,
    DType::U32,
    DType::I64,
    DType::U64,
    DType::F8E4M3,
    DType::F16,
    DType::BF16,
    DType::F32,
    DType::F64,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q8_1,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::Q8K,
];

impl DType {
    /// Lower-case name, as used on the command line (`f32`, `q4_0`, `q6_k`).
    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            Bool => "bool",
            U8 => "u8",
            I8 => "i8",
            I16 => "i16",
            U16 => "u16",
            I32 => "i32",
            U32 => "u32",
            I64 => "i64",
            U64 => "u64",
            F8E4M3 => "f8e4m3",
            F16 => "f16",
            BF16 => "bf16",
            F32 => "f32",
            F64 => "f64",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q8_1 => "q8_1",
            Q2K => "q2_k",
            Q3K => "q3_k",
            Q4K => "q4_k",
            Q5K => "q5_k",
            Q6K => "q6_k",
            Q8K => "q8_k",
        }
    }

    /// Whether values are stored in blocks of several elements (GGML quantization).
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Whether this is a floating-point (non-quantized) type.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F8E4M3 | DType::F16 | DType::BF16 | DType::F32 | DType::F64
        )
    }

    /// Elements per block: 1 for plain types, 32 or 256 for quantized ones.
    pub fn block_elems(self) -> usize {
        use DType::*;
        match self {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 => 32,
            Q2K | Q3K | Q4K | Q5K | Q6K | Q8K => 256,
            _ => 1,
        }
    }

    /// Bytes per block (per element for plain types).
    pub fn block_bytes(self) -> usize {
        use DType::*;
        match self {
            Bool | U8 | I8 | F8E4M3 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 => 8,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2K => 84,
            Q3K => 110,
            Q4K => 144,
            Q5K => 176,
            Q6K => 210,
            Q8K => 292,
        }
    }

    /// Bytes needed to store `numel` elements, or an error when `numel` does not fill whole
    /// blocks or the size overflows. Never allocates.
    pub fn storage_bytes(self, numel: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        if !numel.is_multiple_of(be) {
            return None;
        }
        (numel / be).checked_mul(self.block_bytes() as u64)
    }

    /// The candle dtype holding the same values, where candle has one.
    pub fn to_candle(self) -> Option<candle_core::DType> {
        use candle_core::DType as C;
        Some(match self {
            DType::U8 => C::U8,
            DType::I16 => C::I16,
            DType::I32 => C::I32,
            DType::U32 => C::U32,
            DType::I64 => C::I64,
            DType::F8E4M3 => C::F8E4M3,
            DType::F16 => C::F16,
            DType::BF16 => C::BF16,
            DType::F32 => C::F32,
            DType::F64 => C::F64,
            _ => return None,
        })
    }

    /// The ferry dtype for a candle dtype.
    pub fn from_candle(d: candle_core::DType) -> Result<Self> {
        use candle_core::DType as C;
        Ok(match d {
            C::U8 => DType::U8,
            C::I16 => DType::I16,
            C::I32 => DType::I32,
            C::U32 => DType::U32,
            C::I64 => DType::I64,
            C::F8E4M3 => DType::F8E4M3,
            C::F16 => DType::F16,
            C::BF16 => DType::BF16,
            C::F32 => DType::F32,
            C::F64 => DType::F64,
            other => {
                return Err(Error::Invalid(format!(
                    "candle dtype {other:?} has no ferry counterpart"
                )))
            }
        })
    }

    /// The GGML tensor type, where GGUF can store this dtype.
    pub fn to_ggml(self) -> Option<GgmlDType> {
        use DType::*;
        Some(match self {
            F32 => GgmlDType::F32,
            F16 => GgmlDType::F16,
            BF16 => GgmlDType::BF16,
            Q4_0 => GgmlDType::Q4_0,
            Q4_1 => GgmlDType::Q4_1,
            Q5_0 => GgmlDType::Q5_0,
            Q5_1 => GgmlDType::Q5_1,
            Q8_0 => GgmlDType::Q8_0,
            Q8_1 => GgmlDType::Q8_1,
            Q2K => GgmlDType::Q2K,
            Q3K => GgmlDType::Q3K,
            Q4K => GgmlDType::Q4K,
            Q5K => GgmlDType::Q5K,
            Q6K => GgmlDType::Q6K,
            Q8K => GgmlDType::Q8K,
            _ => return None,
        })
    }

    /// The GGUF type id (`ggml_type` in ggml.h) used on disk, including the integer and f64
    /// types that candle's `GgmlDType` lacks.
    pub fn gguf_type_id(self) -> Option<u32> {
        use DType::*;
        Some(match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
            _ => return None,
        })
    }

    /// The dtype for a GGUF type id, or `None` for types ferry does not know (the IQ family...).
    pub fn from_gguf_type_id(id: u32) -> Option<Self> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.gguf_type_id() == Some(id))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match norm.as_str() {
            "float32" | "float" => "f32",
            "float16" | "half" => "f16",
            "bfloat16" => "bf16",
            "float64" | "double" => "f64",
            "q2k" => "q2_k",
            "q3k" => "q3_k",
            "q4k" => "q4_k",
            "q5k" => "q5_k",
            "q6k" => "q6_k",
            "q8k" => "q8_k",
            other => other,
        };
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.name() == alias)
            .ok_or_else(|| {
                let names: Vec<_> = ALL_DTYPES.iter().map(|d| d.name()).collect();
                Error::Invalid(format!(
                    "unknown dtype `{s}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("q9_0".parse::<DType>().is_err());
    }

    #[test]
    fn gguf_ids_round_trip_and_sizes_match_candle() {
        for d in ALL_DTYPES {
            if let Some(id) = d.gguf_type_id() {
                assert_eq!(DType::from_gguf_type_id(id), Some(d));
            }
            if let Some(g) = d.to_ggml() {
                assert_eq!(g.block_size(), d.block_elems(), "{d}");
                assert_eq!(g.type_size(), d.block_bytes(), "{d}");
            }
        }
    }

    #[test]
    fn storage_bytes_checks_blocks_and_overflow() {
        assert_eq!(DType::Q8_0.storage_bytes(64), Some(68));
        assert_eq!(DType::Q8_0.storage_bytes(33), None);
        assert_eq!(DType::F64.storage_bytes(u64::MAX), None);
    }
}
