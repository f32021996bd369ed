//! Training throughput of one workload, as JSON, for scripts/bench_train_peer.py:
//! `train_throughput --workload bag|transformer --steps N --warmup W [--threads T]`.
//! Threads: RAYON_NUM_THREADS (set by the script), or `--threads`.

use std::time::Instant;

use ferry_benches::train::Workload;
use ferry_benches::{arg, set_threads};

/// The `ferry` binary's allocator, so the numbers are the CLI's.
/// What `--help` prints.
const USAGE: &str = "train_throughput --workload bag|transformer --steps N --warmup W [--threads T]: training steps per second (one JSON object)";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ferry_train::init_cpu_runtime();
    ferry_benches::keep_freed_pages();
    let args: Vec<String> = std::env::args().collect();
    if ferry_benches::help_requested(&args, USAGE) {
        return;
    }
    let workload = arg(&args, "--workload").unwrap_or_else(|| "bag".into());
    let steps: usize = arg(&args, "--steps").map_or(100, |s| s.parse().expect("--steps N"));
    let warmup: usize = arg(&args, "--warmup").map_or(10, |s| s.parse().expect("--warmup N"));
    if let Some(t) = arg(&args, "--threads") {
        set_threads(&t);
    }
    let Some(mut w) = Workload::new(&workload, warmup + steps) else {
        eprintln!("unknown workload {workload:?}: use bag or transformer");
        std::process::exit(2);
    };
    for _ in 0..warmup {
        w.step();
    }
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = w.step();
    }
    let seconds = start.elapsed().as_secs_f64();
    let tokens = (steps * w.batch * w.seq) as f64;
    println!(
        "{}",
        serde_json::json!({"workload": workload, "steps": steps, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "ms_per_step": seconds * 1000.0 / steps as f64, "final_loss": loss})
    );
}
