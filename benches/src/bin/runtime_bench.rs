//! Forward time of a model on ferry's runtime (a Hugging Face folder or a GGUF), as one JSON
//! line, for scripts/bench_runtime_peer.py: `runtime_bench --model PATH --batch B --seq S
//! [--threads T] [--runs N] [--warmup W] [--ids FILE.npy] [--kernels ggml|f32]`. Inputs: token ids from `--ids` (an
//! int64 `[batch, seq]` array, so both sides see the same ids), else seeded ones; no padding.
//! `--help` prints the usage line.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ferry_benches::{arg, set_threads};
use ferry_runtime::{Kernels, Model};

/// The `ferry` binary's allocator, so the numbers are the CLI's.
/// What `--help` prints.
const USAGE: &str = "runtime_bench --model PATH [--batch 8] [--seq 128] [--threads T] [--runs 5] [--warmup 1] [--ids FILE.npy] [--kernels ggml|f32]: a forward on ferry's runtime (one JSON line)";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if ferry_benches::help_requested(&args, USAGE) {
        return;
    }
    ferry_kernels::init_cpu_runtime();
    ferry_benches::keep_freed_pages();
    let num = |name: &str, default: usize| {
        arg(&args, name).map_or(default, |s| {
            s.parse().unwrap_or_else(|_| panic!("{name} N"))
        })
    };
    let model_path = arg(&args, "--model").expect("--model PATH");
    let (batch, seq) = (num("--batch", 8), num("--seq", 128));
    let (runs, warmup) = (num("--runs", 5), num("--warmup", 1));
    if let Some(t) = arg(&args, "--threads") {
        set_threads(&t);
    }
    let kernels =
        arg(&args, "--kernels").map_or(Kernels::Ggml, |k| k.parse().expect("--kernels ggml|f32"));
    let model = Model::load(model_path.as_ref(), &Device::Cpu, kernels).expect("load the model");
    let ids = match arg(&args, "--ids") {
        Some(p) => {
            let ck = ferry_io::Checkpoint::open(&p).expect("read --ids");
            let t = ck.tensors[0].to_candle(&Device::Cpu).expect("ids");
            t.to_dtype(DType::U32).expect("ids as u32")
        }
        None => {
            let v: Vec<u32> = ferry_benches::synthetic_f32(batch * seq, 7)
                .iter()
                .map(|x| ((x + 1.0) * 0.5 * 40_000.0) as u32)
                .collect();
            Tensor::from_vec(v, (batch, seq), &Device::Cpu).expect("ids")
        }
    };
    let (b, s) = ids.dims2().expect("[batch, seq] ids");
    for _ in 0..warmup {
        model.forward(&ids, None, false).expect("forward");
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            model.forward(&ids, None, false).expect("forward");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let tokens = (b * s) as f64;
    println!(
        "{}",
        serde_json::json!({"model": model_path, "format": model.format, "batch": b, "seq": s,
            "runs": runs, "kernels": kernels, "ms_best": times[0], "ms_median": times[times.len() / 2],
            "tokens_per_s_best": tokens / (times[0] / 1e3),
            "tokens_per_s_median": tokens / (times[times.len() / 2] / 1e3)})
    );
}
