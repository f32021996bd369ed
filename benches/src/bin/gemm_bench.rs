//! GEMM throughput on the shapes of an encoder forward: ferry-kernels' packed AVX-512 kernel
//! (weights packed once) against candle's matmul (the `gemm` crate, which packs per call).
//!
//! `cargo run --release -p ferry-benches --bin gemm_bench -- [--threads 2] [--runs 20]
//! [--shapes "m,k,n ..."]`

use candle_core::{Device, Tensor};
use ferry_benches::{arg, best_ms, set_threads};
use ferry_kernels::{gemm_packed, PackedMatrix};

/// What `--help` prints.
const USAGE: &str = "gemm_bench [--threads 2] [--runs 20] [--shapes \"m,k,n m,k,n\"]: GFLOP/s of candle matmul and the packed GEMM (a Markdown table)";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if ferry_benches::help_requested(&args, USAGE) {
        return;
    }
    set_threads(&arg(&args, "--threads").unwrap_or_else(|| "2".into()));
    let runs: usize = arg(&args, "--runs").map_or(20, |r| r.parse().expect("--runs N"));
    println!("| m x k x n | candle matmul GFLOP/s | packed GFLOP/s | ratio |");
    println!("|---|---:|---:|---:|");
    // --shapes "m,k,n m,k,n": other shapes than the encoder's.
    let shapes = ferry_benches::shapes_arg(
        &args,
        &[
            (1024, 384, 1152),
            (1024, 384, 384),
            (1024, 384, 1536),
            (1024, 1536, 384),
            (2048, 128, 512),
            (2048, 512, 128),
        ],
    );
    for (m, k, n) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).unwrap();
        let flops = 2.0 * (m * k * n) as f64;
        let candle = best_ms(runs, || {
            a.matmul(&b).unwrap();
        });
        let av = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bv = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = |ms: f64| flops / ms / 1e6;
        // Without AVX-512 ferry runs the `gemm` crate: only its column has a number then.
        let Some(packed) = PackedMatrix::pack(&bv, k, n) else {
            println!(
                "| {m} x {k} x {n} | {:.0} | - (no AVX-512F) | - |",
                g(candle)
            );
            continue;
        };
        let ours = best_ms(runs, || {
            gemm_packed(m, &av, &packed, None, &|_| {});
        });
        println!(
            "| {m} x {k} x {n} | {:.0} | {:.0} | {:.2}x |",
            g(candle),
            g(ours),
            candle / ours
        );
    }
}
