//! Tests of the PyTorch reader and writer.

use std::borrow::Cow;
use std::path::Path;

use super::archive::open_zip;
use super::legacy::open_legacy;
use super::write::{write, PickleWriter};
use crate::checkpoint::Format;
use crate::dtype::DType;
use crate::error::Error;
use crate::formats::pickle::{self, Options, Value};
use crate::meta::Metadata;
use crate::tensor::Layout;
use crate::write::OutTensor;

fn out<'a>(name: &str, dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> OutTensor<'a> {
    OutTensor::new(name, dtype, shape, move || Ok(Cow::Owned(data.clone())))
}

fn write_tmp(tensors: &[OutTensor<'_>]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.pth");
    write(&p, tensors, &Metadata::new(), &mut |_, _| {}).unwrap();
    (dir, p)
}

#[test]
fn round_trip_every_dtype_and_ties() {
    let mut ts = Vec::new();
    let dtypes = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::F8E4M3,
    ];
    for (i, d) in dtypes.iter().enumerate() {
        let n = 6 * d.block_bytes();
        let data: Vec<u8> = (0..n)
            .map(|k| {
                if *d == DType::Bool {
                    (k % 2) as u8
                } else {
                    (k * 7 + i) as u8
                }
            })
            .collect();
        ts.push(out(&format!("layer.{i}.w"), *d, vec![2, 3], data));
    }
    let mut tied = out("lm_head.weight", DType::F32, vec![3, 2], vec![0; 24]);
    tied.tied_to = Some("layer.0.w".into());
    ts.push(tied);
    ts.push(out("empty", DType::F32, vec![0, 4], vec![]));
    ts.push(out(
        "scalar",
        DType::I64,
        vec![],
        5i64.to_le_bytes().to_vec(),
    ));
    let (_d, p) = write_tmp(&ts);
    let ck = open_zip(&p).unwrap();
    assert_eq!(ck.format, Format::PytorchZip);
    assert_eq!(ck.tensors.len(), ts.len());
    for t in &ts {
        let e = ck.get(&t.name).unwrap();
        assert_eq!(e.dtype, t.dtype, "{}", t.name);
        assert_eq!(e.shape, t.shape, "{}", t.name);
        let want = if t.name == "lm_head.weight" {
            ts[0].bytes().unwrap()
        } else {
            t.bytes().unwrap()
        };
        assert_eq!(&*e.data().unwrap(), &*want, "{}", t.name);
    }
    assert_eq!(
        ck.tied_groups(),
        vec![vec!["layer.0.w".to_string(), "lm_head.weight".to_string()]]
    );
    // Reproducible output.
    let (_d2, p2) = write_tmp(&ts);
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());
}

#[test]
fn writer_refuses_quantized_and_bad_ties() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.pth");
    let e = write(
        &p,
        &[out("q", DType::Q4_0, vec![32], vec![0; 18])],
        &Metadata::new(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`q`") && e.contains("GGUF"), "{e}");
    let mut t = out("b", DType::F32, vec![1], vec![0; 4]);
    t.tied_to = Some("zzz".into());
    assert!(write(&p, &[t], &Metadata::new(), &mut |_, _| {}).is_err());
    assert!(!p.exists());
}

/// A zip holding `pkl` as `a/data.pkl` plus storages.
fn archive_with(pkl: &[u8], storages: &[(&str, &[u8])]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.pth");
    let mut z = crate::formats::zip::ZipWriter::new(Vec::new(), &p);
    z.add("a/data.pkl", pkl).unwrap();
    for (k, d) in storages {
        z.add(&format!("a/data/{k}"), d).unwrap();
    }
    std::fs::write(&p, z.finish().unwrap()).unwrap();
    (dir, p)
}

/// `{'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', n), offset, shape, stride, False, OrderedDict())}`
fn tensor_pickle(offset: u64, shape: &[u64], stride: &[u64], storage: &str) -> Vec<u8> {
    let mut w = PickleWriter::new();
    w.out.push(b'}');
    w.str("w");
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.out.extend_from_slice(b"((");
    w.str("storage");
    w.global("torch", storage);
    w.str("0");
    w.str("cpu");
    w.int(4);
    w.out.extend_from_slice(b"tQ");
    w.int(offset);
    w.tuple(shape);
    w.tuple(stride);
    w.out.push(0x89);
    w.empty_ordered_dict();
    w.out.extend_from_slice(b"tRs.");
    w.out
}

#[test]
fn views_offsets_and_bad_bounds() {
    let data: Vec<u8> = (0..6u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
    // Transposed 3x2 view of a 2x3 storage.
    let (_d, p) = archive_with(
        &tensor_pickle(0, &[3, 2], &[1, 3], "FloatStorage"),
        &[("0", &data)],
    );
    let ck = open_zip(&p).unwrap();
    let got: Vec<f32> = ck.tensors[0]
        .data()
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![0., 3., 1., 4., 2., 5.]);
    // Contiguous with an element offset.
    let (_d, p) = archive_with(
        &tensor_pickle(2, &[4], &[1], "FloatStorage"),
        &[("0", &data)],
    );
    let ck = open_zip(&p).unwrap();
    assert_eq!(ck.tensors[0].layout, Layout::Contiguous { offset: 8 });
    // Offset past the end: a named error at open.
    let (_d, p) = archive_with(
        &tensor_pickle(5, &[4], &[1], "FloatStorage"),
        &[("0", &data)],
    );
    let e = open_zip(&p).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("storage holds"), "{e}");
    // A shape claiming 10^15 elements: refused without allocating.
    let (_d, p) = archive_with(
        &tensor_pickle(0, &[1_000_000_000_000_000], &[1], "FloatStorage"),
        &[("0", &data)],
    );
    let e = open_zip(&p).unwrap_err().to_string();
    assert!(e.contains("`w`"), "{e}");
    // Unsupported storage types are named, never skipped.
    let (_d, p) = archive_with(
        &tensor_pickle(0, &[1], &[1], "ComplexFloatStorage"),
        &[("0", &data)],
    );
    let e = open_zip(&p).unwrap_err().to_string();
    assert!(
        e.contains("`w`") && e.contains("ComplexFloatStorage"),
        "{e}"
    );
    // A missing storage entry.
    let (_d, p) = archive_with(&tensor_pickle(0, &[1], &[1], "FloatStorage"), &[]);
    let e = open_zip(&p).unwrap_err().to_string();
    assert!(e.contains("a/data/0"), "{e}");
}

#[test]
fn hostile_pickle_in_an_archive_is_refused() {
    let (_d, p) = archive_with(
        b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00lsq\x00\x85q\x01Rq\x02.",
        &[],
    );
    match open_zip(&p) {
        Err(Error::UnsafePickle { global, .. }) => assert_eq!(global, "posix system"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn legacy_truncated_and_wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.pth");
    std::fs::write(&p, b"\x80\x02K\x01.").unwrap();
    assert!(open_legacy(&p).unwrap_err().to_string().contains("magic"));
    std::fs::write(
        &p,
        b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9",
    )
    .unwrap();
    assert!(matches!(
        open_legacy(&p),
        Err(Error::File(crate::FileError {
            problem: crate::FileProblem::Malformed(_),
            ..
        }))
    ));
}

#[test]
fn int_encoding_round_trips_through_the_vm() {
    for v in [
        0u64,
        255,
        256,
        65535,
        65536,
        i32::MAX as u64,
        1 << 31,
        1 << 40,
        u64::MAX >> 1,
        u64::MAX,
    ] {
        let mut w = PickleWriter::new();
        w.int(v);
        w.out.push(b'.');
        let (pk, _) = pickle::load(Path::new("t"), &w.out, &Options::default()).unwrap();
        match pk.root {
            Value::Int(i) => assert_eq!(i as u64, v),
            Value::BigInt(b) => {
                assert_eq!(&b[..8], &v.to_le_bytes());
                assert!(b[8..].iter().all(|&x| x == 0));
            }
            other => panic!("{other:?}"),
        }
    }
}
