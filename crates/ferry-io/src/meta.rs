//! Non-tensor values carried with a checkpoint: GGUF key/values, safetensors `__metadata__`,
//! step counters and hyper-parameters found in a PyTorch pickle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A typed metadata value. The variants mirror GGUF's value types (the richest of the formats)
/// so that a GGUF -> GGUF conversion keeps every type; other formats use the subset they need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(missing_docs)]
pub enum MetaValue {
    Null,
    Bool(bool),
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    String(String),
    Array(Vec<MetaValue>),
}

/// Ordered metadata of a checkpoint.
pub type Metadata = BTreeMap<String, MetaValue>;

impl MetaValue {
    /// The value as JSON (for reports and `--json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A short human-readable rendering; long arrays are summarised.
    pub fn display_short(&self) -> String {
        match self {
            MetaValue::String(s) if s.chars().count() > 80 => {
                let head: String = s.chars().take(77).collect();
                format!("{head:?}... ({} chars)", s.chars().count())
            }
            MetaValue::String(s) => format!("{s:?}"),
            MetaValue::Array(items) if items.len() > 8 => {
                let head: Vec<String> = items.iter().take(4).map(|v| v.display_short()).collect();
                format!("[{}, ...] ({} items)", head.join(", "), items.len())
            }
            MetaValue::Array(items) => {
                let all: Vec<String> = items.iter().map(|v| v.display_short()).collect();
                format!("[{}]", all.join(", "))
            }
            other => other.to_json().to_string(),
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Converts JSON into a metadata value (integers become `I64`/`U64`, numbers `F64`,
    /// objects their JSON text).
    pub fn from_json(v: &serde_json::Value) -> MetaValue {
        match v {
            serde_json::Value::Null => MetaValue::Null,
            serde_json::Value::Bool(b) => MetaValue::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    MetaValue::I64(i)
                } else if let Some(u) = n.as_u64() {
                    MetaValue::U64(u)
                } else {
                    MetaValue::F64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => MetaValue::String(s.clone()),
            serde_json::Value::Array(a) => {
                MetaValue::Array(a.iter().map(MetaValue::from_json).collect())
            }
            serde_json::Value::Object(_) => MetaValue::String(v.to_string()),
        }
    }
}
