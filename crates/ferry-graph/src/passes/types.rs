//! Element types of values as ONNX sees them. The executor holds `bool` as `u8`; a folded
//! constant must be written back with its ONNX type, so folding asks here.

use std::collections::HashMap;

use ferry_io::DType;

use crate::exec::elem_types;
use crate::ir::{Graph, Narrow};

/// ONNX element types of every value whose type follows from the graph, as ferry dtypes (a
/// narrow type as the dtype that holds it).
pub(crate) fn infer(g: &Graph) -> HashMap<String, DType> {
    elem_types(g)
        .into_iter()
        .filter_map(|(name, code)| {
            let d =
                crate::onnx::dtype_from_onnx(code).or(Narrow::from_onnx(code).map(Narrow::held));
            d.map(|d| (name, d))
        })
        .collect()
}
