//! The consumer is the judge: ferry's runtime against transformers (PyTorch) on the real
//! SmolLM2-135M and all-MiniLM-L6-v2, in 8 languages and 5 scripts; ferry's GGUF files loaded
//! by gguf-py, by transformers' GGUF loader and by llama.cpp itself, and their outputs compared
//! with the original.

use std::path::Path;

use candle_core::{Device, Tensor};
use ferry_io::convert::{self, ConvertOptions, Plan, TargetFormat};
use ferry_io::{Checkpoint, DType};
use ferry_runtime::{Kernels, Model, Tokenizer};
use ferry_testkit as tk;
use ferry_verify::probes::{self, ProbeOptions};
use ferry_verify::stats::{self, DecoderStats, TokenStat};

/// Latin (en, de, fr), Cyrillic (ru), Han (zh), Arabic (ar), Devanagari (hi), Japanese (ja).
const LANGS: &[&str] = &["en", "de", "fr", "ru", "zh", "ar", "hi", "ja"];
const MAX_TOKENS: usize = 48;
const SCRIPT: &str = include_str!("../../../scripts/runtime_reference.py");

fn texts() -> Vec<String> {
    let opts = ProbeOptions {
        languages: LANGS.iter().map(|s| s.to_string()).collect(),
        limit: Some(1),
    };
    probes::embedded(&opts)
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .collect()
}

/// transformers' outputs per text: (token ids, rows of logits or hidden states).
type Reference = Vec<(Vec<u32>, Vec<Vec<f32>>)>;

fn reference(py: &Path, model: &Path, gguf: Option<&Path>, dir: &Path, tag: &str) -> Reference {
    let texts = texts();
    let tf = dir.join("texts.json");
    std::fs::write(&tf, serde_json::to_string(&texts).unwrap()).unwrap();
    let out = dir.join(format!("{tag}.npz"));
    let max = MAX_TOKENS.to_string();
    let mut args: Vec<&Path> = vec![model, &tf, &out, Path::new("--max-tokens"), Path::new(&max)];
    if let Some(g) = gguf {
        args.extend([Path::new("--gguf"), g]);
    }
    tk::run_python(py, SCRIPT, &args);
    let ck = Checkpoint::open(&out).unwrap();
    (0..texts.len())
        .map(|i| {
            let cpu = Device::Cpu;
            let ids = ck
                .get(&format!("ids_{i}"))
                .unwrap()
                .to_candle(&cpu)
                .unwrap();
            let ids: Vec<u32> = ids
                .to_dtype(candle_core::DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let out = ck
                .get(&format!("out_{i}"))
                .unwrap()
                .to_candle(&cpu)
                .unwrap();
            (ids, out.to_vec2().unwrap())
        })
        .collect()
}

fn run(model: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let x = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    let out = model.forward(&x, None, false).unwrap();
    out.values.squeeze(0).unwrap().to_vec2().unwrap()
}

/// max |a - b| / max |b| over all elements.
fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut d, mut m) = (0f64, 0f64);
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (&x, &y) in ra.iter().zip(rb) {
            d = d.max((x as f64 - y as f64).abs());
            m = m.max((y as f64).abs());
        }
    }
    d / m
}

fn decoder_stats(a: &Reference, b: &[Vec<Vec<f32>>]) -> DecoderStats {
    let mut toks: Vec<TokenStat> = Vec::new();
    for ((ids, ra), rb) in a.iter().zip(b) {
        for (t, (x, y)) in ra.iter().zip(rb).enumerate() {
            toks.push(stats::token_stat(x, y, ids.get(t + 1).copied()));
        }
    }
    DecoderStats::from_tokens(&toks)
}

/// Per-tensor types mixed into SmolLM2's q4_k files, as `--quant auto` chooses them: every
/// GGML type ferry writes appears in one file, which each consumer must read tensor by tensor.
const MIXED: &[(DType, &str)] = &[
    (DType::Q8_0, r"attn_v"),
    (DType::Q6K, r"blk\.[0-9]\.ffn_down"),
    (DType::Q5K, r"blk\.1[0-9]\.ffn_down"),
    (DType::Q3K, r"blk\.2[0-4]\.ffn_down"),
    (DType::Q5_1, r"attn_output"),
    (DType::Q4_1, r"ffn_(gate|up)"),
    (DType::F16, r"blk\.0\.attn_q"),
    (DType::Q4_0, r"blk\.29\.attn_k"),
];

/// ferry convert, as the CLI does it: llama.cpp names and layouts for a known architecture.
fn to_gguf(src: &Path, dst: &Path, quant: Option<DType>) {
    to_gguf_mixed(src, dst, quant, &[]);
}

/// [`to_gguf`] with per-tensor types (`--quant-rule TYPE:REGEX`, what `--quant auto` writes).
fn to_gguf_mixed(src: &Path, dst: &Path, quant: Option<DType>, rules: &[(DType, &str)]) {
    let ck = Checkpoint::open(src).unwrap();
    let (ck, layout) = convert::prepare(ck, TargetFormat::Gguf, false).unwrap();
    let opts = ConvertOptions {
        quant,
        quant_rules: rules
            .iter()
            .map(|&(dtype, pattern)| ferry_io::convert::DTypeRule {
                dtype,
                pattern: regex::Regex::new(pattern).unwrap(),
            })
            .collect(),
        ..ConvertOptions::default()
    };
    let mut plan = Plan::new(&ck, TargetFormat::Gguf, &opts).unwrap();
    plan.layout = layout;
    let meta = convert::output_metadata(&ck, &plan).unwrap();
    convert::write(&plan, &ck, dst, &meta, None, &mut |_, _| {}).unwrap();
}

/// ferry convert GGUF -> safetensors in `dir`: Hugging Face names and layouts back, with the
/// `config.json` derived from the GGUF's metadata and the original's tokenizer beside it.
fn from_gguf(gguf: &Path, dir: &Path, tokenizer_from: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ck = Checkpoint::open(gguf).unwrap();
    let (ck, layout) = convert::prepare(ck, TargetFormat::Safetensors, false).unwrap();
    let mut plan = Plan::new(&ck, TargetFormat::Safetensors, &ConvertOptions::default()).unwrap();
    plan.layout = layout;
    let meta = convert::output_metadata(&ck, &plan).unwrap();
    let out = dir.join("model.safetensors");
    convert::write(&plan, &ck, &out, &meta, None, &mut |_, _| {}).unwrap();
    assert!(convert::write_hf_config(&ck, &plan, dir).unwrap().is_some());
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer_from.join(f), dir.join(f)).unwrap();
    }
}

/// gguf-py reads every tensor of `path` (dequantizing each) and returns the tensor names.
fn gguf_py_names(py: &Path, path: &Path) -> Vec<String> {
    let script = r#"
import sys
from gguf import GGUFReader
from gguf.quants import dequantize
r = GGUFReader(sys.argv[1])
for t in r.tensors:
    v = dequantize(t.data, t.tensor_type)
    assert v.size == int(t.n_elements), t.name
    print(t.name)
"#;
    tk::run_python(py, script, &[path])
        .lines()
        .map(str::to_string)
        .collect()
}

fn tokenizer_agrees(model_dir: &Path, refs: &Reference) {
    ids_agree(
        &Tokenizer::from_file(&model_dir.join("tokenizer.json")).unwrap(),
        refs,
    );
}

/// `tok` gives the token ids transformers gave, text by text.
fn ids_agree(tok: &Tokenizer, refs: &Reference) {
    for (text, (ids, _)) in texts().iter().zip(refs) {
        assert_eq!(&tok.encode(text, Some(MAX_TOKENS)).unwrap(), ids, "{text}");
    }
}

/// `model` (its f32 folder) through ferry's runtime gives what transformers gives, at every
/// position of every language, from the same token ids; returns transformers' outputs.
fn original_matches_transformers(py: &Path, dir: &Path, tmp: &Path) -> Reference {
    let refs = reference(py, dir, None, tmp, "f32");
    tokenizer_agrees(dir, &refs);
    let model = Model::load(dir, &Device::Cpu, Kernels::Ggml).unwrap();
    matches_within(&model, &refs, 1e-4, "f32");
    refs
}

/// Every output of `model` within `rel` (relative to the largest value) of `refs`.
fn matches_within(model: &Model, refs: &Reference, rel: f64, what: &str) {
    for (i, (ids, want)) in refs.iter().enumerate() {
        let e = rel_err(&run(model, ids), want);
        assert!(e < rel, "{what} {}: max relative error {e:.2e}", LANGS[i]);
    }
}

#[test]
fn smollm2_matches_transformers_and_its_gguf_loads_in_gguf_py_and_transformers() {
    let (Some(py), Some(dir)) = (
        tk::python_with("torch, transformers, gguf, accelerate"),
        tk::smollm2(),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let refs = original_matches_transformers(&py, &dir, tmp.path());

    // q8_0: the issue's bound (gguf-py's own q8_0 of these weights gives about 0.003 / 0.95).
    // q4_k: most of SmolLM2's rows (576) take llama.cpp's q5_0 fallback; these weights are
    // already a dequantized Q4_1, so a second 4-5-bit rounding costs more than on a trained
    // f32 model: measured 0.18 / 0.73 here.
    // The q4_k file mixes in a type per kind of tensor ([`MIXED`]).
    for (quant, kld_max, top1_min) in [(DType::Q8_0, 0.01, 0.93), (DType::Q4K, 0.3, 0.65)] {
        let gguf = tmp.path().join(format!("smollm2-{quant}.gguf"));
        let rules = if quant == DType::Q4K { MIXED } else { &[] };
        to_gguf_mixed(&dir, &gguf, Some(quant), rules);
        let names = gguf_py_names(&py, &gguf);
        assert_eq!(names.len(), 272, "{names:?}");
        assert!(names.contains(&"blk.29.attn_q.weight".to_string()));
        assert!(names.contains(&"token_embd.weight".to_string()));
        assert!(
            !names.contains(&"output.weight".to_string()),
            "tied head written"
        );

        // transformers loads ferry's GGUF; its outputs agree with the original's.
        let hf_gguf = reference(&py, &dir, Some(&gguf), tmp.path(), "gguf");
        let outs: Vec<Vec<Vec<f32>>> = hf_gguf.iter().map(|(_, o)| o.clone()).collect();
        let s = decoder_stats(&refs, &outs);
        assert!(
            s.kld_mean < kld_max && s.same_top1 >= top1_min,
            "{quant} via transformers: mean KLD {:.4}, top-1 {:.3}",
            s.kld_mean,
            s.same_top1
        );

        // Back to safetensors: transformers loads the folder ferry writes (HF names, Q/K
        // un-permuted, config.json from the GGUF) and computes what it computed from the GGUF.
        if quant == DType::Q8_0 {
            let back = tmp.path().join("back");
            from_gguf(&gguf, &back, &dir);
            let hf_back = reference(&py, &back, None, tmp.path(), "back");
            let outs: Vec<Vec<Vec<f32>>> = hf_back.iter().map(|(_, o)| o.clone()).collect();
            let s = decoder_stats(&hf_gguf, &outs);
            assert!(
                s.kld_mean < 1e-6,
                "GGUF -> safetensors changed the model: {s:?}"
            );
        }

        // With the weights dequantized at load, ferry computes what transformers computes.
        let f = Model::load(&gguf, &Device::Cpu, Kernels::F32).unwrap();
        matches_within(&f, &hf_gguf, 1e-4, &format!("{quant} dequantized"));
        drop(f);

        // ferry's quantized forward (ferry-kernels' int8 GEMM on CPUs with AVX-512 VNNI or AVX2 + FMA, else
        // candle's kernels; activations in 8 bits either way, as llama.cpp's CPU path) agrees
        // with transformers' dequantized f32 forward of the same file, statistically.
        let q = Model::load(&gguf, &Device::Cpu, Kernels::Ggml).unwrap();
        // No tokenizer.json beside the file: the GGUF's own tokenizer.ggml.* is rebuilt.
        ids_agree(&q.load_tokenizer().unwrap(), &refs);
        let ours: Vec<Vec<Vec<f32>>> = hf_gguf.iter().map(|(ids, _)| run(&q, ids)).collect();
        let s = decoder_stats(&hf_gguf, &ours);
        // (measured on the mixed q4_k, whose q3_k, q4_0 and q5_1 matrices meet 8-bit
        // activations too: 0.0145 / 0.896)
        assert!(
            s.kld_mean < 0.02 && s.same_top1 >= 0.87,
            "{quant} ferry vs transformers on the same GGUF: mean KLD {:.4}, top-1 {:.3}",
            s.kld_mean,
            s.same_top1
        );
    }
}

#[test]
fn minilm_matches_transformers_and_its_gguf_has_llama_cpp_names() {
    let (Some(py), Some(dir)) = (tk::python_with("torch, transformers, gguf"), tk::minilm()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let refs = original_matches_transformers(&py, &dir, tmp.path());
    let gguf = tmp.path().join("minilm-q8_0.gguf");
    to_gguf(&dir, &gguf, Some(DType::Q8_0));
    let names = gguf_py_names(&py, &gguf);
    for want in [
        "token_embd.weight",
        "token_types.weight",
        "position_embd.weight",
        "token_embd_norm.weight",
        "blk.5.attn_q.bias",
        "blk.5.layer_output_norm.weight",
    ] {
        assert!(names.contains(&want.to_string()), "{want} not in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("position_ids")));
    // ferry's GGUF forward against the original: pooled embeddings agree.
    let q = Model::load(&gguf, &Device::Cpu, Kernels::F32).unwrap();
    ids_agree(&q.load_tokenizer().unwrap(), &refs);
    for (i, (ids, want)) in refs.iter().enumerate() {
        let got = run(&q, ids);
        let mean = |r: &[Vec<f32>]| -> Vec<f32> {
            (0..r[0].len())
                .map(|j| r.iter().map(|row| row[j]).sum::<f32>() / r.len() as f32)
                .collect()
        };
        let c = stats::cosine(&mean(&got), &mean(want));
        assert!(c > 0.995, "{}: pooled cosine {c:.5}", LANGS[i]);
    }
}

/// A GGUF read back to Hugging Face names gives the original tensors (Q/K rows un-permuted).
#[test]
fn gguf_round_trip_gives_back_hugging_face_names_and_layouts() {
    let Some(dir) = tk::smollm2() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("f32.gguf");
    let ck = Checkpoint::open(&dir).unwrap();
    let (ck, layout) = convert::prepare(ck, TargetFormat::Gguf, false).unwrap();
    let mut plan = Plan::new(&ck, TargetFormat::Gguf, &ConvertOptions::default()).unwrap();
    plan.layout = layout;
    let meta = convert::output_metadata(&ck, &plan).unwrap();
    convert::write(&plan, &ck, &gguf, &meta, None, &mut |_, _| {}).unwrap();
    let back = Checkpoint::open(&gguf).unwrap();
    let (back, report) = convert::prepare(back, TargetFormat::Safetensors, false).unwrap();
    assert!(report.unwrap().unknown.is_empty());
    let orig = Checkpoint::open(&dir).unwrap();
    let d = ferry_io::compare::diff(&orig, &back, None).unwrap();
    assert!(d.identical(), "{:?}", d);
}

const LLAMA_CPP: &str = include_str!("../../../scripts/llama_cpp_logits.py");

/// llama.cpp's outputs (`logits` or, with `embedding`, per-token `embeddings`) for the rows of
/// `ids`, all of one length, from the GGUF at `gguf`.
fn llama_cpp(py: &Path, gguf: &Path, ids: &[Vec<u32>], embedding: bool) -> Vec<Vec<Vec<f32>>> {
    let dir = gguf.parent().unwrap();
    let (idf, out) = (dir.join("ids.json"), dir.join("llama-cpp.npz"));
    std::fs::write(&idf, serde_json::to_string(ids).unwrap()).unwrap();
    let mut args = vec![
        Path::new("--model"),
        gguf,
        Path::new("--ids"),
        &idf,
        Path::new("--out"),
        &out,
    ];
    if embedding {
        args.push(Path::new("--embedding"));
    }
    tk::run_python(py, LLAMA_CPP, &args);
    let key = if embedding { "embeddings" } else { "logits" };
    let t = Checkpoint::open(&out)
        .unwrap()
        .get(key)
        .unwrap()
        .to_candle(&Device::Cpu)
        .unwrap();
    t.to_vec3().unwrap()
}

/// The probe texts as token ids, cut to `MAX_TOKENS`; texts shorter than that are left out, so
/// the rows form one batch.
fn probe_ids(tok: &Tokenizer) -> Vec<Vec<u32>> {
    texts()
        .iter()
        .map(|t| tok.encode(t, Some(MAX_TOKENS)).unwrap())
        .filter(|ids| ids.len() == MAX_TOKENS)
        .collect()
}

/// llama.cpp itself (llama-cpp-python built from source by `scripts/setup-llama-cpp.sh`) loads
/// the GGUFs ferry writes of SmolLM2 (f32, q8_0, q4_k with llama.cpp's fallbacks) and of
/// all-MiniLM-L6-v2, and computes what the original computes: the statistics of
/// `llama-perplexity --kl-divergence` against ferry's f32 forward of the original (which matches
/// transformers to 1e-4, above), and, for the quantized files, against ferry's own forward of
/// the same file with llama.cpp's numerics (`Kernels::Ggml`: weights kept quantized,
/// activations in 8 bits).
#[test]
fn llama_cpp_loads_ferrys_ggufs_and_computes_what_the_original_does() {
    let (Some(lc), Some(dir), Some(minilm)) = (tk::llama_cpp_python(), tk::smollm2(), tk::minilm())
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let original = Model::load(&dir, &Device::Cpu, Kernels::F32).unwrap();
    let ids = probe_ids(&original.load_tokenizer().unwrap());
    assert!(
        ids.len() >= 6,
        "{} probe texts of {MAX_TOKENS} tokens",
        ids.len()
    );
    let reference: Reference = ids.iter().map(|i| (i.clone(), run(&original, i))).collect();
    drop(original);
    // (type, bounds on mean KLD and same top-1 against the original; measured on these 8
    // languages: 1.3e-6 / 0.997, 9.7e-3 / 0.926, 0.195 / 0.723; llama.cpp's own quantizer gives
    // a byte-identical q8_0 from ferry's f32 file)
    // q4_k is written with a type per kind of tensor on top (as `--quant auto` writes them),
    // its other matrices q4_k or llama.cpp's q5_0 fallback.
    let cases = [
        (None, &[][..], 1e-4, 0.99),
        (Some(DType::Q8_0), &[][..], 0.02, 0.88),
        (Some(DType::Q4K), MIXED, 0.3, 0.65),
    ];
    for (quant, rules, kld, top1) in cases {
        let name = quant.map_or("f32".to_string(), |q| q.to_string());
        let gguf = tmp.path().join(format!("{name}.gguf"));
        to_gguf_mixed(&dir, &gguf, quant, rules);
        let theirs = llama_cpp(&lc, &gguf, &ids, false);
        let s = decoder_stats(&reference, &theirs);
        assert!(
            s.kld_mean < kld && s.same_top1 >= top1,
            "{name}: llama.cpp vs the original: mean KLD {:.2e}, same top-1 {:.3}",
            s.kld_mean,
            s.same_top1
        );
        if quant.is_some() {
            // Both quantize the activations to 8 bits; the two are not bit-identical (measured
            // 6.6e-3 for q8_0, 1.2e-2 for q4_k, about the distance of either from the
            // dequantized forward), so this bounds their agreement statistically.
            let ours = Model::load(&gguf, &Device::Cpu, Kernels::Ggml).unwrap();
            let mine: Reference = ids.iter().map(|i| (i.clone(), run(&ours, i))).collect();
            let same = decoder_stats(&mine, &theirs);
            assert!(
                same.kld_mean < 0.03 && same.same_top1 >= 0.85,
                "{name}: llama.cpp vs ferry on the same file: mean KLD {:.2e}, same top-1 {:.3}",
                same.kld_mean,
                same.same_top1
            );
        }
        std::fs::remove_file(&gguf).unwrap();
    }

    // An encoder: llama.cpp's per-token hidden states of ferry's f32 BERT GGUF.
    let enc = Model::load(&minilm, &Device::Cpu, Kernels::F32).unwrap();
    let ids = probe_ids(&enc.load_tokenizer().unwrap());
    let gguf = tmp.path().join("minilm.gguf");
    to_gguf(&minilm, &gguf, None);
    let theirs = llama_cpp(&lc, &gguf, &ids, true);
    for (i, row) in ids.iter().enumerate() {
        let ours = run(&enc, row);
        for (t, (a, b)) in ours.iter().zip(&theirs[i]).enumerate() {
            let c = stats::cosine(a, b);
            assert!(c > 0.9999, "MiniLM row {i} token {t}: cosine {c:.6}");
        }
    }
}
