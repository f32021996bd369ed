//! `ferry run`: run a model on candle, on array files or on text: an ONNX graph through
//! ferry-graph's executor, anything else (a Hugging Face folder, a GGUF, a checkpoint with its
//! config.json) through ferry-runtime's real architectures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use ferry_graph::exec::Executor;
use ferry_graph::onnx::read_model;
use ferry_graph::passes::{self, PassManager};
use indexmap::IndexMap;
use serde_json::json;

/// Arguments of `ferry run`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ferry run target/models/SmolLM2-135M --text 'The capital of France is' --top-k 5\n  ferry run out/smollm2-q8/model.gguf --text 'Die Hauptstadt von Frankreich ist' --output logits.npz --taps\n  ferry run target/models/all-MiniLM-L6-v2 --input input_ids=ids.npy --output hidden.npz --taps\n  ferry run runs/langid-udhr/best --text 'Bonjour tout le monde' --text 'Dobar dan' --top-k 3   # a classifier trained by ferry\n  ferry run model.onnx --input x=x.npy --output y.npz\n  ferry run model.onnx --input inputs.npz --json\n  ferry run model.onnx --input x=test_data_set_0/input_0.pb   # ONNX test data, any element type\n  ferry run all-MiniLM-L6-v2/model.onnx --tokenizer all-MiniLM-L6-v2/tokenizer.json --text 'Hello world' --text 'Hallo Welt' --output hidden.npz\n  ferry run model.onnx --input x=x.npy --optimize      # run ferry's passes first"
)]
pub struct Args {
    /// The model: ONNX file, Hugging Face folder or cached hub id, GGUF, or a checkpoint with its config.json beside it.
    pub(crate) model: PathBuf,
    /// An input: NAME=FILE.npy or NAME=FILE.pb (an ONNX TensorProto: bf16 and the other types
    /// NumPy cannot hold) (repeatable), or an .npz holding several (keys NAME or input.NAME).
    #[arg(long, value_name = "NAME=FILE")]
    pub(crate) input: Vec<String>,
    /// A text to feed a text model (repeatable; one batch row each).
    #[arg(long)]
    pub(crate) text: Vec<String>,
    /// tokenizer.json for --text (ONNX: needed, inputs filled by name; other models: default the model's own).
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    /// Write every output to this .npz.
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Decoders: print the N most likely next tokens after each text. Classifiers: the N most likely classes (default 1).
    #[arg(long, value_name = "N")]
    pub(crate) top_k: Option<usize>,
    /// Decoders and encoders: also write every layer's hidden state to --output (hidden.0 = embedding, then each block; decoders end with the final norm).
    #[arg(long)]
    pub(crate) taps: bool,
    /// GGML-quantized matrices (GGUF): ggml (kept quantized, activations in 8 bits as llama.cpp's CPU path: ferry's int8 GEMM on CPUs with AVX-512 VNNI or AVX2 + FMA, else candle's quantized kernels) or f32 (dequantized at load, as transformers).
    #[arg(long, default_value = "ggml", value_parser = ["ggml", "f32"])]
    pub(crate) kernels: String,
    /// Print nothing but errors (the --output file is still written).
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Run ferry's optimization passes before running.
    #[arg(long)]
    optimize: bool,
    #[command(flatten)]
    pub(crate) place: super::placing::PlaceArgs,
    /// Compute dtype (Hugging Face folders, GGUF): auto (f32 on CPU, bf16 on CUDA 8.0+, f16 on older CUDA and Metal), f32, f16 or bf16 (default f32 on the CPU).
    #[arg(long)]
    pub(crate) dtype: Option<String>,
    /// Print outputs (shapes, statistics, first values) as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `ferry run`.
pub fn run(a: Args) -> Result<ExitCode> {
    let is_onnx = a
        .model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    // Sized for the texts given: their count, and at most one token per byte.
    let workload = ferry_device::Workload {
        batch: a.text.len().max(1),
        context: a.text.iter().map(String::len).max().unwrap_or(512).max(16) + 2,
    };
    if is_onnx && a.dtype.is_some() {
        bail!("--dtype applies to the models ferry-runtime runs; an ONNX graph runs in its own dtypes (convert it first)");
    }
    let placement = super::run_model::placement(&a, workload)?;
    if !is_onnx {
        return super::run_model::run(a, placement);
    }
    if a.top_k.is_some() || a.taps {
        bail!("--top-k and --taps apply to the models ferry-runtime runs (Hugging Face folders, GGUF, ferry model folders), not ONNX graphs");
    }
    let mut model = read_model(&a.model)?;
    if a.optimize {
        PassManager::new(passes::all())
            .run(&mut model, |_| {})
            .with_context(|| format!("optimizing {}", a.model.display()))?;
    }
    let mut inputs = super::optimize::read_inputs(&a.input)?;
    if !a.text.is_empty() {
        let tok = a
            .tokenizer
            .as_ref()
            .context("--text needs --tokenizer tokenizer.json")?;
        inputs.extend(text_inputs(&model.graph, tok, &a.text)?);
    } else if a.tokenizer.is_some() {
        bail!("--tokenizer is only used with --text");
    }
    ferry_runtime::graph::assign_devices(&mut model, &placement.0);
    let exec = Executor::new(&model, placement.0.input_device())
        .with_context(|| format!("loading {}", a.model.display()))?;
    let t0 = Instant::now();
    let outputs = exec
        .run(&inputs)
        .with_context(|| format!("running {}", a.model.display()))?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Some(out) = &a.output {
        let cpu: IndexMap<String, Tensor> = outputs
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?)))
            .collect::<Result<_>>()?;
        ferry_graph::feeds::write_npz(out, &cpu)?;
    }
    if a.json {
        let outs = outputs
            .iter()
            .map(|(k, v)| summary(k, v))
            .collect::<Result<Vec<_>>>()?;
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "model": a.model.display().to_string(), "ms": ms, "outputs": outs, "written": a.output.as_ref().map(|p| p.display().to_string()) })
            )?
        );
    } else if !a.quiet {
        for (k, v) in &outputs {
            let s = summary(k, v)?;
            println!(
                "{k}: {:?} {}  mean {:.6}  min {:.6}  max {:.6}  first {:?}",
                v.dims(),
                s["dtype"].as_str().unwrap_or("?"),
                s["mean"],
                s["min"],
                s["max"],
                s["first"]
            );
        }
        println!(
            "ran in {ms:.1} ms{}",
            a.output
                .as_ref()
                .map(|p| format!("; outputs in {}", p.display()))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn summary(name: &str, t: &Tensor) -> Result<serde_json::Value> {
    let f = t.to_dtype(DType::F64)?.flatten_all()?;
    let v = f.to_vec1::<f64>()?;
    let n = v.len().max(1) as f64;
    Ok(json!({
        "name": name, "shape": t.dims(), "dtype": format!("{:?}", t.dtype()).to_lowercase(),
        "mean": v.iter().sum::<f64>() / n,
        "min": v.iter().copied().fold(f64::INFINITY, f64::min),
        "max": v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "first": v.iter().take(5).map(|x| (x * 1e6).round() / 1e6).collect::<Vec<_>>(),
    }))
}

/// `input_ids`, `attention_mask` and `token_type_ids` for `texts`, padded to the longest.
fn text_inputs(
    graph: &ferry_graph::ir::Graph,
    tokenizer: &std::path::Path,
    texts: &[String],
) -> Result<HashMap<String, Tensor>> {
    let tok = ferry_data::tokenize::Tokenizer::from_file(tokenizer)?;
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(t, true))
        .collect::<std::result::Result<_, _>>()?;
    let len = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (b, pad) = (ids.len(), tok.pad_id() as i64);
    let mut input_ids = vec![pad; b * len];
    let mut mask = vec![0i64; b * len];
    for (r, row) in ids.iter().enumerate() {
        for (c, &id) in row.iter().enumerate() {
            input_ids[r * len + c] = id as i64;
            mask[r * len + c] = 1;
        }
    }
    let mut out = HashMap::new();
    for vi in &graph.inputs {
        let values = match vi.name.as_str() {
            "input_ids" => input_ids.clone(),
            "attention_mask" => mask.clone(),
            "token_type_ids" => vec![0; b * len],
            other => bail!("--text cannot fill input `{other}` (it fills input_ids, attention_mask, token_type_ids); give it with --input"),
        };
        out.insert(
            vi.name.clone(),
            Tensor::from_vec(values, (b, len), &Device::Cpu)?,
        );
    }
    Ok(out)
}
