//! Forward time of an ONNX encoder on ferry's executor, as one JSON line, for
//! scripts/bench_graph_peer.py: `graph_bench --model PATH --batch B --seq S [--threads T]
//! [--runs N] [--warmup W] [--unoptimized] --json`. Optimized (ferry's default passes) unless
//! `--unoptimized`. Inputs: random token ids, full attention mask.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Device;
use ferry_benches::{arg, set_threads};
use ferry_graph::exec::Executor;
use ferry_graph::passes::{all, PassManager};
use ferry_graph::verify::synth_inputs;

/// The `ferry` binary's allocator, so the numbers are the CLI's.
/// What `--help` prints.
const USAGE: &str = "graph_bench --model PATH --batch B --seq S [--threads T] [--runs N] [--warmup W] [--unoptimized] --json: an ONNX encoder forward on ferry's executor (one JSON line)";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ferry_kernels::init_cpu_runtime();
    ferry_benches::keep_freed_pages();
    let args: Vec<String> = std::env::args().collect();
    if ferry_benches::help_requested(&args, USAGE) {
        return;
    }
    let num = |name: &str, default: usize| {
        arg(&args, name).map_or(default, |s| {
            s.parse().unwrap_or_else(|_| panic!("{name} N"))
        })
    };
    let model_path = arg(&args, "--model").expect("--model PATH");
    let (batch, seq) = (num("--batch", 8), num("--seq", 128));
    let (runs, warmup) = (num("--runs", 10), num("--warmup", 2));
    if let Some(t) = arg(&args, "--threads") {
        set_threads(&t);
    }
    let optimized = !args.iter().any(|a| a == "--unoptimized");
    let mut model = ferry_graph::onnx::read_model(model_path.as_ref()).expect("read the model");
    let nodes_before = model.graph.nodes.len();
    if optimized {
        PassManager::new(all())
            .run(&mut model, |_| {})
            .expect("optimize");
    }
    // Every symbolic dimension of a rank-2 input is (batch, seq) in order of appearance.
    let mut sizes = HashMap::new();
    for vi in &model.graph.inputs {
        for (i, d) in vi.shape.iter().flatten().enumerate() {
            if let ferry_graph::Dim::Symbolic(s) = d {
                sizes
                    .entry(s.clone())
                    .or_insert(if i == 0 { batch } else { seq });
            }
        }
    }
    let inputs = synth_inputs(&model.graph, &sizes, 1).expect("inputs");
    let exec = Executor::new(&model, &Device::Cpu).expect("prepare");
    for _ in 0..warmup {
        exec.run(&inputs).expect("run");
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            exec.run(&inputs).expect("run");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    if args.iter().any(|a| a == "--profile") {
        // Per op type, the fastest of `runs` profiled runs (one run is too noisy on a shared
        // machine).
        let mut best: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
        for _ in 0..runs {
            let (_, stats) = exec.run_profiled(&inputs).expect("run");
            for (op, (n, s)) in stats.profile {
                let e = best.entry(op).or_insert((n, f64::INFINITY));
                e.1 = e.1.min(s);
            }
        }
        eprintln!("per op type, fastest of {runs} profiled runs:");
        let mut rows: Vec<_> = best.into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        for (op, (n, s)) in rows {
            eprintln!("{op:>24} {n:>5} {:>9.2} ms", s * 1e3);
        }
    }
    println!(
        "{}",
        serde_json::json!({"optimized": optimized, "batch": batch, "seq": seq, "runs": runs,
            "nodes_before": nodes_before, "nodes": model.graph.nodes.len(),
            "ms_best": times[0], "ms_median": times[times.len() / 2]})
    );
}
