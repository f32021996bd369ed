//! Activation statistics for calibration (`Model::forward_collecting`) on the tiny decoders
//! and encoders of `fixtures/`: the output is the plain forward's, every linear layer has an
//! entry with its input width, padding is not counted, and the first projection's sums are
//! what its input (the normed embedding) gives by hand.

mod support;

use candle_core::{DType, Device, Tensor};
use ferry_runtime::ActivationStats;
use support::{inputs, load, max_err, reference};

fn real_tokens(mask: &Tensor) -> u64 {
    mask.to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as u64
}

/// Checks the entries of `stats` against `expect` (weight name suffix after the block
/// prefix, input columns) for `layers` blocks named `prefix{i}.`, all with `count` rows.
fn check_entries(
    stats: &ActivationStats,
    prefix: &str,
    layers: usize,
    expect: &[(&str, usize)],
    count: u64,
) {
    for i in 0..layers {
        for (stem, cols) in expect {
            let name = format!("{prefix}{i}.{stem}.weight");
            let e = stats
                .entries()
                .get(&name)
                .unwrap_or_else(|| panic!("no entry for {name}"));
            assert_eq!(e.sum_sq.len(), *cols, "{name}: columns");
            assert_eq!(e.count, count, "{name}: rows");
            assert!(
                e.sum_sq.iter().all(|v| v.is_finite() && *v > 0.0),
                "{name}: sums finite and positive"
            );
        }
    }
}

#[test]
fn decoder_statistics_cover_every_projection_and_skip_padding() {
    for (name, untied) in [("llama-gqa", true), ("qwen2", false), ("mistral", true)] {
        let dir = ferry_testkit::fixture(&format!("decoders/{name}"));
        let model = load(&dir);
        let (ids, mask) = inputs(&reference(&dir));
        let plain = model.forward(&ids, Some(&mask), false).unwrap();
        let mut stats = ActivationStats::new();
        let seen = model
            .forward_collecting(&ids, Some(&mask), &mut stats)
            .unwrap();
        assert_eq!(max_err(&seen.values, &plain.values, &mask), 0.0, "{name}");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let get = |k: &str| cfg[k].as_u64().unwrap() as usize;
        let (h, ff, heads) = (
            get("hidden_size"),
            get("intermediate_size"),
            get("num_attention_heads"),
        );
        let head_dim = cfg["head_dim"].as_u64().map_or(h / heads, |d| d as usize);
        let n = real_tokens(&mask);
        let expect = [
            ("self_attn.q_proj", h),
            ("self_attn.k_proj", h),
            ("self_attn.v_proj", h),
            ("self_attn.o_proj", heads * head_dim),
            ("mlp.gate_proj", h),
            ("mlp.up_proj", h),
            ("mlp.down_proj", ff),
        ];
        let layers = get("num_hidden_layers");
        check_entries(&stats, "model.layers.", layers, &expect, n);
        assert_eq!(
            stats.entries().contains_key("lm_head.weight"),
            untied,
            "{name}: an untied head is observed, a tied one is not"
        );
        assert_eq!(
            stats.entries().len(),
            layers * expect.len() + usize::from(untied)
        );
        let e = &stats.entries();
        let q = &e["model.layers.0.self_attn.q_proj.weight"];
        assert_eq!(
            q, &e["model.layers.0.self_attn.v_proj.weight"],
            "same input"
        );

        // By hand: block 0's Q/K/V input is the RMS-normed embedding of the real tokens.
        let w =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let eps = cfg["rms_norm_eps"].as_f64().unwrap() as f32;
        let x = w["model.embed_tokens.weight"]
            .embedding(&ids.flatten_all().unwrap())
            .unwrap();
        let normed =
            candle_nn::ops::rms_norm(&x, &w["model.layers.0.input_layernorm.weight"], eps).unwrap();
        let keep: Vec<u32> = mask.flatten_all().unwrap().to_vec1().unwrap();
        let rows: Vec<Vec<f32>> = normed.to_vec2().unwrap();
        let mut want = vec![0f64; h];
        for (row, _) in rows.iter().zip(&keep).filter(|(_, &k)| k == 1) {
            for (s, v) in want.iter_mut().zip(row) {
                *s += f64::from(*v) * f64::from(*v);
            }
        }
        for (a, b) in q.sum_sq.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{name}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn encoder_statistics_compose_the_same_blocks() {
    for name in ["bert", "distilbert", "xlm-roberta"] {
        let dir = ferry_testkit::fixture(&format!("encoders/{name}"));
        let model = load(&dir);
        let (ids, mask) = inputs(&reference(&dir));
        let plain = model.forward(&ids, Some(&mask), false).unwrap();
        let mut stats = ActivationStats::new();
        let seen = model
            .forward_collecting(&ids, Some(&mask), &mut stats)
            .unwrap();
        // The composed blocks compute what candle-transformers' BertLayer does.
        let e = max_err(&seen.values, &plain.values, &mask);
        assert!(e <= 1e-6, "{name}: composed blocks differ by {e:e}");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let get = |k: &[&str]| {
            k.iter()
                .find_map(|k| cfg[*k].as_u64())
                .unwrap_or_else(|| panic!("{name}: no {k:?}")) as usize
        };
        let h = get(&["hidden_size", "dim"]);
        let ff = get(&["intermediate_size", "hidden_dim"]);
        let layers = get(&["num_hidden_layers", "n_layers"]);
        let expect = [
            ("attention.self.query", h),
            ("attention.self.key", h),
            ("attention.self.value", h),
            ("attention.output.dense", h),
            ("intermediate.dense", h),
            ("output.dense", ff),
        ];
        check_entries(
            &stats,
            "encoder.layer.",
            layers,
            &expect,
            real_tokens(&mask),
        );
        assert_eq!(stats.entries().len(), layers * expect.len(), "{name}");
        // A second pass adds to the same sums.
        let before = stats.clone();
        model
            .forward_collecting(&ids, Some(&mask), &mut stats)
            .unwrap();
        for (k, v) in before.entries() {
            let now = &stats.entries()[k];
            assert_eq!(now.count, 2 * v.count);
            assert!(now
                .sum_sq
                .iter()
                .zip(&v.sum_sq)
                .all(|(a, b)| (a - 2.0 * b).abs() <= 1e-9 * b));
        }
    }
}
