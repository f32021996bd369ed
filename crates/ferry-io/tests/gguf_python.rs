//! Cross-checks with llama.cpp's own Python package (`gguf`): files written by ferry are read
//! by gguf-py's `GGUFReader`, files written by gguf-py's `GGUFWriter` are read by ferry,
//! ferry's quantization is compared byte for byte with `gguf.quants.quantize` (the types gguf-py
//! quantizes), and ferry's k-quant blocks are dequantized by gguf-py (which only dequantizes
//! them) to the very values ferry reads back.
//!
//! Needs a Python with `gguf` and `numpy` (found by `ferry_testkit::python_with`): without one,
//! each test prints `skipped` and passes, unless `FERRY_REQUIRE_PYTHON=1` (CI), where it fails.

use std::borrow::Cow;
use std::path::Path;

use ferry_io::formats::gguf;
use ferry_io::{quant, DType, MetaValue, Metadata, OutTensor};
use serde_json::Value;

/// Runs `script` with `args`; returns its stdout parsed as JSON.
fn run_py(py: &Path, script: &str, args: &[&Path]) -> Value {
    serde_json::from_str(&ferry_testkit::run_python(py, script, args)).unwrap()
}

/// Deterministic values, the same formula as `PY_DATA` below.
fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i * 7919 + seed * 104729) % 1000) as f32 / 250.0 - 2.0) * (1.0 + (i % 3) as f32)
        })
        .collect()
}

const PY_DATA: &str = r#"
import numpy as np
def data(n, seed):
    i = np.arange(n, dtype=np.int64)
    return ((((i * 7919 + seed * 104729) % 1000).astype(np.float32) / np.float32(250.0) - np.float32(2.0))
            * (np.float32(1.0) + (i % 3).astype(np.float32))).astype(np.float32)
"#;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn owned<'a>(name: &str, dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> OutTensor<'a> {
    OutTensor::new(name, dtype, shape, move || Ok(Cow::Owned(bytes.clone())))
}

const PY_READ: &str = r#"
import sys, json, numpy as np
from gguf import GGUFReader, GGUFValueType
r = GGUFReader(sys.argv[1])
meta = {}
for f in r.fields.values():
    if f.name.startswith("GGUF."):
        continue
    t = [x.name for x in f.types]
    v = f.contents()
    if isinstance(v, float) and v != v:
        v = "nan"
    meta[f.name] = {"types": t, "value": v}
tensors = [{"name": t.name, "shape": [int(x) for x in t.shape], "type": t.tensor_type.name,
            "n_bytes": int(t.n_bytes), "bytes": bytes(np.asarray(t.data).tobytes()).hex()}
           for t in r.tensors]
print(json.dumps({"meta": meta, "tensors": tensors, "alignment": r.alignment}))
"#;

#[test]
fn gguf_py_reads_what_ferry_writes() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.gguf");
    let x = data(64 * 4, 1);
    let q8 = quant::quantize(&x, DType::Q8_0).unwrap();
    let q4k = quant::quantize(&data(256 * 2, 2), DType::Q4K).unwrap();
    let tensors = vec![
        owned("tok_embd.weight", DType::F32, vec![4, 64], f32_bytes(&x)),
        owned("blk.0.attn_q.weight", DType::Q8_0, vec![4, 64], q8.clone()),
        owned("blk.0.ffn_up.weight", DType::Q4K, vec![2, 256], q4k.clone()),
        owned(
            "blk.0.attn_norm.bias",
            DType::F16,
            vec![3],
            vec![0, 60, 0, 188, 0, 0],
        ),
        owned(
            "ids",
            DType::I32,
            vec![2],
            vec![1, 0, 0, 0, 255, 255, 255, 255],
        ),
    ];
    let mut meta = Metadata::new();
    let entries = [
        ("general.architecture", MetaValue::String("bert".into())),
        ("general.name", MetaValue::String("tést".into())),
        ("k.u8", MetaValue::U8(7)),
        ("k.i8", MetaValue::I8(-7)),
        ("k.u16", MetaValue::U16(700)),
        ("k.i16", MetaValue::I16(-700)),
        ("k.u32", MetaValue::U32(70000)),
        ("k.i32", MetaValue::I32(-70000)),
        ("k.u64", MetaValue::U64(1 << 40)),
        ("k.i64", MetaValue::I64(-(1 << 40))),
        ("k.f32", MetaValue::F32(0.5)),
        ("k.f64", MetaValue::F64(0.25)),
        ("k.bool", MetaValue::Bool(true)),
        (
            "k.strs",
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("▁b".into()),
            ]),
        ),
        (
            "k.i32s",
            MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-2)]),
        ),
    ];
    for (k, v) in entries {
        meta.insert(k.into(), v);
    }
    gguf::write(&path, &tensors, &meta, &mut |_, _| {}).unwrap();
    let got = run_py(&py, PY_READ, &[&path]);
    let m = &got["meta"];
    let expect_types = [
        ("k.u8", "UINT8", serde_json::json!(7)),
        ("k.i8", "INT8", serde_json::json!(-7)),
        ("k.u16", "UINT16", serde_json::json!(700)),
        ("k.i16", "INT16", serde_json::json!(-700)),
        ("k.u32", "UINT32", serde_json::json!(70000)),
        ("k.i32", "INT32", serde_json::json!(-70000)),
        ("k.u64", "UINT64", serde_json::json!(1u64 << 40)),
        ("k.i64", "INT64", serde_json::json!(-(1i64 << 40))),
        ("k.f32", "FLOAT32", serde_json::json!(0.5)),
        ("k.f64", "FLOAT64", serde_json::json!(0.25)),
        ("k.bool", "BOOL", serde_json::json!(true)),
        ("general.name", "STRING", serde_json::json!("tést")),
    ];
    for (k, t, v) in expect_types {
        assert_eq!(m[k]["types"], serde_json::json!([t]), "{k}");
        assert_eq!(m[k]["value"], v, "{k}");
    }
    assert_eq!(m["k.strs"]["types"], serde_json::json!(["ARRAY", "STRING"]));
    assert_eq!(m["k.strs"]["value"], serde_json::json!(["a", "▁b"]));
    assert_eq!(m["k.i32s"]["types"], serde_json::json!(["ARRAY", "INT32"]));
    assert_eq!(m["k.i32s"]["value"], serde_json::json!([1, -2]));
    let ts = got["tensors"].as_array().unwrap();
    assert_eq!(ts.len(), tensors.len());
    let types = ["F32", "Q8_0", "Q4_K", "F16", "I32"];
    for ((t, py_t), ty) in tensors.iter().zip(ts).zip(types) {
        assert_eq!(py_t["name"], t.name.as_str());
        let ggml_shape: Vec<usize> = t.shape.iter().rev().copied().collect();
        assert_eq!(py_t["shape"], serde_json::json!(ggml_shape), "{}", t.name);
        assert_eq!(py_t["type"], ty, "{}", t.name);
        let bytes = ferry_testkit::hex(&t.bytes().unwrap());
        assert_eq!(py_t["bytes"].as_str().unwrap(), bytes, "{}", t.name);
    }
}

const PY_WRITE: &str = r#"
import sys, json, numpy as np, gguf
from gguf import GGUFWriter, GGMLQuantizationType as Q
w = GGUFWriter(sys.argv[1], "llama")
w.add_name("from gguf-py")
w.add_uint32("llama.block_count", 2)
w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
w.add_bool("llama.flag", False)
w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "hi"])
w.add_array("ints", [3, 1, 4])
a = data(4 * 64, 1).reshape(4, 64)
w.add_tensor("f32", a)
w.add_tensor("f16", a[:2].astype(np.float16))
w.add_tensor("q8", gguf.quants.quantize(a, Q.Q8_0), raw_dtype=Q.Q8_0)
w.add_tensor("i8", np.array([[1, -2, 3]], dtype=np.int8))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(json.dumps({"q8": bytes(gguf.quants.quantize(a, Q.Q8_0).tobytes()).hex()}))
"#;

#[test]
fn ferry_reads_what_gguf_py_writes() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.gguf");
    let got = run_py(&py, &format!("{PY_DATA}\n{PY_WRITE}"), &[&path]);
    let ck = ferry_io::Checkpoint::open(&path).unwrap();
    assert_eq!(ck.format, ferry_io::Format::Gguf);
    let m = &ck.metadata;
    assert_eq!(m["general.architecture"], MetaValue::String("llama".into()));
    assert_eq!(m["general.name"], MetaValue::String("from gguf-py".into()));
    assert_eq!(m["llama.block_count"], MetaValue::U32(2));
    assert_eq!(
        m["llama.attention.layer_norm_rms_epsilon"],
        MetaValue::F32(1e-5)
    );
    assert_eq!(m["llama.flag"], MetaValue::Bool(false));
    let toks = MetaValue::Array(
        ["<s>", "</s>", "hi"]
            .iter()
            .map(|s| MetaValue::String(s.to_string()))
            .collect(),
    );
    assert_eq!(m["tokenizer.ggml.tokens"], toks);
    let MetaValue::Array(ints) = &m["ints"] else {
        panic!("{:?}", m["ints"])
    };
    assert_eq!(
        ints.iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>(),
        [3, 1, 4]
    );
    let names: Vec<(&str, DType, Vec<usize>)> = ck
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("f32", DType::F32, vec![4, 64]),
            ("f16", DType::F16, vec![2, 64]),
            ("q8", DType::Q8_0, vec![4, 64]),
            ("i8", DType::I8, vec![1, 3]),
        ]
    );
    let x = data(4 * 64, 1);
    assert_eq!(&*ck.tensors[0].data().unwrap(), &f32_bytes(&x)[..]);
    let q8_hex = ferry_testkit::hex(&ck.tensors[2].data().unwrap());
    assert_eq!(q8_hex, got["q8"].as_str().unwrap());
    assert_eq!(&*ck.tensors[3].data().unwrap(), &[1u8, 254, 3]);
}

const PY_QUANT: &str = r#"
import sys, json, numpy as np, gguf
from gguf import GGMLQuantizationType as Q
x = np.fromfile(sys.argv[1], dtype="<f4").reshape(-1, 256)
out = {}
for name in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
    try:
        out[name] = bytes(gguf.quants.quantize(x, Q[name]).tobytes()).hex()
    except NotImplementedError:
        out[name] = None
print(json.dumps(out))
"#;

/// Compares ferry's quantization with gguf-py's (`gguf.quants.quantize`) for every type
/// gguf-py can quantize. Q8_0 and Q4_0 must match bit for bit (gguf-py documents them as
/// bit-exact with ggml's reference C code); the others are reported.
#[test]
fn quantization_matches_gguf_py() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.f32");
    let mut x = data(256 * 64, 3);
    // Exact ties (x * id = k + 0.5) and zero blocks exercise rounding and the d == 0 path.
    x[..32].fill(0.0);
    for (i, v) in x[32..64].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) * 0.5;
    }
    std::fs::write(&path, f32_bytes(&x)).unwrap();
    let got = run_py(&py, PY_QUANT, &[&path]);
    let mut report = Vec::new();
    for (name, dtype) in [
        ("Q4_0", DType::Q4_0),
        ("Q4_1", DType::Q4_1),
        ("Q5_0", DType::Q5_0),
        ("Q5_1", DType::Q5_1),
        ("Q8_0", DType::Q8_0),
        ("Q2_K", DType::Q2K),
        ("Q3_K", DType::Q3K),
        ("Q4_K", DType::Q4K),
        ("Q5_K", DType::Q5K),
        ("Q6_K", DType::Q6K),
    ] {
        let Some(hex) = got[name].as_str() else {
            report.push(format!("{name}: gguf-py cannot quantize"));
            continue;
        };
        let theirs: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let ours = quant::quantize(&x, dtype).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        let bb = dtype.block_bytes();
        let blocks_differ = ours
            .chunks(bb)
            .zip(theirs.chunks(bb))
            .filter(|(a, b)| a != b)
            .count();
        let a = quant::dequantize(&ours, dtype, x.len()).unwrap();
        let b = quant::dequantize(&theirs, dtype, x.len()).unwrap();
        let (ea, eb) = (quant::error_stats(&x, &a), quant::error_stats(&x, &b));
        report.push(format!(
            "{name}: {blocks_differ}/{} blocks differ; rmse ferry {:.4e} vs gguf-py {:.4e}",
            x.len() / dtype.block_elems(),
            ea.rmse,
            eb.rmse
        ));
        if matches!(dtype, DType::Q8_0 | DType::Q4_0) {
            assert_eq!(blocks_differ, 0, "{name} differs from gguf-py");
        }
    }
    eprintln!("quantization vs gguf-py:\n  {}", report.join("\n  "));
}

const PY_DEQUANT: &str = r#"
import sys, os, numpy as np, gguf
from gguf import GGMLQuantizationType as Q
d = sys.argv[1]
for name in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
    t = Q[name]
    _, type_size = gguf.GGML_QUANT_SIZES[t]
    raw = np.fromfile(os.path.join(d, name + ".q"), dtype=np.uint8).reshape(-1, type_size)
    gguf.quants.dequantize(raw, t).astype("<f4").tofile(os.path.join(d, name + ".f32"))
print("{}")
"#;

/// gguf-py quantizes no k-quant, but it dequantizes them as ggml's reference C code does
/// (`dequantize_row_q*_K`): ferry's k-quant bytes must read back, through gguf-py, to exactly
/// the values ferry (candle) dequantizes them to. This checks the block layout ferry writes
/// against llama.cpp's, independently of candle.
#[test]
fn k_quant_layout_matches_gguf_py() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut x = data(256 * 64, 5);
    // A zero super-block, one with a zero sub-block, and one of huge range.
    x[..256].fill(0.0);
    x[256 + 16..256 + 48].fill(0.0);
    for (i, v) in x[512..768].iter_mut().enumerate() {
        *v = if i % 2 == 0 { 3e4 } else { -1e-3 * i as f32 };
    }
    let types = [
        ("Q2_K", DType::Q2K),
        ("Q3_K", DType::Q3K),
        ("Q4_K", DType::Q4K),
        ("Q5_K", DType::Q5K),
        ("Q6_K", DType::Q6K),
    ];
    let mut ours = Vec::new();
    for (name, dtype) in types {
        let q = quant::quantize(&x, dtype).unwrap();
        std::fs::write(dir.path().join(format!("{name}.q")), &q).unwrap();
        ours.push(quant::dequantize(&q, dtype, x.len()).unwrap());
    }
    run_py(&py, PY_DEQUANT, &[dir.path()]);
    for ((name, _), ours) in types.iter().zip(ours) {
        let theirs =
            bytemuck_free_f32(&std::fs::read(dir.path().join(format!("{name}.f32"))).unwrap());
        assert_eq!(theirs.len(), ours.len(), "{name}");
        let differ = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{name}: {differ} values differ from gguf-py's dequantization"
        );
    }
}

const PY_SUMMARY: &str = r#"
import sys, json
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
f = r.fields
print(json.dumps({"arch": f["general.architecture"].contents(), "n_tokens": len(f["tokenizer.ggml.tokens"].data),
    "tok101": f["tokenizer.ggml.tokens"].contents(101), "tok2000": f["tokenizer.ggml.tokens"].contents(2000),
    "types": sorted({t.tensor_type.name for t in r.tensors}), "n_tensors": len(r.tensors)}))
"#;

/// The real all-MiniLM-L6-v2 (`ferry_testkit::minilm`): quantized to Q8_0 with llama.cpp's
/// rule (2-D weights only) and hf_metadata, then read back by gguf-py.
#[test]
fn minilm_q8_0_is_readable_by_gguf_py() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy") else {
        return;
    };
    let Some(dir) = ferry_testkit::minilm() else {
        return;
    };
    let ck = ferry_io::Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let outs: Vec<OutTensor<'_>> = ck
        .tensors
        .iter()
        .map(|t| {
            if t.dtype == DType::F32 && quant::can_quantize(&t.shape, DType::Q8_0).is_ok() {
                OutTensor::new(t.name.clone(), DType::Q8_0, t.shape.clone(), move || {
                    let f: Vec<f32> = bytemuck_free_f32(&t.data()?);
                    Ok(Cow::Owned(quant::quantize(&f, DType::Q8_0)?))
                })
            } else {
                OutTensor::from_entry(t)
            }
        })
        .collect();
    let meta = gguf::hf_metadata(
        Some(&dir.join("config.json")),
        Some(&dir.join("tokenizer.json")),
        "all-MiniLM-L6-v2",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("minilm-q8_0.gguf");
    gguf::write(&path, &outs, &meta, &mut |_, _| {}).unwrap();
    let got = run_py(&py, PY_SUMMARY, &[&path]);
    assert_eq!(got["arch"], "bert");
    assert_eq!(got["n_tokens"], 30522);
    assert_eq!(got["tok101"], "[CLS]");
    assert_eq!(got["tok2000"], "\u{2581}to");
    assert_eq!(got["types"], serde_json::json!(["F32", "I64", "Q8_0"]));
    assert_eq!(
        got["n_tensors"].as_u64().unwrap() as usize,
        ck.tensors.len()
    );
}

fn bytemuck_free_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
