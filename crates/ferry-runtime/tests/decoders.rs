//! Llama-family decoders against transformers: the tiny Mistral, Qwen2 and grouped-query Llama
//! in `fixtures/decoders/` (made by `scripts/make_tiny_decoders.py`), their logits and every
//! tap (embedding, each block, final norm) at real-token positions of a right-padded batch,
//! from the folder and from the GGUF ferry writes of it (llama.cpp's names and layouts:
//! Mistral and Llama as `llama` with the rotary Q/K rows permuted, Qwen2 as `qwen2` without).
//!
//! The gguf-py checks need a Python with `gguf` (found by `ferry_testkit::python_with`);
//! without one they print `skipped` and pass, unless `FERRY_REQUIRE_PYTHON=1`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferry_runtime::config::DecoderConfig;
use ferry_runtime::{ArchConfig, Kernels, Model};
use serde_json::Value;
use support::{
    assert_llama_cpp_names, assert_read_back_exactly, copy_tensors, gguf_of, gguf_py_report,
    gguf_read_back, load, max_err, python_json, read_json, reference, rel_err, right_padded_inputs,
    second_row_alone,
};

/// Largest error allowed, relative to the largest magnitude of the reference (absolute where
/// that is under 1).
const TOL: f32 = 1e-4;

/// The fixtures: Mistral (GQA, untied head), Qwen2 (Q/K/V biases, tied head), Llama (8 heads
/// over 2 KV heads, head_dim 8 with hidden 32, attention biases, untied head).
const MODELS: [&str; 3] = ["mistral", "qwen2", "llama-gqa"];

/// The fixture folder `fixtures/decoders/<name>`, whose `reference.npz` holds `input_ids`,
/// `attention_mask`, `logits`, `hidden_states_<i>`, `last_block_output` (and Mistral's
/// `logits_sliding_window_4`).
fn dir(name: &str) -> PathBuf {
    ferry_testkit::fixture(&format!("decoders/{name}"))
}

fn config_json(name: &str) -> Value {
    read_json(&dir(name).join("config.json"))
}

fn decoder_config(model: &Model) -> DecoderConfig {
    match &model.config {
        ArchConfig::Decoder(c) => c.clone(),
        other => panic!("not a decoder: {}", other.name()),
    }
}

/// What transformers computed for ferry's taps: `hidden_states_0 ..= hidden_states_{n-1}`
/// (the embedding, then blocks 0..n-1), the last block's output (transformers' hidden states
/// skip it), and `hidden_states_n` (the final norm).
fn expected_taps(r: &HashMap<String, Tensor>, layers: usize) -> Vec<(String, &Tensor)> {
    let mut want: Vec<(String, &Tensor)> = (0..layers)
        .map(|i| {
            let k = format!("hidden_states_{i}");
            let t = &r[&k];
            (k, t)
        })
        .collect();
    want.push(("last_block_output".into(), &r["last_block_output"]));
    let k = format!("hidden_states_{layers}");
    let t = &r[&k];
    want.push((k, t));
    want
}

/// Runs `model` on `name`'s reference batch and checks its logits and every tap against
/// transformers; returns the largest relative errors (logits, taps).
fn check(model: &Model, name: &str, what: &str) -> (f32, f32) {
    let r = reference(&dir(name));
    assert!(model.is_decoder(), "{what}");
    let cfg = decoder_config(model);
    let (ids, mask) = right_padded_inputs(&r);
    let out = model.forward(&ids, Some(&mask), true).unwrap();
    let layers = r.keys().filter(|k| k.starts_with("hidden_states_")).count() - 1;
    assert_eq!(cfg.layers, layers, "{what}");
    assert_eq!(
        out.taps.len(),
        layers + 2,
        "{what}: embedding, each block, final norm"
    );
    let logits = rel_err(&out.values, &r["logits"], &mask);
    assert!(logits <= TOL, "{what}: logits off by {logits:e} (relative)");
    let mut taps = 0f32;
    for (tap, (key, want)) in out.taps.iter().zip(expected_taps(&r, layers)) {
        let e = rel_err(tap, want, &mask);
        assert!(e <= TOL, "{what}: tap {key} off by {e:e} (relative)");
        taps = taps.max(e);
    }
    // Without taps: the same logits, no taps.
    let plain = model.forward(&ids, Some(&mask), false).unwrap();
    assert!(plain.taps.is_empty());
    assert_eq!(max_err(&plain.values, &out.values, &mask), 0.0, "{what}");
    (logits, taps)
}

/// The folder computes what transformers does; its configuration is the one the fixture was
/// made with (rope_theta from transformers 5's `rope_parameters`, not the 10000 default).
fn family(name: &str) {
    let model = load(&dir(name));
    assert_eq!(model.config.name(), "llama-family decoder");
    let c = decoder_config(&model);
    let want = match name {
        "mistral" => (4, 2, 8, false, false),
        "qwen2" => (4, 2, 8, true, true),
        "llama-gqa" => (8, 2, 8, false, true),
        _ => unreachable!(),
    };
    assert_eq!(
        (c.heads, c.kv_heads, c.head_dim, c.tied, c.qkv_bias),
        want,
        "{name}"
    );
    assert_eq!((c.hidden, c.intermediate, c.vocab), (32, 64, 512), "{name}");
    assert_eq!((c.rope_theta, c.rms_eps), (50000.0, 1e-6), "{name}");
    let (logits, taps) = check(&model, name, name);
    eprintln!("{name}: max relative error vs transformers: logits {logits:e}, every tap {taps:e}");
}

#[test]
fn mistral_matches_transformers_block_by_block() {
    family("mistral");
}

#[test]
fn qwen2_matches_transformers_block_by_block() {
    family("qwen2");
}

#[test]
fn llama_gqa_matches_transformers_block_by_block() {
    family("llama-gqa");
}

/// A row run alone and the same row right-padded in a batch give the same logits at its
/// tokens (the causal mask hides the padding from real tokens; the padding mask is checked to
/// keep padded positions finite).
#[test]
fn right_padding_does_not_move_real_tokens() {
    for name in MODELS {
        let r = reference(&dir(name));
        let model = load(&dir(name));
        let (ids, mask) = right_padded_inputs(&r);
        let (_, batch, e) = second_row_alone(&model, &ids, &mask);
        let all: Vec<f32> = batch.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            all.iter().all(|x| x.is_finite()),
            "{name}: non-finite logits"
        );
        assert!(e <= 1e-5, "{name}: padding moved the real tokens by {e:e}");
    }
}

/// A mask that does not match the ids is an error naming both sizes, not a panic.
#[test]
fn a_mask_of_the_wrong_size_is_an_error() {
    for name in MODELS {
        let r = reference(&dir(name));
        let model = load(&dir(name));
        let (ids, mask) = right_padded_inputs(&r);
        let short = mask.narrow(1, 0, mask.dim(1).unwrap() - 1).unwrap();
        let err = model
            .forward(&ids, Some(&short), false)
            .err()
            .expect("an error");
        assert!(err.to_string().contains("attention mask"), "{name}: {err}");
    }
}

/// A copy of the fixture folder `name` in `out`: `config.json` edited by `edit`, and the
/// tensors `drop` returns true for left out.
fn copy_with(name: &str, out: &Path, edit: impl Fn(&mut Value), drop: impl Fn(&str) -> bool) {
    let mut cfg = config_json(name);
    edit(&mut cfg);
    std::fs::write(out.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    copy_tensors(&dir(name), out, |k| (!drop(k)).then(|| k.to_string()));
}

/// The fixtures are sensitive to the rotary base: the same weights run with transformers'
/// default 10000 instead of the folder's 50000 are far off (so a runtime that missed
/// `rope_parameters.rope_theta` would fail the tests above).
#[test]
fn a_wrong_rope_theta_is_clearly_off() {
    for name in MODELS {
        let r = reference(&dir(name));
        let tmp = tempfile::tempdir().unwrap();
        copy_with(
            name,
            tmp.path(),
            |c| c["rope_parameters"]["rope_theta"] = 10000.0.into(),
            |_| false,
        );
        let model = load(tmp.path());
        assert_eq!(decoder_config(&model).rope_theta, 10000.0);
        let (ids, mask) = right_padded_inputs(&r);
        let out = model.forward(&ids, Some(&mask), false).unwrap();
        let e = rel_err(&out.values, &r["logits"], &mask);
        eprintln!("{name}: rope_theta 10000 instead of 50000 moves the logits by {e:e} (relative)");
        assert!(e > 1e-2, "{name}: rope_theta made no difference ({e:e})");
    }
}

/// Qwen2's Q/K/V biases are required: a checkpoint without one is an error naming it, not a
/// model silently run without it. Without the biases' effect the logits are far off.
#[test]
fn a_missing_qwen2_bias_fails_loudly() {
    for missing in [
        "model.layers.1.self_attn.k_proj.bias",
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.v_proj.bias",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        copy_with("qwen2", tmp.path(), |_| {}, |k| k == missing);
        let err = match Model::load(tmp.path(), &Device::Cpu, Kernels::F32) {
            Ok(_) => panic!("loaded without {missing}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("`{missing}`")) && err.contains("missing"),
            "{missing} not named: {err}"
        );
    }
    // The biases matter: the same weights labelled as a Llama without them are far off.
    let r = reference(&dir("qwen2"));
    let tmp = tempfile::tempdir().unwrap();
    copy_with(
        "qwen2",
        tmp.path(),
        |c| c["model_type"] = "llama".into(),
        |k| k.ends_with("_proj.bias"),
    );
    let model = load(tmp.path());
    assert!(!decoder_config(&model).qkv_bias);
    let (ids, mask) = right_padded_inputs(&r);
    let out = model.forward(&ids, Some(&mask), false).unwrap();
    let e = rel_err(&out.values, &r["logits"], &mask);
    assert!(e > 1e-2, "qwen2: the biases made no difference ({e:e})");
}

/// A config whose head grouping does not fit the weights fails at load, naming the tensor.
#[test]
fn a_wrong_kv_head_count_fails_loudly() {
    let tmp = tempfile::tempdir().unwrap();
    copy_with(
        "llama-gqa",
        tmp.path(),
        |c| c["num_key_value_heads"] = 8.into(),
        |_| false,
    );
    let err = match Model::load(tmp.path(), &Device::Cpu, Kernels::F32) {
        Ok(_) => panic!("loaded with 8 KV heads"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("model.layers.0.self_attn.k_proj") && err.contains("shape"),
        "{err}"
    );
}

/// Mistral's sliding window: with `sliding_window` 4 in the config, each query sees itself and
/// the 3 keys before it, as transformers computes (`logits_sliding_window_4`, same weights).
/// The fixture's own window (4096) is longer than its batch, so it changes nothing there.
#[test]
fn mistral_sliding_window_is_transformers() {
    let r = reference(&dir("mistral"));
    let tmp = tempfile::tempdir().unwrap();
    copy_with(
        "mistral",
        tmp.path(),
        |c| c["sliding_window"] = 4.into(),
        |_| false,
    );
    let model = load(tmp.path());
    let (ids, mask) = right_padded_inputs(&r);
    let out = model.forward(&ids, Some(&mask), false).unwrap();
    let e = rel_err(&out.values, &r["logits_sliding_window_4"], &mask);
    assert!(
        e <= TOL,
        "mistral: sliding window 4 off by {e:e} (relative)"
    );
    let full = rel_err(&r["logits"], &r["logits_sliding_window_4"], &mask);
    assert!(full > 1e-2, "the window makes no difference ({full:e})");
}

/// Qwen2's sliding-window layers (`use_sliding_window`) are not run by the runtime: refused by
/// name rather than run as full attention.
#[test]
fn qwen2_sliding_window_layers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_with(
        "qwen2",
        tmp.path(),
        |c| {
            c["use_sliding_window"] = true.into();
            c["sliding_window"] = 4.into();
            c["max_window_layers"] = 1.into();
            c["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]);
        },
        |_| false,
    );
    let err = match Model::load(tmp.path(), &Device::Cpu, Kernels::F32) {
        Ok(_) => panic!("loaded with sliding-window layers"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("sliding"), "{err}");
}

// ---- GGUF -------------------------------------------------------------------------------

/// What llama.cpp's converter makes of the folder (`convert_hf_to_gguf.py`: `LlamaModel` for
/// Llama and Mistral, permuting Q/K weights and biases with `LlamaModel.permute`; `Qwen2Model`
/// for Qwen2, no permutation; names from gguf-py's `TensorNameMap`): the `arch` and `expected`
/// of [`support::gguf_py_report`].
const PY_EXPECTED: &str = r#"
# convert_hf_to_gguf.py: MistralForCausalLM and LlamaForCausalLM are LlamaModel (`llama`),
# Qwen2ForCausalLM is Qwen2Model (`qwen2`, no undo_permute).
arch = gguf.MODEL_ARCH.QWEN2 if mt == "qwen2" else gguf.MODEL_ARCH.LLAMA
blocks = cfg["num_hidden_layers"]
tmap = gguf.get_tensor_name_map(arch, blocks)
n_head = cfg["num_attention_heads"]
n_kv = cfg.get("num_key_value_heads", n_head)

def permute(w, n_head, n_head_kv):
    # LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

expected = {}
for name, arr in load_file(folder + "/model.safetensors").items():
    if arch == gguf.MODEL_ARCH.LLAMA:
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            arr = permute(arr, n_head, n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            arr = permute(arr, n_head, n_kv)
    new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
    if new is None:
        raise SystemExit(f"gguf-py has no {arch.name} name for {name}")
    expected[new] = arr
"#;

/// Every tensor ferry writes has the name llama.cpp's converter gives it, with its values
/// (Q/K rows permuted for `llama`, not for `qwen2`), and the metadata is llama.cpp's.
#[test]
fn gguf_names_and_tensors_are_llama_cpps() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy, safetensors") else {
        return;
    };
    for name in MODELS {
        let tmp = tempfile::tempdir().unwrap();
        let path = gguf_of(&dir(name), tmp.path(), None);
        let v = gguf_py_report(&py, PY_EXPECTED, &dir(name), &path);
        assert_llama_cpp_names(&v, name, &v["arch"].to_string());
        let tensors = assert_read_back_exactly(&v, name);
        for (t, ty) in v["types"].as_object().unwrap() {
            assert_eq!(ty, "F32", "{name}: {t}");
        }
        // Qwen2's tied head is token_embd (no output.weight); the others have their own.
        let has_output = v["got"]
            .as_array()
            .unwrap()
            .contains(&"output.weight".into());
        assert_eq!(has_output, name != "qwen2", "{name}: output.weight");

        let meta = &v["meta"];
        let cfg = config_json(name);
        let arch = v["arch"].as_str().unwrap();
        let want_arch = if name == "qwen2" { "qwen2" } else { "llama" };
        assert_eq!(arch, want_arch, "{name}");
        assert_eq!(meta["general.architecture"], want_arch, "{name}");
        let key = |k: &str| &meta[format!("{arch}.{k}")];
        for (k, c) in [
            ("context_length", "max_position_embeddings"),
            ("embedding_length", "hidden_size"),
            ("block_count", "num_hidden_layers"),
            ("feed_forward_length", "intermediate_size"),
            ("attention.head_count", "num_attention_heads"),
            ("attention.head_count_kv", "num_key_value_heads"),
        ] {
            assert_eq!(key(k).as_u64(), cfg[c].as_u64(), "{name}: {arch}.{k}");
        }
        // llama.cpp's LlamaModel writes `llama.vocab_size` from config.json (Qwen2Model writes
        // none); ferry writes it from the tokenizer's token count, so a folder without
        // tokenizer.json (these fixtures) gets none. Where there is one, it is the vocabulary.
        if let Some(n) = key("vocab_size").as_u64() {
            assert_eq!(
                Some(n),
                cfg["vocab_size"].as_u64(),
                "{name}: {arch}.vocab_size"
            );
        }
        // head_dim 8 everywhere (hidden / heads for Mistral and Qwen2; explicit for Llama,
        // whose 8 heads of 8 are not hidden 32 / 8). llama.cpp writes key/value_length only
        // from an explicit head_dim (transformers 5 writes one for Mistral and Llama).
        assert_eq!(key("rope.dimension_count").as_u64(), Some(8), "{name}");
        let explicit = cfg.get("head_dim").and_then(Value::as_u64);
        assert_eq!(key("attention.key_length").as_u64(), explicit, "{name}");
        assert_eq!(key("attention.value_length").as_u64(), explicit, "{name}");
        let theta = key("rope.freq_base").as_f64().unwrap();
        assert_eq!(theta, 50000.0, "{name}: rope.freq_base");
        let eps = key("attention.layer_norm_rms_epsilon").as_f64().unwrap();
        assert!((eps - 1e-6).abs() < 1e-12, "{name}: eps {eps}");
        eprintln!("{name}: {tensors} tensors, llama.cpp's `{arch}` names");
    }
}

/// ferry's runtime computes from the f32 GGUF (read back through llama.cpp's names, Q/K rows
/// put back for `llama`) the logits and taps transformers computes from the folder.
#[test]
fn the_gguf_computes_what_transformers_does() {
    for name in MODELS {
        let folder = load(&dir(name));
        let tmp = tempfile::tempdir().unwrap();
        let model = load(&gguf_of(&dir(name), tmp.path(), None));
        assert_eq!(model.format, "gguf", "{name}");
        let (a, b) = (decoder_config(&folder), decoder_config(&model));
        assert_eq!(
            (
                a.hidden,
                a.intermediate,
                a.layers,
                a.heads,
                a.kv_heads,
                a.head_dim
            ),
            (
                b.hidden,
                b.intermediate,
                b.layers,
                b.heads,
                b.kv_heads,
                b.head_dim
            ),
            "{name}"
        );
        assert_eq!((a.vocab, a.tied), (b.vocab, b.tied), "{name}");
        assert_eq!(b.rope_theta, 50000.0, "{name}");
        assert!(
            (b.rms_eps - 1e-6).abs() < 1e-12,
            "{name}: eps {}",
            b.rms_eps
        );
        let layout = model
            .layout
            .as_ref()
            .expect("read back through llama.cpp's names");
        assert!(layout.unknown.is_empty(), "{name}: {:?}", layout.unknown);
        let permuted = layout
            .renamed
            .iter()
            .filter(|(_, _, p)| p.is_some())
            .count();
        // Q and K weights (and Llama's biases) of 2 blocks; Qwen2 is not permuted.
        let want = match name {
            "mistral" => 4,
            "llama-gqa" => 8,
            _ => 0,
        };
        assert_eq!(permuted, want, "{name}: permuted tensors");
        let (logits, taps) = check(&model, name, &format!("{name} GGUF"));
        eprintln!(
            "{name}: f32 GGUF, max relative error vs transformers: logits {logits:e}, \
             every tap {taps:e}"
        );
    }
}

/// The GGUF written back to a Hugging Face folder (`config.json` from the GGUF's keys) computes
/// the same in ferry's runtime.
#[test]
fn the_gguf_read_back_to_a_folder_computes_the_same() {
    for name in MODELS {
        let tmp = tempfile::tempdir().unwrap();
        let back = gguf_read_back(&dir(name), tmp.path());
        let cfg = read_json(&back.join("config.json"));
        let want = if name == "qwen2" { "qwen2" } else { "llama" };
        assert_eq!(cfg["model_type"], want, "{name}");
        assert_eq!(cfg["rope_theta"], 50000.0, "{name}");
        let model = load(&back);
        check(&model, name, &format!("{name} read back"));
    }
}

/// transformers' own GGUF loader reads ferry's Mistral and Qwen2 GGUFs (un-permuting Q/K for
/// `llama`) and computes the reference logits. (Not the Llama fixture: transformers' GGUF
/// config has no `attention_bias`, so it would leave that model's biases out.) The fixtures
/// have no tokenizer, so the GGUFs have no vocabulary to size the embedding from: the
/// vocabulary size is passed in.
#[test]
fn transformers_runs_the_gguf() {
    let Some(py) = ferry_testkit::python_with("torch, transformers, gguf, numpy") else {
        return;
    };
    const PY: &str = r#"
import sys, json, os, numpy as np, torch
from transformers import AutoModelForCausalLM
path, ref = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             vocab_size=512)
model.eval()
r = np.load(ref)
with torch.no_grad():
    out = model(input_ids=torch.tensor(r["input_ids"]), attention_mask=torch.tensor(r["attention_mask"]))
m = r["attention_mask"].astype(bool)
want = r["logits"][m]
err = float(np.max(np.abs(out.logits.numpy()[m] - want)) / max(1.0, float(np.max(np.abs(want)))))
print(json.dumps({"class": type(model).__name__, "err": err,
                  "rope_theta": model.config.rope_parameters["rope_theta"]}))
"#;
    // A `llama` GGUF whose `general.name` is exactly `mistral` (ferry names it after the
    // folder) is read by transformers as its `mistral` GGUF type, which gguf-py does not map:
    // the Mistral folder is copied to another name first (llama.cpp's own Mistral GGUFs are
    // `llama`, read as LlamaForCausalLM).
    for (name, class) in [
        ("mistral", "LlamaForCausalLM"),
        ("qwen2", "Qwen2ForCausalLM"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join(format!("tiny-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        copy_with(name, &src, |_| {}, |_| false);
        let path = gguf_of(&src, &tmp.path().join("gguf"), None);
        let v = python_json(&py, PY, &[&path, &dir(name).join("reference.npz")]);
        assert_eq!(v["class"], class, "{name}");
        assert_eq!(v["rope_theta"], 50000.0, "{name}");
        let e = v["err"].as_f64().unwrap();
        assert!(
            e <= 1e-4,
            "{name}: transformers on ferry's GGUF off by {e:e}"
        );
        eprintln!("{name}: transformers' GGUF loader on ferry's GGUF: {e:e} (relative)");
    }
}
