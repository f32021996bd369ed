//! `torch.load(path, weights_only=True)` accepts the `.pth` files ferry writes and sees the
//! same values, dtypes, shapes and tied storages. Needs a Python with torch (found by
//! `ferry_testkit::python_with`); skipped with a note when none has torch, unless
//! `FERRY_REQUIRE_PYTHON=1` (CI), where it fails.

use std::borrow::Cow;
use std::path::Path;

use ferry_io::formats::pytorch;
use ferry_io::formats::zip::{ZipArchive, ZipWriter};
use ferry_io::{DType, Metadata, OutTensor};
use serde_json::Value;

const LOAD: &str = r#"
import json, sys, torch
sd = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
out = {}
for k, t in sd.items():
    out[k] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
              "hex": t.contiguous().view(-1).view(torch.uint8).numpy().tobytes().hex() if t.numel() else "",
              "ptr": t.untyped_storage().data_ptr()}
print(json.dumps({"type": type(sd).__name__, "tensors": out}))
"#;

fn bytes_of(d: DType, n: usize, seed: usize) -> Vec<u8> {
    let len = n * d.block_bytes();
    (0..len)
        .map(|i| match d {
            DType::Bool => (i % 2) as u8,
            // Keep float bytes away from NaN patterns so torch's view compares bit-exactly anyway.
            _ => ((i * 37 + seed * 11) % 251) as u8,
        })
        .collect()
}

fn torch_load(python: &Path, p: &Path) -> Value {
    serde_json::from_str(&ferry_testkit::run_python(python, LOAD, &[p])).unwrap()
}

/// Copies a zip into a new one written with zip64 records for every entry and offset.
fn rewrite_zip64(src: &Path, dst: &Path) {
    let z = ZipArchive::open(src).unwrap();
    let mut w = ZipWriter::new(Vec::new(), dst).with_zip64_threshold(0);
    for e in z.entries() {
        w.add(&e.name, &z.entry_storage(&e.name).unwrap().bytes().unwrap())
            .unwrap();
    }
    std::fs::write(dst, w.finish().unwrap()).unwrap();
}

#[test]
fn torch_loads_what_ferry_writes() {
    let Some(python) = ferry_testkit::python_with("torch") else {
        return;
    };
    let specs: Vec<(&str, DType, Vec<usize>)> = vec![
        ("f32", DType::F32, vec![2, 3]),
        ("f16", DType::F16, vec![4]),
        ("bf16", DType::BF16, vec![3, 1, 2]),
        ("i64", DType::I64, vec![5]),
        ("i8", DType::I8, vec![2, 2]),
        ("bool", DType::Bool, vec![7]),
        ("u8", DType::U8, vec![3]),
        ("f64", DType::F64, vec![]),
        ("i32", DType::I32, vec![1, 1]),
        ("i16", DType::I16, vec![2]),
        ("u16", DType::U16, vec![3]),
        ("u32", DType::U32, vec![2]),
        ("u64", DType::U64, vec![2]),
        ("f8", DType::F8E4M3, vec![4]),
        ("empty", DType::F32, vec![0, 5]),
        ("embed.weight", DType::F32, vec![4, 2]),
    ];
    let data: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, (_, d, s))| bytes_of(*d, s.iter().product(), i))
        .collect();
    let mut outs: Vec<OutTensor<'_>> = specs
        .iter()
        .zip(&data)
        .map(|((n, d, s), b)| OutTensor::new(*n, *d, s.clone(), move || Ok(Cow::Borrowed(&b[..]))))
        .collect();
    let embed = &data[data.len() - 1];
    let mut tied = OutTensor::new("lm_head.weight", DType::F32, vec![4, 2], move || {
        Ok(Cow::Borrowed(&embed[..]))
    });
    tied.tied_to = Some("embed.weight".into());
    outs.push(tied);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ferry.pth");
    pytorch::write(&p, &outs, &Metadata::new(), &mut |_, _| {}).unwrap();
    let p64 = dir.path().join("ferry_zip64.pth");
    rewrite_zip64(&p, &p64);

    for file in [&p, &p64] {
        let got = torch_load(&python, file);
        assert_eq!(got["type"], "OrderedDict");
        let tensors = got["tensors"].as_object().unwrap();
        assert_eq!(tensors.len(), outs.len());
        let torch_names = [
            ("f32", "float32"),
            ("f16", "float16"),
            ("bf16", "bfloat16"),
            ("i64", "int64"),
            ("i8", "int8"),
            ("bool", "bool"),
            ("u8", "uint8"),
            ("f64", "float64"),
            ("i32", "int32"),
            ("i16", "int16"),
            ("u16", "uint16"),
            ("u32", "uint32"),
            ("u64", "uint64"),
            ("f8e4m3", "float8_e4m3fn"),
        ];
        for t in &outs {
            let info = &tensors[t.name.as_str()];
            let want_dtype = torch_names
                .iter()
                .find(|(f, _)| *f == t.dtype.name())
                .unwrap()
                .1;
            assert_eq!(info["dtype"], want_dtype, "{}", t.name);
            let shape: Vec<usize> = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(shape, t.shape, "{}", t.name);
            let hex = ferry_testkit::hex(&t.bytes().unwrap());
            assert_eq!(info["hex"].as_str().unwrap(), hex, "{}: values", t.name);
        }
        assert_eq!(
            tensors["embed.weight"]["ptr"], tensors["lm_head.weight"]["ptr"],
            "tied tensors must share one storage after torch.load"
        );
    }
}
