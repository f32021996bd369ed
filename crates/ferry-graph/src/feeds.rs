//! Graph inputs and outputs as files: `.npy` / `.npz` (NumPy's formats, read and written by
//! ferry-io) or serialized ONNX `TensorProto`s (`.pb`, as ONNX's own test data stores them:
//! the way to feed bf16 and the other types NumPy files cannot hold) in, `.npz` out.

use std::path::Path;

use candle_core::{Device, Tensor};
use ferry_io::{Checkpoint, OutTensor};
use indexmap::IndexMap;

use crate::error::{Error, Result};
use crate::ir::entry_from_candle;

/// Every array of an `.npz` (by member name), the one array of an `.npy` (named after the
/// file stem), or the one tensor of a `.pb` `TensorProto` (named by its `name`, else the file
/// stem), on `device`.
pub fn read_arrays(path: &Path, device: &Device) -> Result<IndexMap<String, Tensor>> {
    if path.extension().is_some_and(|e| e == "pb") {
        let e = crate::onnx::read_tensor(path)?;
        let name = if e.name.is_empty() {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            e.name.clone()
        };
        return Ok([(name, e.to_candle(device)?)].into_iter().collect());
    }
    let ck = Checkpoint::open(path)?;
    if !matches!(ck.format, ferry_io::Format::Npy | ferry_io::Format::Npz) {
        return Err(Error::malformed(
            path,
            format!(
                "expected a .npy, .npz or .pb (ONNX TensorProto) file, found {}",
                ck.format.name()
            ),
        ));
    }
    ck.tensors
        .iter()
        .map(|e| Ok((e.name.clone(), e.to_candle(device)?)))
        .collect()
}

/// Writes `arrays` as an uncompressed `.npz` (atomically).
pub fn write_npz(path: &Path, arrays: &IndexMap<String, Tensor>) -> Result<()> {
    let entries = arrays
        .iter()
        .map(|(k, t)| entry_from_candle(k, t))
        .collect::<Result<Vec<_>>>()?;
    let out: Vec<OutTensor> = entries.iter().map(OutTensor::from_entry).collect();
    ferry_io::formats::numpy::write_npz(path, &out, &Default::default(), &mut |_, _| {})?;
    Ok(())
}
