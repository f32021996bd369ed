//! ferry's k-quant kernels (q2_k to q6_k, q8_k) against candle's, through candle's public API
//! (`QTensor::quantize`), on real weights: the SmolLM2-135M checkpoint (`ferry_testkit::smollm2`;
//! skipped without it, failed in CI). The synthetic and hostile inputs are in `quant.rs`'s unit
//! tests.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ferry_io::{quant, Checkpoint, DType};

/// candle's bytes for `x` quantized to `ggml`.
fn via_candle(x: &[f32], ggml: GgmlDType) -> Vec<u8> {
    let t = Tensor::from_slice(x, (x.len() / 256, 256), &Device::Cpu).unwrap();
    QTensor::quantize(&t, ggml)
        .unwrap()
        .data()
        .unwrap()
        .into_owned()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Every k-quant type, bit for bit, on the first 2048 super-blocks of a spread of SmolLM2's
/// tensors (embeddings, attention and MLP projections of the first, a middle and the last
/// layer), and the error measured in the same pass equals a dequantize-and-compare.
#[test]
fn k_quants_match_candle_on_smollm2() {
    let Some(dir) = ferry_testkit::smollm2() else {
        return;
    };
    let ck = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let names = [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.15.mlp.down_proj.weight",
        "model.layers.29.mlp.gate_proj.weight",
        "model.layers.29.self_attn.o_proj.weight",
    ];
    let mut x = Vec::new();
    for name in names {
        let t = ck
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} not in SmolLM2"));
        assert_eq!(t.dtype, DType::F32, "{name}");
        let v = f32s(&t.data().unwrap());
        x.extend_from_slice(&v[..v.len().min(256 * 2048) / 256 * 256]);
    }
    for (d, g) in [
        (DType::Q2K, GgmlDType::Q2K),
        (DType::Q3K, GgmlDType::Q3K),
        (DType::Q4K, GgmlDType::Q4K),
        (DType::Q5K, GgmlDType::Q5K),
        (DType::Q6K, GgmlDType::Q6K),
        (DType::Q8K, GgmlDType::Q8K),
    ] {
        let want = via_candle(&x, g);
        let (got, err) = quant::quantize_measured(&x, d).unwrap();
        let bb = d.block_bytes();
        let differ = (0..want.len() / bb)
            .filter(|&b| got[b * bb..(b + 1) * bb] != want[b * bb..(b + 1) * bb])
            .count();
        assert_eq!(
            differ,
            0,
            "{d}: {differ} of {} blocks differ",
            want.len() / bb
        );
        let back = quant::dequantize(&got, d, x.len()).unwrap();
        let sep = quant::error_stats(&x, &back);
        assert_eq!(err.max_abs, sep.max_abs, "{d}");
        assert!(
            (err.rmse - sep.rmse).abs() <= 1e-12 * sep.rmse,
            "{d}: {err:?} {sep:?}"
        );
        assert!(
            (err.cosine - sep.cosine).abs() <= 1e-12,
            "{d}: {err:?} {sep:?}"
        );
    }
}
