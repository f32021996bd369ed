//! PyTorch readers against the fixtures made by torch itself (`scripts/make_fixtures.py`):
//! every tensor, dtype, shape, value, scalar and tied group must match the reference that
//! `torch.load(..., weights_only=True)` (or `torch.jit.load`) produced.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_io::formats::pytorch;
use ferry_io::formats::zip::ZipArchive;
use ferry_io::{Checkpoint, DType, Error, Format, MetaValue};
use ferry_testkit::fixture;
use serde_json::Value;

/// A reference array: numpy dtype string, shape, raw little-endian bytes.
struct Npy {
    descr: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn parse_npy(b: &[u8]) -> Npy {
    assert_eq!(&b[..6], b"\x93NUMPY");
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    Npy {
        descr,
        shape,
        data: b[start + hlen..].to_vec(),
    }
}

fn load_npz(p: &Path) -> BTreeMap<String, Npy> {
    let z = ZipArchive::open(p).unwrap();
    z.entries()
        .iter()
        .map(|e| {
            let bytes = z
                .entry_storage(&e.name)
                .unwrap()
                .bytes()
                .unwrap()
                .into_owned();
            (
                e.name.trim_end_matches(".npy").to_string(),
                parse_npy(&bytes),
            )
        })
        .collect()
}

fn ferry_dtype(torch: &str) -> DType {
    torch
        .replace("float8_e4m3fn", "f8e4m3")
        .replace("uint", "u")
        .replace("int", "i")
        .replace("float", "f")
        .parse()
        .unwrap()
}

/// The tensor's bytes widened the way the reference npz stores them.
fn as_reference(d: DType, bytes: &[u8], descr: &str) -> Vec<u8> {
    match (d, descr) {
        (DType::BF16, "<f4") => bytes
            .chunks(2)
            .flat_map(|c| {
                f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16).to_le_bytes()
            })
            .collect(),
        (DType::F8E4M3, "<f4") => bytes
            .iter()
            .flat_map(|&b| float8::F8E4M3::from_bits(b).to_f32().to_le_bytes())
            .collect(),
        _ => bytes.to_vec(),
    }
}

/// Byte equality, except that any two f32 NaNs are equal (widening a float8 NaN may keep a
/// different payload than numpy's).
fn same_values(got: &[u8], want: &[u8], descr: &str) -> bool {
    if descr != "<f4" || got.len() != want.len() {
        return got == want;
    }
    got.chunks(4).zip(want.chunks(4)).all(|(a, b)| {
        let (a, b) = (
            f32::from_le_bytes(a.try_into().unwrap()),
            f32::from_le_bytes(b.try_into().unwrap()),
        );
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    })
}

/// The metadata value at a dotted reference name, looking inside arrays for `name.i`.
fn meta_at<'a>(ck: &'a Checkpoint, name: &str) -> Option<&'a MetaValue> {
    if let Some(v) = ck.metadata.get(name) {
        return Some(v);
    }
    let (head, idx) = name.rsplit_once('.')?;
    let i: usize = idx.parse().ok()?;
    match meta_at(ck, head)? {
        MetaValue::Array(a) => a.get(i),
        _ => None,
    }
}

fn check_scalar(name: &str, got: &MetaValue, want: &Value) {
    let ok = match (got, &want["value"]) {
        (MetaValue::Null, Value::Null) => true,
        (MetaValue::Bool(a), Value::Bool(b)) => a == b,
        (MetaValue::I64(a), Value::Number(n)) => n.as_i64() == Some(*a),
        (MetaValue::F64(a), Value::Number(n)) => n.as_f64() == Some(*a),
        (MetaValue::String(a), Value::String(b)) => a == b,
        _ => false,
    };
    assert!(ok, "scalar `{name}`: ferry has {got:?}, torch {want}");
}

/// Checks `source` against `<base>.reference.{json,npz}`.
fn check_against_reference(source: &str, base: &str, format: Format) {
    let src = fixture(source);
    let json = fixture(&format!("{base}.reference.json"));
    let npz = fixture(&format!("{base}.reference.npz"));
    let reference: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let arrays = load_npz(&npz);
    let ck = Checkpoint::open(&src).unwrap_or_else(|e| panic!("{source}: {e}"));
    assert_eq!(ck.format, format, "{source}");
    let tensors = reference["tensors"].as_object().unwrap();
    let mut want: Vec<&String> = tensors.keys().collect();
    let mut got: Vec<&String> = ck.tensors.iter().map(|t| &t.name).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{source}: tensor names");
    for (name, info) in tensors {
        let t = ck.get(name).unwrap();
        assert_eq!(
            t.dtype,
            ferry_dtype(info["dtype"].as_str().unwrap()),
            "{source} {name}"
        );
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{source} {name}");
        let arr = &arrays[name.as_str()];
        assert_eq!(arr.shape, shape, "{source} {name}: npz shape");
        let data = t.data().unwrap_or_else(|e| panic!("{source} {name}: {e}"));
        let got = as_reference(t.dtype, &data, &arr.descr);
        assert!(
            same_values(&got, &arr.data, &arr.descr),
            "{source} {name}: values {got:?} vs {:?}",
            arr.data
        );
    }
    if let Some(scalars) = reference["scalars"].as_object() {
        for (name, want) in scalars {
            let got = meta_at(&ck, name)
                .unwrap_or_else(|| panic!("{source}: no metadata `{name}` in {:?}", ck.metadata));
            check_scalar(name, got, want);
        }
    }
    let mut groups: Vec<Vec<String>> = reference["shared_storage"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| {
                    let mut g: Vec<String> = g
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n.as_str().unwrap().to_string())
                        .collect();
                    g.sort();
                    g
                })
                .collect()
        })
        .unwrap_or_default();
    groups.sort();
    let mut tied: Vec<Vec<String>> = ck
        .tied_groups()
        .into_iter()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    tied.sort();
    assert_eq!(tied, groups, "{source}: tied groups");
}

#[test]
fn all_dtypes() {
    check_against_reference(
        "pytorch/all_dtypes.pth",
        "pytorch/all_dtypes",
        Format::PytorchZip,
    );
}

#[test]
fn views_and_offsets() {
    check_against_reference("pytorch/views.pth", "pytorch/views", Format::PytorchZip);
}

#[test]
fn tied_weights() {
    check_against_reference("pytorch/tied.pth", "pytorch/tied", Format::PytorchZip);
}

#[test]
fn nested_dicts_and_scalars() {
    check_against_reference("pytorch/nested.pth", "pytorch/nested", Format::PytorchZip);
}

#[test]
fn protocols_2_and_4() {
    check_against_reference("pytorch/proto2.pth", "pytorch/proto2", Format::PytorchZip);
    check_against_reference("pytorch/proto4.pth", "pytorch/proto4", Format::PytorchZip);
}

#[test]
fn deflated_archive() {
    check_against_reference(
        "pytorch/deflated.pth",
        "pytorch/deflated",
        Format::PytorchZip,
    );
}

#[test]
fn legacy_stream() {
    check_against_reference(
        "pytorch/legacy.pth",
        "pytorch/legacy",
        Format::PytorchLegacy,
    );
}

#[test]
fn torchscript_module() {
    check_against_reference("torchscript/mlp.pt", "torchscript/mlp", Format::Torchscript);
}

#[test]
fn default_model() {
    check_against_reference("default/model.pth", "default/model", Format::PytorchZip);
}

fn assert_refused(r: ferry_io::Result<impl std::fmt::Debug>, what: &str) {
    match r {
        Err(Error::UnsafePickle { global, .. }) => {
            assert!(global.contains("system"), "{what}: refused `{global}`")
        }
        other => panic!("{what}: expected UnsafePickle, got {other:?}"),
    }
}

#[test]
fn hostile_files_are_refused() {
    for rel in [
        "pytorch/hostile_os_system.pth",
        "hostile/legacy_os_system.pth",
    ] {
        assert_refused(Checkpoint::open(fixture(rel)), rel);
    }
    for rel in [
        "hostile/os_system.pkl",
        "hostile/os_system_proto0.pkl",
        "hostile/os_system_proto4.pkl",
    ] {
        let p = fixture(rel);
        let bytes = std::fs::read(&p).unwrap();
        let opts = ferry_io::formats::pickle::Options::default();
        assert_refused(ferry_io::formats::pickle::load(&p, &bytes, &opts), rel);
        assert_refused(pytorch::open_legacy(&p), rel);
    }
}

#[test]
fn round_trip_fixture_through_writer() {
    let src = fixture("pytorch/all_dtypes.pth");
    let ck = Checkpoint::open(&src).unwrap();
    let outs: Vec<_> = ck
        .tensors
        .iter()
        .map(ferry_io::OutTensor::from_entry)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.pth");
    pytorch::write(&p, &outs, &ck.metadata, &mut |_, _| {}).unwrap();
    let back = Checkpoint::open(&p).unwrap();
    assert_eq!(back.tensors.len(), ck.tensors.len());
    for t in &ck.tensors {
        let b = back.get(&t.name).unwrap();
        assert_eq!((b.dtype, &b.shape), (t.dtype, &t.shape));
        assert_eq!(b.data().unwrap(), t.data().unwrap(), "{}", t.name);
    }
}

#[test]
fn truncated_fixtures_fail_cleanly() {
    for rel in [
        "pytorch/legacy.pth",
        "pytorch/tied.pth",
        "pytorch/deflated.pth",
        "torchscript/mlp.pt",
    ] {
        let p = fixture(rel);
        let bytes = std::fs::read(&p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut_path = dir.path().join("cut.pth");
        for cut in (0..bytes.len()).step_by(13) {
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            match Checkpoint::open(&cut_path) {
                Err(Error::File(ferry_io::FileError {
                    problem: ferry_io::FileProblem::Malformed(_),
                    ..
                }))
                | Err(Error::UnknownFormat { .. })
                | Err(Error::Tensor { .. }) => {}
                other => panic!("{rel} cut at {cut}: {other:?}"),
            }
        }
    }
}
