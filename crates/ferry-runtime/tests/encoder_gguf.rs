//! GGUF output of the BERT-family encoders as llama.cpp's `convert_hf_to_gguf.py` writes them
//! (`DistilBertModel`, `XLMRobertaModel`, and `BertModel` as the baseline; all `bert`), on the
//! tiny fixtures in `fixtures/encoders/`:
//!
//! - every tensor name is the one gguf-py's `TensorNameMap` gives for `MODEL_ARCH.BERT`, and
//!   gguf-py's `GGUFReader` reads every tensor back to the Hugging Face values (XLM-RoBERTa's
//!   positions without their first `pad_token_id + 1` rows);
//! - ferry's runtime computes from the GGUF (f32, and q8_0 dequantized) the last hidden state
//!   transformers computes from the folder, at the real tokens of a right-padded batch, and so
//!   does the GGUF written back to a Hugging Face folder (BERT's names and `config.json`).
//!
//! The gguf-py checks need a Python with `gguf` (found by `ferry_testkit::python_with`);
//! without one they print `skipped` and pass, unless `FERRY_REQUIRE_PYTHON=1`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use ferry_io::{Checkpoint, DType};
use ferry_runtime::Model;
use serde_json::Value;
use support::{
    all_real, assert_llama_cpp_names, assert_read_back_exactly, gguf_of, gguf_py_report,
    gguf_read_back, inputs, load, max_err, python_json, read_json, reference, right_padded_inputs,
    second_row_alone,
};

/// The fixtures, with the `model_type` each is.
const FIXTURES: [&str; 3] = ["distilbert", "xlm-roberta", "bert"];

/// The fixture folder `fixtures/encoders/<name>`.
fn dir(name: &str) -> PathBuf {
    ferry_testkit::fixture(&format!("encoders/{name}"))
}

/// What llama.cpp's converter makes of the folder (its filters and gguf-py's
/// `TensorNameMap` for `MODEL_ARCH.BERT`): the `arch` and `expected` of
/// [`support::gguf_py_report`].
const PY_EXPECTED: &str = r#"
arch = gguf.MODEL_ARCH.BERT
blocks = cfg.get("num_hidden_layers", cfg.get("n_layers"))
tmap = gguf.get_tensor_name_map(arch, blocks)
offset = cfg.get("pad_token_id", 1) + 1 if mt in ("xlm-roberta", "roberta") else 0
expected = {}
for name, arr in load_file(folder + "/model.safetensors").items():
    # convert_hf_to_gguf.py: the subclass strips its prefix, BertModel strips `bert.` and
    # drops position_ids, the pooler and the pretraining heads; DistilBERT drops `vocab_*`.
    n = name
    prefix = {"distilbert": "distilbert.", "xlm-roberta": "roberta.", "roberta": "roberta."}.get(mt)
    if prefix and n.startswith(prefix):
        n = n[len(prefix):]
    if n.startswith("bert."):
        n = n[5:]
    if n in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
        continue
    if n.startswith(("cls.predictions", "cls.seq_relationship")):
        continue
    if mt == "distilbert" and n.startswith("vocab_"):
        continue
    new = tmap.get_name(n, try_suffixes=(".weight", ".bias"))
    if new is None:
        raise SystemExit(f"gguf-py has no MODEL_ARCH.BERT name for {n}")
    if n == "embeddings.position_embeddings.weight" and offset:
        arr = arr[offset:]
    expected[new] = arr
"#;

/// gguf-py's report ([`support::gguf_py_report`] with [`PY_EXPECTED`]) on `gguf`, written from
/// the fixture `name`.
fn py_check(py: &Path, name: &str, gguf: &Path) -> Value {
    gguf_py_report(py, PY_EXPECTED, &dir(name), gguf)
}

/// Every tensor ferry writes has the name llama.cpp's converter gives it, gguf-py reads every
/// one back to the folder's values, and the metadata is llama.cpp's `bert`.
#[test]
fn gguf_names_and_tensors_are_llama_cpps() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy, safetensors") else {
        return;
    };
    for name in FIXTURES {
        let tmp = tempfile::tempdir().unwrap();
        let path = gguf_of(&dir(name), tmp.path(), None);
        let v = py_check(&py, name, &path);
        assert_llama_cpp_names(&v, name, "MODEL_ARCH.BERT");
        let tensors = assert_read_back_exactly(&v, name);

        let meta = &v["meta"];
        let cfg = read_json(&dir(name).join("config.json"));
        let get = |k: &str| cfg.get(k).and_then(Value::as_u64);
        let (hidden, layers, heads, ff) = match name {
            "distilbert" => (
                get("dim"),
                get("n_layers"),
                get("n_heads"),
                get("hidden_dim"),
            ),
            _ => (
                get("hidden_size"),
                get("num_hidden_layers"),
                get("num_attention_heads"),
                get("intermediate_size"),
            ),
        };
        assert_eq!(meta["general.architecture"], "bert", "{name}");
        assert_eq!(meta["bert.embedding_length"].as_u64(), hidden, "{name}");
        assert_eq!(meta["bert.block_count"].as_u64(), layers, "{name}");
        assert_eq!(meta["bert.attention.head_count"].as_u64(), heads, "{name}");
        assert_eq!(meta["bert.feed_forward_length"].as_u64(), ff, "{name}");
        assert_eq!(meta["bert.attention.causal"], false, "{name}");
        let eps = meta["bert.attention.layer_norm_epsilon"].as_f64().unwrap();
        assert!((eps - 1e-12).abs() < 1e-15, "{name}: eps {eps}");
        // llama.cpp sizes position_embd by the context length, token_types by the count.
        let offset = if name == "xlm-roberta" { 2 } else { 0 };
        let ctx = get("max_position_embeddings").unwrap() - offset;
        assert_eq!(meta["bert.context_length"].as_u64(), Some(ctx), "{name}");
        let types = if name == "bert" { 2 } else { 1 };
        assert_eq!(
            meta["tokenizer.ggml.token_type_count"].as_u64(),
            Some(types),
            "{name}"
        );
        let has_types = v["got"]
            .as_array()
            .unwrap()
            .contains(&"token_types.weight".into());
        assert_eq!(has_types, name != "distilbert", "{name}: token_types");
        eprintln!("{name}: {tensors} tensors, llama.cpp's names");
    }
}

/// gguf-py reads every tensor of the q8_0 files too: the blocks gguf-py's own `quantize` makes
/// of the folder's values.
#[test]
fn gguf_py_reads_the_q8_0_files() {
    let Some(py) = ferry_testkit::python_with("gguf, numpy, safetensors") else {
        return;
    };
    for name in ["distilbert", "xlm-roberta"] {
        let tmp = tempfile::tempdir().unwrap();
        let path = gguf_of(&dir(name), tmp.path(), Some(DType::Q8_0));
        let v = py_check(&py, name, &path);
        assert_eq!(v["got"], v["expected"], "{name}: tensor names");
        let types = v["types"].as_object().unwrap();
        assert_eq!(types["blk.0.attn_q.weight"], "Q8_0", "{name}");
        assert_eq!(types["position_embd.weight"], "Q8_0", "{name}");
        for (t, e) in v["errors"].as_object().unwrap() {
            assert_eq!(
                e.as_f64(),
                Some(0.0),
                "{name}: {t} is not gguf-py's q8_0 ({e})"
            );
        }
    }
}

/// Runs `model` on the reference batch (right-padded: its second row ends in padding);
/// returns the largest error against transformers' last hidden state over real tokens, and
/// over every hidden state (taps).
fn errors(model: &Model, r: &HashMap<String, Tensor>) -> (f32, f32) {
    let (ids, mask) = right_padded_inputs(r);
    let out = model.forward(&ids, Some(&mask), true).unwrap();
    let last = max_err(&out.values, &r["last_hidden_state"], &mask);
    let mut taps = last;
    for (i, tap) in out.taps.iter().enumerate() {
        taps = taps.max(max_err(tap, &r[&format!("hidden_states_{i}")], &mask));
    }
    (last, taps)
}

/// ferry's runtime computes from the GGUF what transformers computes from the folder: f32
/// within 1e-4 at every layer, q8_0 (dequantized, `Kernels::F32`) within its rounding, the
/// folder itself as the baseline. XLM-RoBERTa's GGUF counts positions from 0 over rows that
/// start at `pad_token_id + 1`: at real tokens of a right-padded batch that is transformers'
/// RoBERTa position.
#[test]
fn the_gguf_computes_what_the_folder_does() {
    for name in FIXTURES {
        let dir = dir(name);
        let r = reference(&dir);
        let (base, _) = errors(&load(&dir), &r);

        let tmp = tempfile::tempdir().unwrap();
        let model = load(&gguf_of(&dir, &tmp.path().join("f32"), None));
        assert_eq!(model.config.name(), "bert encoder", "{name}");
        let (last, taps) = errors(&model, &r);
        assert!(last <= 1e-4, "{name}: f32 GGUF off by {last:e}");
        assert!(
            taps <= 1e-4,
            "{name}: f32 GGUF hidden states off by {taps:e}"
        );

        let q8 = load(&gguf_of(&dir, &tmp.path().join("q8"), Some(DType::Q8_0)));
        let (q8_last, _) = errors(&q8, &r);
        // The fixtures' weights reach ~1, so q8_0's rounding moves these hidden states by
        // several 1e-2 (see `q8_0_gguf_computes_what_transformers_does_with_q8_0_weights` for
        // the tight check); a wrong name, position or table moves them by far more.
        assert!(q8_last <= 0.15, "{name}: q8_0 GGUF off by {q8_last:e}");
        eprintln!(
            "{name}: max abs error vs transformers: folder {base:e}, f32 GGUF {last:e} \
             (every layer {taps:e}), q8_0 GGUF {q8_last:e}"
        );
    }
}

/// A row run alone and the same row right-padded in a batch give the same hidden states at
/// its tokens, from the GGUF as from the folder.
#[test]
fn right_padding_does_not_move_real_tokens() {
    for name in ["xlm-roberta", "distilbert"] {
        let r = reference(&dir(name));
        let tmp = tempfile::tempdir().unwrap();
        let model = load(&gguf_of(&dir(name), tmp.path(), None));
        let (ids, mask) = inputs(&r);
        let (alone, _, e) = second_row_alone(&model, &ids, &mask);
        assert!(e <= 1e-5, "{name}: padding moved the real tokens by {e:e}");
        let n = alone.dim(1).unwrap();
        let want = r["last_hidden_state"]
            .get(1)
            .unwrap()
            .narrow(0, 0, n)
            .unwrap();
        let e = max_err(&alone, &want.unsqueeze(0).unwrap(), &all_real(n));
        assert!(e <= 1e-4, "{name}: the unpadded row off by {e:e}");
    }
}

/// The GGUF written back to a Hugging Face folder (BERT's names, `config.json` from the GGUF's
/// keys; DistilBERT's missing token types as a zero table) computes the same in ferry's runtime.
#[test]
fn the_gguf_read_back_to_a_folder_computes_the_same() {
    for name in ["distilbert", "xlm-roberta"] {
        let r = reference(&dir(name));
        let tmp = tempfile::tempdir().unwrap();
        let back = gguf_read_back(&dir(name), tmp.path());
        let cfg = read_json(&back.join("config.json"));
        assert_eq!(cfg["model_type"], "bert", "{name}");
        assert_eq!(cfg["type_vocab_size"], 1, "{name}");
        let ck = Checkpoint::open(back.join("model.safetensors")).unwrap();
        let types = ck.get("embeddings.token_type_embeddings.weight").unwrap();
        assert_eq!(types.shape[0], 1, "{name}");
        let pos = ck.get("embeddings.position_embeddings.weight").unwrap();
        assert_eq!(
            Some(pos.shape[0] as u64),
            cfg["max_position_embeddings"].as_u64()
        );
        let (last, taps) = errors(&load(&back), &r);
        assert!(
            last <= 1e-4 && taps <= 1e-4,
            "{name}: read back off by {taps:e}"
        );
    }
}

/// transformers' own `BertModel` loads the folder read back from the GGUF (no missing or
/// unexpected weight) and computes the reference hidden states at real tokens.
#[test]
fn transformers_runs_the_folder_read_back() {
    let Some(py) = ferry_testkit::python_with("torch, transformers, numpy") else {
        return;
    };
    const PY: &str = r#"
import sys, json, numpy as np, torch
from transformers import AutoModel
folder, ref = sys.argv[1], sys.argv[2]
model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
model.eval()
r = np.load(ref)
with torch.no_grad():
    out = model(input_ids=torch.tensor(r["input_ids"]), attention_mask=torch.tensor(r["attention_mask"]))
h = out.last_hidden_state.numpy()
m = r["attention_mask"].astype(bool)
err = float(np.max(np.abs(h[m] - r["last_hidden_state"][m])))
# The pooler is not part of the hidden states (llama.cpp's BERT has none).
missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
print(json.dumps({"class": type(model).__name__, "err": err,
                  "missing": missing, "unexpected": sorted(info["unexpected_keys"])}))
"#;
    for name in ["distilbert", "xlm-roberta"] {
        let tmp = tempfile::tempdir().unwrap();
        let back = gguf_read_back(&dir(name), tmp.path());
        let v = python_json(&py, PY, &[&back, &dir(name).join("reference.npz")]);
        assert_eq!(v["class"], "BertModel", "{name}");
        assert_eq!(v["missing"], serde_json::json!([]), "{name}");
        assert_eq!(v["unexpected"], serde_json::json!([]), "{name}");
        let e = v["err"].as_f64().unwrap();
        assert!(
            e <= 1e-4,
            "{name}: transformers on the folder read back off by {e:e}"
        );
    }
}

/// The q8_0 GGUF (dequantized, `Kernels::F32`) computes within 1e-4 what transformers computes
/// from the folder with every matrix rounded through gguf-py's own q8_0 (`quantize` then
/// `dequantize`): the only difference from the folder is llama.cpp's quantization.
#[test]
fn q8_0_gguf_computes_what_transformers_does_with_q8_0_weights() {
    let Some(py) = ferry_testkit::python_with("torch, transformers, gguf, numpy") else {
        return;
    };
    const PY: &str = r#"
import sys, numpy as np, torch, gguf
from transformers import AutoModel
folder, ref, out = sys.argv[1], sys.argv[2], sys.argv[3]
model = AutoModel.from_pretrained(folder)
model.eval()
q8 = gguf.GGMLQuantizationType.Q8_0
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.ndim >= 2 and p.shape[-1] % 32 == 0:
            w = p.detach().numpy().astype(np.float32)
            p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, q8), q8).reshape(w.shape)))
    r = np.load(ref)
    h = model(input_ids=torch.tensor(r["input_ids"]),
              attention_mask=torch.tensor(r["attention_mask"])).last_hidden_state
np.save(out, h.numpy().astype(np.float32))
"#;
    for name in FIXTURES {
        let dir = dir(name);
        let r = reference(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let want = tmp.path().join("q8.npy");
        let npz = dir.join("reference.npz");
        ferry_testkit::run_python(&py, PY, &[&dir, &npz, &want]);
        let want = Tensor::read_npy(&want).unwrap();
        let model = load(&gguf_of(&dir, &tmp.path().join("q8"), Some(DType::Q8_0)));
        let (ids, mask) = inputs(&r);
        let got = model.forward(&ids, Some(&mask), false).unwrap().values;
        let e = max_err(&got, &want, &mask);
        assert!(
            e <= 1e-4,
            "{name}: q8_0 GGUF off by {e:e} from q8_0-rounded transformers"
        );
        eprintln!("{name}: q8_0 GGUF vs transformers with q8_0-rounded weights: {e:e}");
    }
}
