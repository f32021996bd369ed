//! Cross-checks with NumPy itself: `.npz` files from `np.savez` / `np.savez_compressed`
//! (Fortran-ordered arrays included) are read by ferry, and ferry's `.npz` / `.npy` are read by
//! `np.load`. Needs a Python with `numpy` (found by `ferry_testkit::python_with`); without one,
//! each test prints `skipped` and passes, unless `FERRY_REQUIRE_PYTHON=1` (CI), where it fails.

use std::borrow::Cow;

use ferry_io::formats::numpy;
use ferry_io::{DType, Metadata, OutTensor};

const PY_SAVE: &str = r#"
import sys, numpy as np
a = np.arange(12, dtype=np.float32).reshape(3, 4)
arrays = dict(
    f32=a, f64=a.astype(np.float64), f16=a.astype(np.float16), i8=np.array([-1, 2], np.int8),
    u8=np.array([255], np.uint8), i16=np.array([-3], np.int16), u16=np.array([65535], np.uint16),
    i32=np.array([[-4]], np.int32), u32=np.array([7], np.uint32), i64=np.array(-5, np.int64),
    u64=np.array([2**63], np.uint64), b=np.array([True, False]), fortran=np.asfortranarray(a),
    empty=np.zeros((0, 3), np.float32), be=np.array([1, -2, 65536], '>i4'))
np.savez(sys.argv[1], **arrays)
np.savez_compressed(sys.argv[2], **arrays)
np.save(sys.argv[3], np.asfortranarray(a.astype(np.int16)))
"#;

#[test]
fn ferry_reads_what_numpy_writes() {
    let Some(py) = ferry_testkit::python_with("numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (plain, packed, single) = (
        dir.path().join("p.npz"),
        dir.path().join("c.npz"),
        dir.path().join("f.npy"),
    );
    ferry_testkit::run_python(&py, PY_SAVE, &[&plain, &packed, &single]);
    let a: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let a_bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    for path in [&plain, &packed] {
        let ck = numpy::open_npz(path).unwrap();
        let get = |n: &str| {
            ck.get(n)
                .unwrap_or_else(|| panic!("{n} missing from {}", path.display()))
        };
        assert_eq!(
            (get("f32").dtype, get("f32").shape.clone()),
            (DType::F32, vec![3, 4])
        );
        assert_eq!(&*get("f32").data().unwrap(), &a_bytes[..]);
        assert_eq!(
            &*get("fortran").data().unwrap(),
            &a_bytes[..],
            "fortran order"
        );
        assert_eq!(get("f64").dtype, DType::F64);
        let be: Vec<u8> = [1i32, -2, 65536]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            (get("be").dtype, &*get("be").data().unwrap()),
            (DType::I32, &be[..]),
            "big-endian"
        );
        assert_eq!(get("f16").dtype, DType::F16);
        assert_eq!(&*get("i8").data().unwrap(), &[255, 2]);
        assert_eq!(&*get("u16").data().unwrap(), &[255, 255]);
        assert_eq!(get("i64").shape, Vec::<usize>::new());
        assert_eq!(&*get("i64").data().unwrap(), &(-5i64).to_le_bytes());
        assert_eq!(&*get("u64").data().unwrap(), &(1u64 << 63).to_le_bytes());
        assert_eq!(
            (get("b").dtype, &*get("b").data().unwrap()),
            (DType::Bool, &[1u8, 0][..])
        );
        assert_eq!(
            (
                get("empty").shape.clone(),
                get("empty").data().unwrap().len()
            ),
            (vec![0, 3], 0)
        );
        for (n, d) in [
            ("u8", DType::U8),
            ("i16", DType::I16),
            ("i32", DType::I32),
            ("u32", DType::U32),
        ] {
            assert_eq!(get(n).dtype, d, "{n}");
        }
    }
    let ck = ferry_io::Checkpoint::open(&single).unwrap();
    let t = &ck.tensors[0];
    assert_eq!(
        (t.name.as_str(), t.dtype, t.shape.clone()),
        ("f", DType::I16, vec![3, 4])
    );
    let want: Vec<u8> = (0..12i16).flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(&*t.data().unwrap(), &want[..]);
}

const PY_LOAD: &str = r#"
import sys, numpy as np
z = np.load(sys.argv[1])
for k in sorted(z.files):
    v = z[k]
    print(k, v.dtype.str, list(v.shape), v.tobytes().hex())
v = np.load(sys.argv[2], mmap_mode="r")
print("npy", v.dtype.str, list(v.shape), np.asarray(v).tobytes().hex())
"#;

#[test]
fn numpy_reads_what_ferry_writes() {
    let Some(py) = ferry_testkit::python_with("numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (npz, npy) = (dir.path().join("o.npz"), dir.path().join("o.npy"));
    let mk = |name: &str, d: DType, shape: Vec<usize>, bytes: Vec<u8>| -> OutTensor<'static> {
        OutTensor::new(name, d, shape, move || Ok(Cow::Owned(bytes.clone())))
    };
    let tensors = vec![
        mk(
            "a.weight",
            DType::F32,
            vec![2, 2],
            [1.0f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        mk("b", DType::Bool, vec![2], vec![0, 1]),
        mk("c", DType::I64, vec![], 42i64.to_le_bytes().to_vec()),
    ];
    numpy::write_npz(&npz, &tensors, &Metadata::new(), &mut |_, _| {}).unwrap();
    numpy::write_npy(&npy, &tensors[0]).unwrap();
    let out = ferry_testkit::run_python(&py, PY_LOAD, &[&npz, &npy]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "a.weight <f4 [2, 2] 0000803f000000400000404000008040",
            "b |b1 [2] 0001",
            "c <i8 [] 2a00000000000000",
            "npy <f4 [2, 2] 0000803f000000400000404000008040",
        ]
    );
}
