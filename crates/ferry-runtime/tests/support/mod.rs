//! Helpers shared by the runtime's integration tests against transformers (`encoders.rs`,
//! `encoder_gguf.rs`, `decoders.rs`): the fixtures' reference batches, errors over real
//! tokens, ferry's conversions to and from GGUF, and gguf-py's view of a GGUF.
//!
//! Each test binary includes this module and uses only part of it, hence the
//! `#[allow(dead_code)]` on the items some binaries leave unused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType as CDType, Device, Tensor};
use ferry_io::convert::{self, ConvertOptions, Plan, TargetFormat};
use ferry_io::{Checkpoint, DType};
use ferry_runtime::{Kernels, Model};
use serde_json::Value;

/// The fixture folder `dir`'s `reference.npz` (made by `scripts/make_tiny_*.py`): the batch
/// (`input_ids`, `attention_mask`) and what transformers computed from it.
pub fn reference(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_npz(dir.join("reference.npz"))
        .unwrap()
        .into_iter()
        .collect()
}

/// The JSON file at `path` (a `config.json`).
#[allow(dead_code)] // each test binary includes this module; not every one reads JSON
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `path` (a folder or a model file) loaded on the CPU with f32 kernels.
#[allow(dead_code)] // each test binary includes this module; not every one loads this way
pub fn load(path: &Path) -> Model {
    Model::load(path, &Device::Cpu, Kernels::F32).unwrap()
}

/// The reference batch's `input_ids` and `attention_mask`, as u32.
#[allow(dead_code)] // each test binary includes this module; not every one skips the check
pub fn inputs(r: &HashMap<String, Tensor>) -> (Tensor, Tensor) {
    (
        r["input_ids"].to_dtype(CDType::U32).unwrap(),
        r["attention_mask"].to_dtype(CDType::U32).unwrap(),
    )
}

/// [`inputs`], checked to be a right-padded batch: the first row all real tokens, the second
/// starting with a real token and ending in padding.
#[allow(dead_code)] // each test binary includes this module; not every one checks the padding
pub fn right_padded_inputs(r: &HashMap<String, Tensor>) -> (Tensor, Tensor) {
    let (ids, mask) = inputs(r);
    let m = mask.to_vec2::<u32>().unwrap();
    assert!(
        m[0].iter().all(|&x| x == 1) && m[1][0] == 1 && m[1].contains(&0),
        "the batch is right-padded"
    );
    (ids, mask)
}

/// The largest |a - b| over real tokens (`mask` 1), and the largest |b| there; padded
/// positions are not compared.
fn max_err_and_scale(a: &Tensor, b: &Tensor, mask: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (a.to_vec3::<f32>().unwrap(), b.to_vec3::<f32>().unwrap());
    let mask = mask.to_vec2::<u32>().unwrap();
    let (mut worst, mut scale) = (0f32, 0f32);
    for (r, row) in mask.iter().enumerate() {
        for (j, _) in row.iter().enumerate().filter(|(_, &m)| m == 1) {
            for (x, y) in a[r][j].iter().zip(&b[r][j]) {
                worst = worst.max((x - y).abs());
                scale = scale.max(y.abs());
            }
        }
    }
    (worst, scale)
}

/// The largest |a - b| over real tokens (`mask` 1); padded positions are not compared.
pub fn max_err(a: &Tensor, b: &Tensor, mask: &Tensor) -> f32 {
    max_err_and_scale(a, b, mask).0
}

/// The error of `a` against the reference `b` over real tokens, relative to `b`'s largest
/// magnitude there (absolute when that is under 1).
#[allow(dead_code)] // each test binary includes this module; not every one compares logits
pub fn rel_err(a: &Tensor, b: &Tensor, mask: &Tensor) -> f32 {
    let (e, scale) = max_err_and_scale(a, b, mask);
    e / scale.max(1.0)
}

/// Runs `model` on the right-padded batch and on the batch's second row alone (its real
/// tokens, no mask). Returns the row alone (`[1, n, ..]`), the batch's output, and the largest
/// difference between the two at the row's real tokens: what the padding moved them by.
#[allow(dead_code)] // each test binary includes this module; not every one runs a row alone
pub fn second_row_alone(model: &Model, ids: &Tensor, mask: &Tensor) -> (Tensor, Tensor, f32) {
    let n = mask.get(1).unwrap().to_vec1::<u32>().unwrap();
    let n = n.iter().filter(|&&m| m == 1).count();
    let alone = ids.get(1).unwrap().narrow(0, 0, n).unwrap();
    let alone = model
        .forward(&alone.unsqueeze(0).unwrap(), None, false)
        .unwrap()
        .values;
    let batch = model.forward(ids, Some(mask), false).unwrap().values;
    let padded = batch.get(1).unwrap().narrow(0, 0, n).unwrap();
    let e = max_err(&alone, &padded.unsqueeze(0).unwrap(), &all_real(n));
    (alone, batch, e)
}

/// The mask of one row of `n` real tokens (`[1, n]`, all 1).
#[allow(dead_code)] // each test binary includes this module; not every one builds a mask
pub fn all_real(n: usize) -> Tensor {
    Tensor::ones((1, n), CDType::U32, &Device::Cpu).unwrap()
}

/// Writes the tensors of `src/model.safetensors` to `out/model.safetensors`, each renamed by
/// `rename` (left out where it returns `None`).
#[allow(dead_code)] // each test binary includes this module; not every one copies a fixture
pub fn copy_tensors(src: &Path, out: &Path, rename: impl Fn(&str) -> Option<String>) {
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .filter_map(|(k, v)| Some((rename(&k)?, v)))
            .collect();
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).unwrap();
}

/// Writes `src` (a model folder or a GGUF) as `target` into `out` the way `ferry migrate`
/// does: names and layouts of the other side, the metadata derived from the folder, and the
/// `config.json` a GGUF read back needs; `quant` quantizes the weights. Returns the model file.
#[allow(dead_code)] // each test binary includes this module; not every one converts
pub fn write(src: &Path, out: &Path, target: TargetFormat, quant: Option<DType>) -> PathBuf {
    let ck = Checkpoint::open(src).unwrap();
    let (ck, layout) = convert::prepare(ck, target, false).unwrap();
    let opts = ConvertOptions {
        quant,
        ..ConvertOptions::default()
    };
    let mut plan = Plan::new(&ck, target, &opts).unwrap();
    plan.layout = layout;
    let meta = convert::output_metadata(&ck, &plan).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let path = out.join(format!("model.{}", target.extension()));
    convert::write(&plan, &ck, &path, &meta, None, &mut |_, _| {}).unwrap();
    convert::write_hf_config(&ck, &plan, out).unwrap();
    path
}

/// The folder `src` written as a GGUF into `out` ([`write`]); returns the GGUF.
#[allow(dead_code)] // each test binary includes this module; not every one converts
pub fn gguf_of(src: &Path, out: &Path, quant: Option<DType>) -> PathBuf {
    write(src, out, TargetFormat::Gguf, quant)
}

/// The folder `src` written as an f32 GGUF into `tmp/gguf`, and that GGUF written back to a
/// Hugging Face folder `tmp/back`; returns the folder read back.
#[allow(dead_code)] // each test binary includes this module; not every one converts
pub fn gguf_read_back(src: &Path, tmp: &Path) -> PathBuf {
    let gguf = gguf_of(src, &tmp.join("gguf"), None);
    let back = tmp.join("back");
    write(&gguf, &back, TargetFormat::Safetensors, None);
    back
}

/// Runs `py -c script args...` and parses the last line it prints as JSON.
#[allow(dead_code)] // each test binary includes this module; not every one runs Python
pub fn python_json(py: &Path, script: &str, args: &[&Path]) -> Value {
    let out = ferry_testkit::run_python(py, script, args);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// The start of [`gguf_py_report`]'s script: the folder and the GGUF from the command line,
/// the folder's `config.json` and its `model_type`.
const GGUF_PY_START: &str = r#"
import sys, json
import numpy as np
import gguf
from gguf import GGUFReader
from safetensors.numpy import load_file

folder, path = sys.argv[1], sys.argv[2]
cfg = json.load(open(folder + "/config.json"))
mt = cfg["model_type"]
"#;

/// The end of [`gguf_py_report`]'s script: what gguf-py's `GGUFReader` reads from the GGUF
/// against `expected`, printed as JSON.
const GGUF_PY_REPORT: &str = r#"
r = GGUFReader(path)
errors = {}
types = {}
for t in r.tensors:
    want = expected.get(t.name)
    if want is None:
        continue
    if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        got = np.asarray(t.data, dtype=np.float32)
    else:
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        # What gguf-py's own quantization of the expected values gives.
        want = gguf.quants.dequantize(gguf.quants.quantize(want, t.tensor_type), t.tensor_type)
    got = got.reshape(want.shape)
    errors[t.name] = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    types[t.name] = t.tensor_type.name
meta = {}
for f in r.fields.values():
    if f.name.startswith("GGUF.") or f.name in ("tokenizer.ggml.tokens",):
        continue
    meta[f.name] = f.contents()
print(json.dumps({
    "arch": gguf.MODEL_ARCH_NAMES[arch],
    "expected": sorted(expected), "got": sorted(t.name for t in r.tensors),
    "errors": errors, "types": types, "meta": meta,
    "arch_tensors": sorted(gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]),
}))
"#;

/// What gguf-py makes of the GGUF `gguf`, written from the folder `folder`. `expected` is
/// Python that, given `folder`, `cfg` (its `config.json`), `mt` (its `model_type`) and gguf-py
/// as `gguf`, sets `arch` (the `gguf.MODEL_ARCH`) and `expected` (each tensor's llama.cpp name
/// and the values llama.cpp's converter writes). Returns, as JSON: `arch` (its name), `expected`
/// and `got` (the GGUF's tensor names), `errors` (each tensor's largest difference from the
/// expected values, against gguf-py's own rounding of them where quantized), `types` (each
/// tensor's type), `meta` (the metadata but the token list) and `arch_tensors` (gguf-py's
/// tensor names for `arch`).
#[allow(dead_code)] // each test binary includes this module; not every one runs gguf-py
pub fn gguf_py_report(py: &Path, expected: &str, folder: &Path, gguf: &Path) -> Value {
    let script = format!("{GGUF_PY_START}{expected}{GGUF_PY_REPORT}");
    python_json(py, &script, &[folder, gguf])
}

/// Checks a gguf-py report on `name`'s GGUF (`got`: the tensor names in the GGUF, `expected`:
/// the names llama.cpp's converter gives the folder's tensors, `arch_tensors`: gguf-py's
/// tensor names for the architecture, `blk.{bid}.` for a block's): the GGUF has exactly
/// llama.cpp's names, and every one is a tensor of the architecture `arch`.
#[allow(dead_code)] // each test binary includes this module; not every one reads GGUF names
pub fn assert_llama_cpp_names(v: &Value, name: &str, arch: &str) {
    assert_eq!(v["got"], v["expected"], "{name}: tensor names");
    let stems: Vec<&str> = v["arch_tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for t in v["got"].as_array().unwrap() {
        let t = t.as_str().unwrap();
        let stem = t.trim_end_matches(".weight").trim_end_matches(".bias");
        let generic = stem
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .map_or(stem.to_string(), |(_, s)| format!("blk.{{bid}}.{s}"));
        assert!(
            stems.contains(&generic.as_str()),
            "{name}: {t} is not a {arch} tensor"
        );
    }
}

/// Checks a gguf-py report's `errors` (each tensor's largest difference from the expected
/// values): one for every expected tensor, each 0. Returns how many tensors there are.
#[allow(dead_code)] // each test binary includes this module; not every one reads GGUF values
pub fn assert_read_back_exactly(v: &Value, name: &str) -> usize {
    let errors = v["errors"].as_object().unwrap();
    assert_eq!(errors.len(), v["expected"].as_array().unwrap().len());
    for (t, e) in errors {
        assert_eq!(e.as_f64(), Some(0.0), "{name}: {t} read back off by {e}");
    }
    errors.len()
}
