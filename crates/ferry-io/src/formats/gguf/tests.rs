use std::borrow::Cow;

use super::*;

fn out<'a>(name: &str, dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> OutTensor<'a> {
    OutTensor::new(name, dtype, shape, move || Ok(Cow::Owned(data.clone())))
}

fn every_type_metadata() -> Metadata {
    let mut m = Metadata::new();
    let vals = [
        ("t.u8", MetaValue::U8(200)),
        ("t.i8", MetaValue::I8(-5)),
        ("t.u16", MetaValue::U16(60000)),
        ("t.i16", MetaValue::I16(-30000)),
        ("t.u32", MetaValue::U32(4_000_000_000)),
        ("t.i32", MetaValue::I32(-2_000_000_000)),
        ("t.u64", MetaValue::U64(u64::MAX)),
        ("t.i64", MetaValue::I64(i64::MIN)),
        ("t.f32", MetaValue::F32(1.5e-12)),
        ("t.f64", MetaValue::F64(-2.25e300)),
        ("t.bool", MetaValue::Bool(true)),
        ("t.string", MetaValue::String("héllo ▁world".into())),
        ("t.empty", MetaValue::Array(vec![])),
        (
            "t.strings",
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("".into()),
            ]),
        ),
        (
            "t.f32s",
            MetaValue::Array(vec![MetaValue::F32(0.5), MetaValue::F32(-1.0)]),
        ),
        (
            "t.nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(2)]),
                MetaValue::Array(vec![MetaValue::String("x".into())]),
            ]),
        ),
    ];
    for (k, v) in vals {
        m.insert(k.into(), v);
    }
    m
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn write_read_round_trip_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let x = crate::quant::tests_sample(64 * 3);
    let q = crate::quant::quantize(&x, DType::Q8_0).unwrap();
    let k = crate::quant::quantize(&crate::quant::tests_sample(256 * 2), DType::Q4K).unwrap();
    let tensors = vec![
        out("w.f32", DType::F32, vec![3, 5], f32_bytes(&[1.0; 15])),
        out("w.q8", DType::Q8_0, vec![3, 64], q.clone()),
        out("w.q4k", DType::Q4K, vec![2, 256], k.clone()),
        out("w.f16", DType::F16, vec![7], vec![1; 14]),
        out("w.bf16", DType::BF16, vec![1, 1, 2], vec![2; 4]),
        out("w.f64", DType::F64, vec![], vec![3; 8]),
        out("w.i8", DType::I8, vec![3], vec![1, 2, 255]),
        out("w.i16", DType::I16, vec![1], vec![4, 5]),
        out("w.i32", DType::I32, vec![2, 1], vec![6; 8]),
        out("w.i64", DType::I64, vec![1], vec![7; 8]),
        out("w.empty", DType::F32, vec![0, 4], vec![]),
    ];
    let meta = every_type_metadata();
    let mut seen = Vec::new();
    write(&path, &tensors, &meta, &mut |n, b| {
        seen.push((n.to_string(), b))
    })
    .unwrap();
    assert_eq!(seen.len(), tensors.len());
    let ck = open(&path).unwrap();
    assert_eq!(ck.format, Format::Gguf);
    assert_eq!(ck.tensors.len(), tensors.len());
    for (t, e) in tensors.iter().zip(&ck.tensors) {
        assert_eq!((&e.name, e.dtype, &e.shape), (&t.name, t.dtype, &t.shape));
        assert_eq!(&*e.data().unwrap(), &*t.bytes().unwrap(), "{}", t.name);
        if let Storage::Mapped { range, .. } = &e.storage {
            assert_eq!(range.start % 32, 0, "{} is not aligned", e.name);
        }
    }
    let mut got = ck.metadata.clone();
    assert_eq!(got.remove("ferry.gguf_version"), Some(MetaValue::U32(3)));
    // Empty arrays come back as empty (string) arrays.
    assert_eq!(got, meta);
}

#[test]
fn custom_alignment_and_mixed_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.gguf");
    let mut meta = Metadata::new();
    meta.insert(ALIGNMENT_KEY.into(), MetaValue::I64(64));
    meta.insert(
        "mixed.ints".into(),
        MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I64(-2)]),
    );
    meta.insert(
        "mixed.nums".into(),
        MetaValue::Array(vec![MetaValue::I64(1), MetaValue::F64(0.5)]),
    );
    meta.insert(
        "mixed.any".into(),
        MetaValue::Array(vec![MetaValue::I64(1), MetaValue::String("x".into())]),
    );
    meta.insert("null".into(), MetaValue::Null);
    let tensors = vec![
        out("a", DType::F32, vec![3], f32_bytes(&[1.0, 2.0, 3.0])),
        out("b", DType::F32, vec![1], f32_bytes(&[4.0])),
    ];
    write(&path, &tensors, &meta, &mut |_, _| {}).unwrap();
    let ck = open(&path).unwrap();
    assert_eq!(ck.metadata[ALIGNMENT_KEY], MetaValue::U32(64));
    assert_eq!(
        ck.metadata["mixed.ints"],
        MetaValue::Array(vec![MetaValue::I64(1), MetaValue::I64(-2)])
    );
    assert_eq!(
        ck.metadata["mixed.nums"],
        MetaValue::Array(vec![MetaValue::F64(1.0), MetaValue::F64(0.5)])
    );
    assert_eq!(
        ck.metadata["mixed.any"],
        MetaValue::String("[1,\"x\"]".into())
    );
    assert!(!ck.metadata.contains_key("null"));
    for e in &ck.tensors {
        let Storage::Mapped { range, .. } = &e.storage else {
            panic!()
        };
        assert_eq!(range.start % 64, 0);
    }
    assert_eq!(&*ck.tensors[1].data().unwrap(), &f32_bytes(&[4.0])[..]);
}

#[test]
fn unwritable_tensors_are_refused_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    let none = Metadata::new();
    for (dtype, fix) in [
        (DType::Bool, "i8"),
        (DType::U32, "signed"),
        (DType::F8E4M3, "--dtype f32"),
    ] {
        let t = [out("bad", dtype, vec![4], vec![0; 4 * dtype.block_bytes()])];
        let e = write(&path, &t, &none, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bad`") && e.contains(fix), "{e}");
    }
    let t = [out("q", DType::Q8_0, vec![2, 16], vec![0; 34])];
    assert!(write(&path, &t, &none, &mut |_, _| {}).is_err());
    let t = [out("short", DType::F32, vec![2], vec![0; 4])];
    let e = write(&path, &t, &none, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("produced 4 bytes"), "{e}");
    assert!(!path.exists(), "a failed write left a file");
}

/// A hand-built GGUF: header, metadata, tensor infos, data.
struct Builder {
    version: u32,
    buf: Vec<u8>,
}

impl Builder {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut b = Builder {
            version,
            buf: b"GGUF".to_vec(),
        };
        b.buf.extend_from_slice(&version.to_le_bytes());
        b.size(n_tensors);
        b.size(n_kv);
        b
    }
    fn size(&mut self, n: u64) -> &mut Self {
        if self.version == 1 {
            self.buf.extend_from_slice(&(n as u32).to_le_bytes());
        } else {
            self.buf.extend_from_slice(&n.to_le_bytes());
        }
        self
    }
    fn u32(&mut self, n: u32) -> &mut Self {
        self.buf.extend_from_slice(&n.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.size(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.size(d);
        }
        self.u32(ty);
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self
    }
    fn pad(&mut self) -> &mut Self {
        while !self.buf.len().is_multiple_of(32) {
            self.buf.push(0);
        }
        self
    }
    fn save(&self, dir: &Path) -> std::path::PathBuf {
        let p = dir.join("h.gguf");
        std::fs::write(&p, &self.buf).unwrap();
        p
    }
}

fn open_err(b: &Builder) -> String {
    let dir = tempfile::tempdir().unwrap();
    open(&b.save(dir.path())).unwrap_err().to_string()
}

#[test]
fn v1_and_v2_files_are_read() {
    for version in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Builder::new(version, 1, 1);
        b.str("general.name").u32(vt::STRING).str("old");
        b.tensor("t", &[2, 3], 0, 0).pad();
        b.buf
            .extend_from_slice(&f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        let ck = open(&b.save(dir.path())).unwrap();
        assert_eq!(ck.metadata["general.name"], MetaValue::String("old".into()));
        assert_eq!(ck.metadata["ferry.gguf_version"], MetaValue::U32(version));
        assert_eq!(ck.tensors[0].shape, vec![3, 2], "dims are innermost first");
        assert_eq!(ck.tensors[0].data().unwrap().len(), 24);
    }
}

#[test]
fn unknown_types_are_listed_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Builder::new(3, 2, 0);
    b.tensor("iq", &[256, 2], 16, 0)
        .tensor("ok", &[1], 0, 0)
        .pad();
    b.buf.extend_from_slice(&[0; 32]);
    let ck = open(&b.save(dir.path())).unwrap();
    assert_eq!(ck.tensors.len(), 1);
    let list = unsupported_tensors(&ck.metadata);
    assert_eq!(
        list,
        vec!["iq: ggml type 16 (IQ2_XXS), shape [2, 256]".to_string()]
    );
    let e = check_supported(&ck).unwrap_err().to_string();
    assert!(e.contains("`iq`") && e.contains("IQ2_XXS"), "{e}");
    let t = [out("ok", DType::F32, vec![1], vec![0; 4])];
    assert!(write(&dir.path().join("o.gguf"), &t, &ck.metadata, &mut |_, _| {}).is_err());
}

#[test]
fn hostile_counts_and_lengths_are_errors() {
    let e = open_err(&Builder::new(3, 1 << 60, 0));
    assert!(e.contains("tensor count is 1152921504606846976"), "{e}");
    let e = open_err(&Builder::new(3, 0, 1 << 60));
    assert!(e.contains("metadata count"), "{e}");
    let mut b = Builder::new(3, 0, 1);
    b.size(u64::MAX - 3);
    b.buf.extend_from_slice(&[0; 32]);
    let e = open_err(&b);
    assert!(
        e.contains("metadata key needs") && e.contains("remain"),
        "{e}"
    );
    let mut b = Builder::new(3, 0, 1);
    b.str("k").u32(vt::ARRAY).u32(vt::U64).size(1 << 62);
    assert!(open_err(&b).contains("array length of `k`"));
    let mut b = Builder::new(3, 0, 1);
    b.str("k").u32(99);
    assert!(open_err(&b).contains("value type 99"));
    let mut b = Builder::new(3, 0, 1);
    b.str("k").u32(vt::ARRAY);
    for _ in 0..100 {
        b.u32(vt::ARRAY).size(1);
    }
    assert!(open_err(&b).contains("nests arrays"));
    let e = open_err(&Builder {
        version: 3,
        buf: b"GGU".to_vec(),
    });
    assert!(e.contains("magic") || e.contains("needs"), "{e}");
}

#[test]
fn hostile_tensor_infos_are_errors() {
    let mut b = Builder::new(3, 1, 0);
    b.tensor("deep", &[1; 9], 0, 0);
    assert!(open_err(&b).contains("tensor `deep`: 9 dimensions"));
    let mut b = Builder::new(3, 1, 0);
    b.tensor("huge", &[u64::MAX, 4], 0, 0).pad();
    let e = open_err(&b);
    assert!(e.contains("`huge`") && e.contains("overflow"), "{e}");
    let mut b = Builder::new(3, 1, 0);
    b.tensor("far", &[4], 0, 1 << 40).pad();
    b.buf.extend_from_slice(&[0; 16]);
    let e = open_err(&b);
    assert!(e.contains("`far`") && e.contains("past the end"), "{e}");
    let mut b = Builder::new(3, 1, 0);
    b.tensor("wrap", &[4], 0, u64::MAX - 2).pad();
    assert!(open_err(&b).contains("past the end"));
    let mut b = Builder::new(3, 1, 0);
    b.tensor("odd", &[33, 2], 8, 0).pad();
    assert!(open_err(&b).contains("whole blocks"));
    let mut b = Builder::new(3, 2, 0);
    b.tensor("dup", &[1], 0, 0).tensor("dup", &[1], 0, 0).pad();
    b.buf.extend_from_slice(&[0; 4]);
    assert!(open_err(&b).contains("twice"));
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.gguf");
    let tensors = [out("w", DType::F32, vec![2, 8], f32_bytes(&[0.5; 16]))];
    write(&path, &tensors, &every_type_metadata(), &mut |_, _| {}).unwrap();
    let full = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    for n in 0..full.len() - 1 {
        std::fs::write(&cut, &full[..n]).unwrap();
        assert!(open(&cut).is_err(), "a file cut at {n} bytes opened");
    }
}

#[test]
fn big_endian_is_named() {
    let mut b = Builder::new(3, 0, 0);
    b.buf[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(open_err(&b).contains("big-endian"));
    let mut b = Builder::new(3, 0, 0);
    b.buf[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert!(open_err(&b).contains("version 7"));
}
