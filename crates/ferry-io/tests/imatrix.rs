//! Importance matrices: llama.cpp's GGUF form written and read back byte-stable, every
//! truncation and a few hostile files refused with the file named (never a panic), and
//! quantization with one (candle's weighted k-quant kernels, ferry's weighted q4_0/q4_1/q5_0/
//! q5_1) closer to the original where the matrix says it matters, through `convert` as a user
//! runs it. The weighted q4_0/q4_1/q5_0/q5_1 are compared byte for byte with llama.cpp's own
//! (`scripts/llama_quantize_rows.py`; needs `ferry_testkit::llama_cpp_python`, skipped
//! without it unless `FERRY_REQUIRE_PYTHON=1`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ferry_io::convert::{self, ConvertOptions, ImatrixUse, Plan, TargetFormat};
use ferry_io::imatrix::{self, Imatrix, ImatrixEntry};
use ferry_io::meta::MetaValue;
use ferry_io::{quant, Checkpoint, DType, OutTensor};

/// A deterministic pseudo-random stream in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Importance rising steeply over the columns (a few columns carry most of the input
/// energy, as in real activations).
fn skewed(cols: usize) -> Vec<f32> {
    (0..cols)
        .map(|j| {
            if j % 17 == 0 {
                400.0
            } else {
                0.5 + (j % 5) as f32
            }
        })
        .collect()
}

fn sample_imatrix() -> Imatrix {
    let mut entries = BTreeMap::new();
    entries.insert(
        "blk.0.attn_q.weight".to_string(),
        ImatrixEntry {
            sum_sq: skewed(256).iter().map(|w| w * 10.0).collect(),
            counts: vec![10.0],
        },
    );
    entries.insert(
        "blk.0.ffn_down.weight".to_string(),
        ImatrixEntry {
            sum_sq: vec![3.0; 512],
            counts: vec![3.0],
        },
    );
    let mut extra = BTreeMap::new();
    extra.insert(
        imatrix::KEY_LANGUAGES.to_string(),
        MetaValue::Array(vec![
            MetaValue::String("de".into()),
            MetaValue::String("zh".into()),
        ]),
    );
    Imatrix {
        path: Default::default(),
        entries,
        datasets: vec!["embedded:udhr-train".into()],
        chunk_count: 7,
        chunk_size: 512,
        extra,
    }
}

#[test]
fn writes_llama_cpp_form_and_reads_it_back_byte_stable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    let m = sample_imatrix();
    m.write(&a).unwrap();
    let back = Imatrix::read(&a).unwrap();
    assert_eq!(back.entries, m.entries);
    assert_eq!(back.datasets, m.datasets);
    assert_eq!((back.chunk_count, back.chunk_size), (7, 512));
    assert_eq!(back.languages(), vec!["de", "zh"]);
    assert_eq!(back.path, a);
    back.write(&b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // llama.cpp's layout: ggml [columns, matrices] sums and [1, matrices] counts, f32.
    let ck = Checkpoint::open(&a).unwrap();
    let names: Vec<&str> = ck.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "blk.0.attn_q.weight.in_sum2",
            "blk.0.attn_q.weight.counts",
            "blk.0.ffn_down.weight.in_sum2",
            "blk.0.ffn_down.weight.counts"
        ]
    );
    assert_eq!(ck.tensors[0].shape, vec![1, 256]);
    assert_eq!(ck.tensors[1].shape, vec![1, 1]);
    assert_eq!(
        ck.metadata["general.type"],
        MetaValue::String("imatrix".into())
    );
    assert_eq!(ck.metadata[imatrix::KEY_CHUNK_COUNT], MetaValue::U32(7));
    // The importance is the mean of squares.
    let imp = back
        .importance_for("blk.0.attn_q.weight", 256)
        .unwrap()
        .unwrap();
    assert_eq!(imp, skewed(256));
    let e = back
        .importance_for("blk.0.attn_q.weight", 512)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.gguf") && e.contains("blk.0.attn_q.weight") && e.contains("256 values"),
        "{e}"
    );
    assert!(back
        .importance_for("blk.9.attn_q.weight", 256)
        .unwrap()
        .is_none());
}

#[test]
fn truncated_and_hostile_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    // Small, so that cutting it at every byte stays quick.
    let mut small = sample_imatrix();
    for e in small.entries.values_mut() {
        e.sum_sq.truncate(8);
    }
    small.write(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.gguf");
    let whole = Imatrix::read(&good).unwrap();
    for n in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..n]).unwrap();
        match Imatrix::read(&cut) {
            Err(e) => assert!(e.to_string().contains("cut.gguf"), "at {n}: {e}"),
            // Only the alignment padding after the last tensor was cut.
            Ok(m) => assert!(m.entries == whole.entries && n + 32 > bytes.len(), "at {n}"),
        }
    }
    let write =
        |name: &str, tensors: Vec<OutTensor<'static>>, meta: BTreeMap<String, MetaValue>| {
            let p = dir.path().join(name);
            ferry_io::formats::gguf::write(&p, &tensors, &meta, &mut |_, _| {}).unwrap();
            Imatrix::read(&p).unwrap_err().to_string()
        };
    let f32s = |name: &str, shape: Vec<usize>, v: Vec<f32>| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        OutTensor::new(name, DType::F32, shape, move || Ok(bytes.clone().into()))
    };
    let e = write(
        "nan.gguf",
        vec![
            f32s("w.in_sum2", vec![1, 2], vec![1.0, f32::NAN]),
            f32s("w.counts", vec![1, 1], vec![1.0]),
        ],
        BTreeMap::new(),
    );
    assert!(
        e.contains("nan.gguf") && e.contains("w.in_sum2") && e.contains("finite"),
        "{e}"
    );
    let e = write(
        "lonely.gguf",
        vec![f32s("w.in_sum2", vec![1, 2], vec![1.0, 2.0])],
        BTreeMap::new(),
    );
    assert!(e.contains("lonely.gguf") && e.contains("w.counts"), "{e}");
    let e = write(
        "split.gguf",
        vec![
            f32s("w.in_sum2", vec![1, 3], vec![1.0, 2.0, 3.0]),
            f32s("w.counts", vec![2, 1], vec![1.0, 1.0]),
        ],
        BTreeMap::new(),
    );
    assert!(e.contains("split.gguf") && e.contains("2 matrices"), "{e}");
    let e = write(
        "model.gguf",
        vec![f32s("blk.0.attn_q.weight", vec![1, 2], vec![1.0, 2.0])],
        BTreeMap::from([(
            "general.type".to_string(),
            MetaValue::String("model".into()),
        )]),
    );
    assert!(
        e.contains("model.gguf") && e.contains("not an importance matrix"),
        "{e}"
    );
    let e = write("empty.gguf", vec![], BTreeMap::new());
    assert!(
        e.contains("empty.gguf") && e.contains("no importance-matrix entries"),
        "{e}"
    );
    let e = Imatrix::read(&ferry_testkit::fixture("gguf/tiny.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tiny.gguf") && e.contains("not an importance-matrix tensor"),
        "{e}"
    );
    let dat = dir.path().join("imatrix.dat");
    std::fs::write(&dat, 3i32.to_le_bytes()).unwrap();
    let e = Imatrix::read(&dat).unwrap_err().to_string();
    assert!(
        e.contains("imatrix.dat") && e.contains("legacy .dat"),
        "{e}"
    );
}

/// sum_j importance[j] * sum_rows (a - b)^2: the error llama.cpp's weighted quantization
/// minimizes, the one calibrated inputs see.
fn weighted_error(a: &[f32], b: &[f32], importance: &[f32]) -> f64 {
    let cols = importance.len();
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| f64::from(importance[i % cols]) * f64::from(x - y).powi(2))
        .sum()
}

/// Every type with an importance-weighted kernel.
const WEIGHTED: [DType; 9] = [
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
];

#[test]
fn weighted_quants_cut_the_weighted_error() {
    let (rows, cols) = (16, 512);
    let w = noise(rows * cols, 3);
    let imp = skewed(cols);
    for dtype in WEIGHTED {
        let plain = quant::quantize(&w, dtype).unwrap();
        let (weighted, err) = imatrix::quantize_measured(&w, cols, dtype, &imp).unwrap();
        assert_eq!(weighted.len(), plain.len());
        assert_ne!(weighted, plain, "{dtype}");
        let p = quant::dequantize(&plain, dtype, w.len()).unwrap();
        let q = quant::dequantize(&weighted, dtype, w.len()).unwrap();
        let (ep, eq) = (weighted_error(&w, &p, &imp), weighted_error(&w, &q, &imp));
        assert!(
            eq < 0.9 * ep,
            "{dtype}: weighted error {eq:.4e} vs {ep:.4e} without"
        );
        let want = quant::error_stats(&w, &q);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
        assert!(
            close(err.rmse, want.rmse) && close(err.max_abs, want.max_abs),
            "{dtype}: {err:?} {want:?}"
        );
        assert!(
            (err.cosine - want.cosine).abs() <= 1e-7,
            "{dtype}: {err:?} {want:?}"
        );
        // The same bytes whatever the split into parallel tasks: one row at a time agrees.
        let rowwise: Vec<u8> = w
            .chunks(cols)
            .flat_map(|r| imatrix::quantize_measured(r, cols, dtype, &imp).unwrap().0)
            .collect();
        assert_eq!(rowwise, weighted, "{dtype}");
    }
    // Zero importance over whole blocks (columns a calibration never saw) stays finite.
    let mut holes = skewed(cols);
    holes[..256].iter_mut().for_each(|x| *x = 0.0);
    for dtype in WEIGHTED {
        let (q, e) = imatrix::quantize_measured(&w, cols, dtype, &holes).unwrap();
        let back = quant::dequantize(&q, dtype, w.len()).unwrap();
        assert!(
            back.iter().all(|v| v.is_finite()) && e.cosine > 0.97,
            "{dtype}: {e:?}"
        );
    }
    assert!(WEIGHTED.iter().all(|&d| imatrix::supports(d)));
    assert!(!imatrix::supports(DType::Q8_0) && !imatrix::supports(DType::Q8_1));
    let e = imatrix::quantize_measured(&w, cols, DType::Q8_0, &imp).unwrap_err();
    assert!(
        e.to_string().contains("no importance-weighted kernel"),
        "{e}"
    );
}

/// Rows of `cols` values as they come in real weights, and a few that stress the kernels:
/// noise, noise with outliers (a few values 30x the rest), a tiny-valued row, a row whose first
/// block is all zeros and whose second is constant, a row of one sign (a q4_1/q5_1 minimum
/// above 0), values on the rounding ties of the first scale, and blocks of values near f32's
/// smallest.
fn llama_rows(cols: usize, seed: u64) -> Vec<f32> {
    let mut rows = Vec::new();
    rows.extend(noise(cols, seed));
    let mut spiky = noise(cols, seed + 1);
    for (i, v) in spiky.iter_mut().enumerate() {
        if i % 97 == 5 {
            *v *= 30.0;
        }
    }
    rows.extend(spiky);
    rows.extend(noise(cols, seed + 2).iter().map(|v| v * 1e-4));
    let mut holes = noise(cols, seed + 3);
    holes[..32].iter_mut().for_each(|v| *v = 0.0);
    holes[32..64].iter_mut().for_each(|v| *v = 0.25);
    rows.extend(holes);
    rows.extend(noise(cols, seed + 4).iter().map(|v| v.abs() + 0.5));
    // Multiples of max / 16: with q4_0's first scale (-8 / max), halves of a level.
    rows.extend((0..cols).map(|i| (i % 33) as f32 / 16.0 - 1.0));
    // Blocks spanning less than 4e-38 (q4_1's inverse range overflows) among tiny noise.
    rows.extend(
        noise(cols, seed + 5)
            .iter()
            .enumerate()
            .map(|(i, v)| match i {
                0 => 1e-40,
                1..32 => 0.0,
                32..64 => 1e-38 + (i % 3) as f32 * 1e-39,
                64..96 => -3e-38 * (i % 2) as f32,
                _ => v * 1e-20,
            }),
    );
    rows
}

/// llama.cpp's importance for each column: `skewed`, with zeros at scattered columns and, if
/// `hole`, over the whole block of columns 64..96 (which llama.cpp takes as given).
fn llama_importance(cols: usize, hole: bool) -> Vec<f32> {
    let mut imp = skewed(cols);
    for (j, w) in imp.iter_mut().enumerate() {
        if j % 29 == 3 || (hole && (64..96).contains(&j)) {
            *w = 0.0;
        }
    }
    imp
}

/// llama.cpp's `ggml_quantize_chunk` of `rows` (rows of `importance.len()`) weighted by
/// `importance`, through `scripts/llama_quantize_rows.py`.
fn llama_quantize(
    py: &Path,
    dir: &Path,
    dtype: DType,
    rows: &[f32],
    importance: &[f32],
) -> Vec<u8> {
    let cols = importance.len();
    let npy = |name: &str, shape: Vec<usize>, v: &[f32]| {
        let path = dir.join(name);
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = OutTensor::new(name, DType::F32, shape, move || Ok(bytes.clone().into()));
        ferry_io::formats::numpy::write_npy(&path, &t).unwrap();
        path
    };
    let rows_path = npy("rows.npy", vec![rows.len() / cols, cols], rows);
    let imp_path = npy("importance.npy", vec![cols], importance);
    let out = dir.join("llama.bin");
    let script = ferry_testkit::repo_root().join("scripts/llama_quantize_rows.py");
    let status = std::process::Command::new(py)
        .arg(&script)
        .args(["--type", &dtype.to_string(), "--rows"])
        .arg(&rows_path)
        .arg("--importance")
        .arg(&imp_path)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "{} failed: {status}", script.display());
    std::fs::read(out).unwrap()
}

#[test]
fn weighted_legacy_quants_are_llama_cpp_s_byte_for_byte() {
    let Some(py) = ferry_testkit::llama_cpp_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (cols, seed) in [(576, 11), (1536, 23)] {
        let rows = llama_rows(cols, seed);
        for dtype in [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1] {
            let kernel = quant::weighted::kernel(dtype).unwrap();
            let bytes = |n: usize| n / 32 * dtype.block_bytes();
            // The kernel, with the importance as given (zeros too), is llama.cpp's exactly.
            for hole in [false, true] {
                let imp = llama_importance(cols, hole);
                let want = llama_quantize(&py, dir.path(), dtype, &rows, &imp);
                let mut got = vec![0u8; bytes(rows.len())];
                kernel(&rows, &imp, &mut got);
                assert_eq!(got.len(), want.len(), "{dtype} {cols}");
                if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                    let b = i / dtype.block_bytes();
                    panic!(
                        "{dtype}, rows of {cols}, hole {hole}: block {b} (row {}, column {}) \
                         differs from llama.cpp's: {:02x?} vs {:02x?}",
                        b / (cols / 32),
                        b % (cols / 32) * 32,
                        &got[b * dtype.block_bytes()..(b + 1) * dtype.block_bytes()],
                        &want[b * dtype.block_bytes()..(b + 1) * dtype.block_bytes()],
                    );
                }
                // The way `convert` quantizes (zeros raised to a tiny floor, parallel over
                // rows): the same bytes wherever a block has columns of real importance.
                let (measured, _) = imatrix::quantize_measured(&rows, cols, dtype, &imp).unwrap();
                if !hole {
                    assert_eq!(measured, want, "{dtype} {cols}: quantize_measured");
                    continue;
                }
                let block_bytes = dtype.block_bytes();
                for (b, (m, w)) in measured
                    .chunks(block_bytes)
                    .zip(want.chunks(block_bytes))
                    .enumerate()
                {
                    if b % (cols / 32) != 2 {
                        assert_eq!(m, w, "{dtype} {cols}: block {b} of quantize_measured");
                    }
                }
            }
        }
    }
}

/// A GGUF with llama.cpp-named matrices, as `convert` reads it.
fn write_model(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let tensors = vec![
        (
            "blk.0.attn_q.weight".to_string(),
            vec![8, 256],
            noise(8 * 256, 1),
        ),
        (
            "blk.0.ffn_down.weight".to_string(),
            vec![4, 512],
            noise(4 * 512, 2),
        ),
        (
            "blk.0.attn_norm.weight".to_string(),
            vec![256],
            noise(256, 4),
        ),
    ];
    let outs: Vec<OutTensor<'_>> = tensors
        .iter()
        .map(|(n, s, v)| {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            OutTensor::new(n.clone(), DType::F32, s.clone(), move || {
                Ok(bytes.clone().into())
            })
        })
        .collect();
    ferry_io::formats::gguf::write(path, &outs, &BTreeMap::new(), &mut |_, _| {}).unwrap();
    tensors
}

/// Converts `src` to `dst` with `opts`; returns the plan.
fn convert_with(src: &Path, dst: &Path, opts: &ConvertOptions) -> ferry_io::Result<Plan> {
    let ck = Checkpoint::open(src)?;
    let plan = Plan::new(&ck, TargetFormat::Gguf, opts)?;
    let meta = convert::output_metadata(&ck, &plan)?;
    convert::write(&plan, &ck, dst, &meta, None, &mut |_, _| {})?;
    Ok(plan)
}

#[test]
fn convert_quantizes_with_the_matrix_where_it_has_entries() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.gguf");
    let tensors = write_model(&src);
    let im_path = dir.path().join("imatrix.gguf");
    sample_imatrix().write(&im_path).unwrap();
    let im = Arc::new(Imatrix::read(&im_path).unwrap());
    let plain_opts = ConvertOptions {
        quant: Some(DType::Q4K),
        ..ConvertOptions::default()
    };
    let with_opts = ConvertOptions {
        imatrix: Some(im.clone()),
        ..plain_opts.clone()
    };
    let (plain, with) = (dir.path().join("plain.gguf"), dir.path().join("with.gguf"));
    convert_with(&src, &plain, &plain_opts).unwrap();
    let plan = convert_with(&src, &with, &with_opts).unwrap();
    let (used, no_kernel) = plan.imatrix_uses();
    let used: Vec<&str> = used.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(used, ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"]);
    assert!(no_kernel.is_empty());
    assert_ne!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&with).unwrap()
    );
    let (p, w) = (
        Checkpoint::open(&plain).unwrap(),
        Checkpoint::open(&with).unwrap(),
    );
    let get = |ck: &Checkpoint, name: &str| {
        let t = ck.get(name).unwrap();
        quant::dequantize(&t.data().unwrap(), t.dtype, t.numel() as usize).unwrap()
    };
    let (orig_q, imp) = (&tensors[0].2, skewed(256));
    let e_plain = weighted_error(orig_q, &get(&p, "blk.0.attn_q.weight"), &imp);
    let e_with = weighted_error(orig_q, &get(&w, "blk.0.attn_q.weight"), &imp);
    assert!(e_with < 0.9 * e_plain, "{e_with:.4e} vs {e_plain:.4e}");
    // llama-quantize's provenance keys.
    let meta = &w.metadata;
    assert_eq!(
        meta["quantize.imatrix.file"],
        MetaValue::String("imatrix.gguf".into())
    );
    assert_eq!(
        meta["quantize.imatrix.dataset"],
        MetaValue::String("embedded:udhr-train".into())
    );
    assert_eq!(meta["quantize.imatrix.entries_count"], MetaValue::U32(2));
    assert_eq!(meta["quantize.imatrix.chunks_count"], MetaValue::U32(7));
    assert!(!p.metadata.contains_key("quantize.imatrix.file"));

    // q8_0 has no weighted kernel: the entries are noted, the output is plain q8_0's.
    let q8 = ConvertOptions {
        quant: Some(DType::Q8_0),
        ..with_opts.clone()
    };
    let plan = convert_with(&src, &dir.path().join("q8.gguf"), &q8).unwrap();
    assert_eq!(plan.imatrix_uses().1.len(), 2);
    assert!(plan
        .entries
        .iter()
        .all(|e| e.imatrix != Some(ImatrixUse::Used)));

    // A matrix made for another model: wrong width, or no name in common.
    let mut other = sample_imatrix();
    other
        .entries
        .get_mut("blk.0.ffn_down.weight")
        .unwrap()
        .sum_sq = vec![1.0; 256];
    let other_path = dir.path().join("other.gguf");
    other.write(&other_path).unwrap();
    let opts = ConvertOptions {
        imatrix: Some(Arc::new(Imatrix::read(&other_path).unwrap())),
        ..plain_opts.clone()
    };
    let e = convert_with(&src, &dir.path().join("x.gguf"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("other.gguf")
            && e.contains("blk.0.ffn_down.weight")
            && e.contains("512 input columns"),
        "{e}"
    );
    let mut foreign = sample_imatrix();
    foreign.entries = BTreeMap::from([(
        "blk.7.ffn_up.weight".to_string(),
        ImatrixEntry {
            sum_sq: vec![1.0; 64],
            counts: vec![1.0],
        },
    )]);
    let foreign_path = dir.path().join("foreign.gguf");
    foreign.write(&foreign_path).unwrap();
    let opts = ConvertOptions {
        imatrix: Some(Arc::new(Imatrix::read(&foreign_path).unwrap())),
        ..plain_opts.clone()
    };
    let e = convert_with(&src, &dir.path().join("y.gguf"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("foreign.gguf") && e.contains("none of the importance matrix's 1 entries"),
        "{e}"
    );
    let opts = ConvertOptions {
        quant: None,
        ..with_opts
    };
    let e = convert_with(&src, &dir.path().join("z.gguf"), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("quantizes no tensor"), "{e}");
}
