//! Graph inputs and outputs as files: `.npy` / `.npz` in, `.npz` out (NumPy's formats, read
//! and written by ferry-io).

use std::path::Path;

use candle_core::{Device, Tensor};
use ferry_io::{Checkpoint, OutTensor};
use indexmap::IndexMap;

use crate::error::{Error, Result};
use crate::ir::entry_from_candle;

/// Every array of an `.npz` (by member name) or the one array of an `.npy` (named after the
/// file stem), on `device`.
pub fn read_arrays(path: &Path, device: &Device) -> Result<IndexMap<String, Tensor>> {
    let ck = Checkpoint::open(path)?;
    if !matches!(ck.format, ferry_io::Format::Npy | ferry_io::Format::Npz) {
        return Err(Error::file(
            path,
            format!("expected a .npy or .npz file, found {}", ck.format.name()),
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
