use std::borrow::Cow;

use super::*;

fn out<'a>(name: &str, dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> OutTensor<'a> {
    OutTensor::new(name, dtype, shape, move || Ok(Cow::Owned(data.clone())))
}

/// A `.npy` file with a hand-written header (as NumPy would write it) and `data`.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&[1, 0]);
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn header_parsing() {
    let h = parse_header(&npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
        &[],
    ))
    .unwrap();
    assert_eq!(
        (h.dtype, h.fortran, h.shape.clone(), h.data_start),
        (DType::F32, false, vec![3, 4], 128)
    );
    let h = parse_header(&npy(
        "{\"descr\":\"|b1\",\"fortran_order\":True,\"shape\":(5L,)}",
        &[],
    ))
    .unwrap();
    assert_eq!((h.dtype, h.fortran, h.shape), (DType::Bool, true, vec![5]));
    let h = parse_header(&npy(
        "{'descr': '<u8', 'fortran_order': False, 'shape': ()}",
        &[],
    ))
    .unwrap();
    assert!(h.shape.is_empty());
    for (descr, msg) in [
        ("'<V2'", "bfloat16"),
        ("'|O'", "pickled"),
        ("'<c8'", "not supported"),
        ("[('a', '<f4')]", "structured"),
    ] {
        let e = parse_header(&npy(
            &format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}"),
            &[],
        ))
        .unwrap_err();
        assert!(e.contains(msg), "{descr}: {e}");
    }
    assert_eq!(parse_descr(">i1"), Ok((DType::I8, false)));
    assert_eq!(parse_descr(">f4"), Ok((DType::F32, true)));
}

#[test]
fn hostile_headers_are_errors() {
    let good = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
        &[],
    );
    for n in 0..good.len() {
        assert!(
            parse_header(&good[..n]).is_err(),
            "prefix of {n} bytes parsed"
        );
    }
    let mut big = good.clone();
    big[6] = 2;
    big[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_header(&big).unwrap_err().contains("limit"));
    for dict in [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
        "{'descr': '<f4', 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,",
        "['descr']",
    ] {
        assert!(parse_header(&npy(dict, &[])).is_err(), "{dict}");
    }
}

#[test]
fn npy_files_open_including_fortran_order_and_short_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("weights.npy");
    // Column-major 2x3 [[0,1,2],[3,4,5]] is stored as 0,3,1,4,2,5.
    std::fs::write(
        &p,
        npy(
            "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }",
            &[0, 3, 1, 4, 2, 5],
        ),
    )
    .unwrap();
    let ck = crate::formats::open_file(&p).unwrap();
    assert_eq!(ck.format, Format::Npy);
    let t = &ck.tensors[0];
    assert_eq!((t.name.as_str(), t.shape.clone()), ("weights", vec![2, 3]));
    assert_eq!(&*t.data().unwrap(), &[0, 1, 2, 3, 4, 5]);
    // Big-endian and Fortran-ordered: [[1, 2], [3, 4]] stored column-major as 1, 3, 2, 4.
    let be: Vec<u8> = [1i16, 3, 2, 4]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    std::fs::write(
        &p,
        npy(
            "{'descr': '>i2', 'fortran_order': True, 'shape': (2, 2), }",
            &be,
        ),
    )
    .unwrap();
    let t = open_npy(&p).unwrap().tensors.remove(0);
    let le: Vec<u8> = [1i16, 2, 3, 4]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(&*t.data().unwrap(), &le[..]);
    std::fs::write(
        &p,
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &[0; 20],
        ),
    )
    .unwrap();
    let e = open_npy(&p).unwrap_err().to_string();
    assert!(e.contains("`weights`") && e.contains("truncated"), "{e}");
}

#[test]
fn npy_and_npz_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let f32s: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let tensors = vec![
        out("layer.0/weight", DType::F32, vec![2, 3], f32s.clone()),
        out("mask", DType::Bool, vec![3], vec![1, 0, 1]),
        out("scalar", DType::I64, vec![], vec![9; 8]),
        out("empty", DType::F16, vec![0, 2], vec![]),
        out("u16", DType::U16, vec![1, 1, 2], vec![1, 2, 3, 4]),
    ];
    let npz = dir.path().join("a.npz");
    let mut n = 0;
    write_npz(&npz, &tensors, &Metadata::new(), &mut |_, _| n += 1).unwrap();
    assert_eq!(n, tensors.len());
    let ck = open_npz(&npz).unwrap();
    assert_eq!(ck.format, Format::Npz);
    assert_eq!(ck.tensors.len(), tensors.len());
    for (t, e) in tensors.iter().zip(&ck.tensors) {
        assert_eq!((&e.name, e.dtype, &e.shape), (&t.name, t.dtype, &t.shape));
        assert_eq!(&*e.data().unwrap(), &*t.bytes().unwrap());
        assert!(matches!(e.storage, Storage::Mapped { .. }));
    }
    let npy_path = dir.path().join("one.npy");
    write_npy(&npy_path, &tensors[0]).unwrap();
    let ck = open_npy(&npy_path).unwrap();
    assert_eq!(&*ck.tensors[0].data().unwrap(), &f32s[..]);
    assert_eq!(std::fs::metadata(&npy_path).unwrap().len(), 128 + 24);
}

#[test]
fn types_numpy_lacks_are_refused_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    for d in [DType::BF16, DType::F8E4M3, DType::Q8_0] {
        let t = [out(
            "w",
            d,
            vec![32],
            vec![0; d.storage_bytes(32).unwrap() as usize],
        )];
        let e = write_npz(
            &dir.path().join("x.npz"),
            &t,
            &Metadata::new(),
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`w`") && e.contains("--dtype f32"), "{e}");
    }
    assert!(!dir.path().join("x.npz").exists());
}

#[test]
fn deflated_prefix_is_inflated() {
    let data: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
    let packed = miniz_oxide::deflate::compress_to_vec(&data, 6);
    assert_eq!(inflate_prefix(&packed, 100).unwrap(), &data[..100]);
    assert_eq!(inflate_prefix(&packed, 1 << 20).unwrap(), data);
    assert!(inflate_prefix(&[0xff; 16], 10).is_err());
}
