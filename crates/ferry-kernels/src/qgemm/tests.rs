use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::*;

/// Seeded values in about [-1, 1], some rows scaled up so blocks differ in range.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if (i / 97) % 5 == 0 {
                4.0 * u
            } else {
                u
            }
        })
        .collect()
}

const TYPES: [GgmlDType; 7] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
];

/// candle's quantization of an `n x k` matrix: its bytes and its dequantization.
fn quantized(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let w = Tensor::from_vec(values(n * k, seed), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let deq = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    (bytes, deq)
}

#[test]
fn blocks_read_back_exactly_what_ggml_dequantizes_to() {
    for dtype in TYPES {
        let (n, k) = (40, 512);
        let (bytes, want) = quantized(dtype, n, k, 7);
        let p = PackedQ8::pack(dtype, &bytes, n, k).expect("a supported type");
        assert_eq!(p.dequantize(), want, "{dtype:?}");
        // What the memory model predicts is what it holds (40 features pad to 2 panels).
        assert_eq!(
            packed_bytes(dtype, n, k),
            Some(p.lines.len() * 64),
            "{dtype:?}"
        );
    }
    // Types with two scales per 32 elements, and malformed inputs, are refused.
    let (bytes, _) = quantized(GgmlDType::Q6K, 4, 256, 1);
    assert!(PackedQ8::pack(GgmlDType::Q6K, &bytes, 4, 256).is_none());
    assert_eq!(packed_bytes(GgmlDType::Q6K, 4, 256), None);
    assert_eq!(packed_bytes(GgmlDType::Q4K, 4, 96), None);
    let (bytes, _) = quantized(GgmlDType::Q8_0, 4, 64, 1);
    assert!(PackedQ8::pack(GgmlDType::Q8_0, &bytes[1..], 4, 64).is_none());
    assert!(PackedQ8::pack(GgmlDType::Q8_0, &bytes, 4, 96).is_none());
}

#[test]
fn activations_round_as_llama_cpp_q8_0() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
    let q = quantize_rows(&x, 1, 64, ActQuant::Q8_0);
    for b in 0..2 {
        let xs = &x[b * 32..(b + 1) * 32];
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        assert_eq!(q.d[b], half::f16::from_f32(d).to_f32(), "d is kept in f16");
        let mut sum = 0;
        for (i, &v) in xs.iter().enumerate() {
            let want = (v / d).round_ties_even() as i32;
            // One rounding of x * (1 / d) against x / d may differ by one at a tie.
            assert!((q.q[b * 32 + i] as i32 - 128 - want).abs() <= 1);
            sum += q.q[b * 32 + i] as i32 - 128;
        }
        assert_eq!(q.dsum[b], half::f16::from_f32(d * sum as f32).to_f32());
        assert!(q.q[b * 32..(b + 1) * 32]
            .iter()
            .any(|&u| u == 1 || u == 255));
    }
    let zeros = quantize_rows(&[0.0; 32], 1, 32, ActQuant::Q8_0);
    assert_eq!((zeros.d[0], zeros.q[0]), (0.0, 128));
}

#[test]
fn k_quant_activations_are_llama_cpps_q8_k() {
    // The signed value of largest magnitude sets the scale: a positive maximum gives a
    // negative d, and its element -127.
    let mut x: Vec<f32> = (0..256)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
        .collect();
    x[3] = 2.0;
    let q = quantize_rows(&x, 1, 256, ActQuant::Q8K);
    let iscale = -127.0f32 / 2.0;
    assert_eq!(q.q[3] as i32 - 128, -127);
    assert!(q.d.iter().all(|&d| d == 1.0 / iscale));
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(
            q.q[i] as i32 - 128,
            ((iscale * v).round_ties_even() as i32).min(127)
        );
    }
    let sum0: i32 = q.q[..32].iter().map(|&u| u as i32 - 128).sum();
    assert_eq!(q.dsum[0], q.d[0] * sum0 as f32);
}

#[test]
fn the_kernel_matches_its_f64_twin_and_the_float_product() {
    if !available() {
        eprintln!("skipped: no int8 kernels on this CPU (neither AVX-512 VNNI nor AVX2 and FMA)");
        return;
    }
    // 13 rows (two full tiles and a 1-row one, across two tasks' row blocks with m = 53),
    // 40 features (a full panel and an 8-wide one).
    for dtype in TYPES {
        for m in [13, 53] {
            let (n, k) = (40, 512);
            let (bytes, deq) = quantized(dtype, n, k, 3);
            let w = PackedQ8::from_ggml(dtype, &bytes, n, k).unwrap();
            let x = values(m * k, 11);
            let bias = values(n, 5);
            let got = qgemm(m, &x, &w, Some(&bias));
            let want = qgemm_reference(m, &x, &w, Some(&bias));
            let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
            for (g, w_) in got.iter().zip(&want) {
                assert!(
                    ((*g as f64) - w_).abs() <= 1e-5 * scale,
                    "{dtype:?} m={m}: {g} vs {w_}"
                );
            }
            // Against the unquantized activations: the 8-bit rounding of x is all that differs.
            let mut err = 0f64;
            let mut norm = 0f64;
            for r in 0..m {
                for f in 0..n {
                    let exact: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * deq[f * k + i] as f64)
                        .sum::<f64>()
                        + bias[f] as f64;
                    err += (got[r * n + f] as f64 - exact).powi(2);
                    norm += exact.powi(2);
                }
            }
            let rel = (err / norm).sqrt();
            assert!(rel < 1e-2, "{dtype:?}: relative error {rel}");
        }
    }
}

#[test]
fn the_kernel_agrees_with_candles_quantized_matmul() {
    if !available() {
        eprintln!("skipped: no int8 kernels on this CPU (neither AVX-512 VNNI nor AVX2 and FMA)");
        return;
    }
    use candle_core::Module;
    // candle (as llama.cpp) quantizes the activations too, the same way as here (q8_0 blocks
    // of 32, q8_K blocks of 256 for the k-quants), so only the summation order differs. Not
    // q4_1/q5_1: for their q8_1 activations candle rounds `s = d * sum(q)` as f16(sum) *
    // f16(d) in f16, where llama.cpp (and ferry) round the f32 product once.
    let same = [
        GgmlDType::Q4_0,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
    ];
    for dtype in same {
        let (m, n, k) = (7, 40, 256);
        let wt = Tensor::from_vec(values(n * k, 9), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, dtype).unwrap();
        let bytes = q.data().unwrap().to_vec();
        let w = PackedQ8::from_ggml(dtype, &bytes, n, k).unwrap();
        let x = values(m * k, 4);
        let got = qgemm(m, &x, &w, None);
        let mm = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let want: Vec<f32> = mm
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(worst <= 1e-5 * scale, "{dtype:?}: {worst} of {scale}");
    }
}

#[test]
fn vector_activation_quantization_equals_the_scalar_form() {
    let (m, k) = (5, 512);
    let mut x = values(m * k, 21);
    x[300..332].fill(0.0); // a zero block of 32
    x[2 * k..2 * k + 256].fill(0.0); // a zero super-block
    x[k + 7] = -9.0; // a negative maximum
    for how in [ActQuant::Q8_0, ActQuant::Q8K] {
        let (v, s) = (
            quantize_rows(&x, m, k, how),
            activations::quantize_rows_scalar(&x, m, k, how),
        );
        assert_eq!(v.q, s.q, "{how:?}");
        assert_eq!(v.d, s.d, "{how:?}");
        assert_eq!(v.dsum, s.dsum, "{how:?}");
    }
}

/// What both builds of the tile compute, element by element in f32: per block the exact
/// integer dot, then `y = fma(dot * s, dx, y)` and, with offsets, `y = fma(o, dsum, y)`, from the
/// bias (or 0). The kernels must give these bits.
fn qgemm_f32_twin(m: usize, x: &[f32], w: &PackedQ8, bias: Option<&[f32]>) -> Vec<f32> {
    let xq = quantize_rows(&x[..m * w.k], m, w.k, w.act);
    let nb = w.k / 32;
    let mut out = vec![0f32; m * w.n];
    for f in 0..w.n {
        let blocks = w.feature_blocks(f);
        for r in 0..m {
            let mut y = bias.map_or(0.0, |b| b[f]);
            for (b, blk) in blocks.iter().enumerate() {
                let dot = block_dot(&xq.q[r * w.k + b * 32..][..32], &blk.q);
                // |dot| <= 32 * 127 * 128 < 2^24: exact in f32.
                y = (dot as f32 * blk.s).mul_add(xq.d[r * nb + b], y);
                if w.offsets {
                    y = blk.o.mul_add(xq.dsum[r * nb + b], y);
                }
            }
            out[r * w.n + f] = y;
        }
    }
    out
}

/// q8_0 bytes of an `n x k` matrix whose blocks hold only `lo` and `hi` (scale 0.5): features of
/// one value and mixed ones.
fn two_valued_q8_0(n: usize, k: usize, lo: i8, hi: i8) -> Vec<u8> {
    let mut bytes = Vec::new();
    for f in 0..n {
        for b in 0..k / 32 {
            bytes.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
            bytes.extend((0..32).map(|i| {
                let v = match f % 3 {
                    0 => hi,
                    1 => lo,
                    _ if (i + f + b) % 3 == 0 => lo,
                    _ => hi,
                };
                v as u8
            }));
        }
    }
    bytes
}

#[test]
fn every_build_gives_the_f32_twins_bits() {
    if !available() {
        eprintln!("skipped: no int8 kernels on this CPU (neither AVX-512 VNNI nor AVX2 and FMA)");
        return;
    }
    let f = crate::cpu::features();
    let mut builds = vec![vnni()];
    if vnni() && f.avx2 && f.fma {
        builds.push(false);
    }
    // 53 rows (a 6-row tile's 3 + 3 and 2 + 0 sub-tiles, two tasks' row blocks), 52 features
    // (a full panel and a 20-wide one: a partial second half).
    let (m, n, k) = (53, 52, 512);
    // Rows of +1 and of -1 (stored as 255 and 1, the ends of the unsigned activations: with a
    // feature of one weight value they bring every 16-bit sum to its bound), and random rows.
    let random = values(m * k, 19);
    let x: Vec<f32> = (0..m * k)
        .map(|i| match (i / k) % 3 {
            0 => 1.0,
            1 => -1.0,
            _ => random[i],
        })
        .collect();
    let bias = values(n, 23);
    let mut cases: Vec<(String, PackedQ8)> = TYPES
        .iter()
        .map(|&dtype| {
            let (bytes, _) = quantized(dtype, n, k, 17);
            (
                format!("{dtype:?}"),
                PackedQ8::from_ggml(dtype, &bytes, n, k).unwrap(),
            )
        })
        .collect();
    // Each product the AVX2 build picks by the largest |q|, at its bound and one past it.
    for (lo, hi) in [
        (-16i8, 16i8),
        (-17, 17),
        (-32, 32),
        (-33, 33),
        (-64, 64),
        (-65, 65),
        (-128, 127),
    ] {
        let bytes = two_valued_q8_0(n, k, lo, hi);
        let w = PackedQ8::from_ggml(GgmlDType::Q8_0, &bytes, n, k).unwrap();
        cases.push((format!("q8_0 of {lo} and {hi}"), w));
    }
    for (name, w) in &cases {
        let want = qgemm_f32_twin(m, &x, w, Some(&bias));
        for &on_vnni in &builds {
            let got = qgemm_on(m, &x, w, Some(&bias), on_vnni);
            let diff = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                diff, 0,
                "{name}, VNNI build {on_vnni}: {diff} outputs differ from the twin"
            );
        }
    }
}
