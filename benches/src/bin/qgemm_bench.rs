//! Quantized GEMM throughput on SmolLM2-135M's projection shapes (a batch of 8 x 128 tokens):
//! ferry-kernels' int8 kernel (its VNNI build, or its AVX2 build on CPUs without AVX-512)
//! against candle's quantized matmul (`QMatMul`, what `quantized_llama` runs; one output at a
//! time) and against the f32 product ferry runs on the same matrix in f32 (its packed GEMM
//! with AVX-512, else candle's `matmul`, the `gemm` crate). All three quantize nothing the others do not: the int8 kernel and
//! candle quantize the activations to 8 bits per call, as llama.cpp's CPU path.
//!
//! `cargo run --release -p ferry-benches --bin qgemm_bench -- [--threads 2] [--runs 10]
//! [--shapes "m,k,n ..."] [--types q8_0,q5_0,q4_k]` (the output head's `1024,576,49152` with
//! `--types q8_0` takes a few seconds; candle's q5_0 on it, a minute).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ferry_benches::{arg, best_ms, set_threads};
use ferry_kernels::qgemm::{qgemm, PackedQ8};
use ferry_kernels::{gemm_packed, PackedMatrix};

/// What `--help` prints.
const USAGE: &str = "qgemm_bench [--threads 2] [--runs 10] [--shapes \"m,k,n ...\"] [--types q8_0,q5_0,q4_k]: int8 GEMM against candle QMatMul and the f32 product ferry runs on SmolLM2-135M shapes (a Markdown table)";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if ferry_benches::help_requested(&args, USAGE) {
        return;
    }
    set_threads(&arg(&args, "--threads").unwrap_or_else(|| "2".into()));
    let runs: usize = arg(&args, "--runs").map_or(10, |r| r.parse().expect("--runs N"));
    println!("| type | m x k x n | candle QMatMul GFLOP/s | ferry int8 GFLOP/s | ferry f32 GFLOP/s | int8 / f32 | int8 / candle |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    // (m, k, n): q/o projections, gate/up, down (a shape whose k is not a whole number of the
    // type's blocks is skipped: k-quants need k % 256 == 0).
    let shapes = ferry_benches::shapes_arg(
        &args,
        &[(1024, 576, 576), (1024, 576, 1536), (1024, 1536, 576)],
    );
    let types: Vec<GgmlDType> = arg(&args, "--types")
        .unwrap_or_else(|| "q8_0,q5_0,q4_k".into())
        .split(',')
        .map(|t| {
            let dtype = t.parse::<ferry_io::DType>().ok().and_then(|d| d.to_ggml());
            dtype.unwrap_or_else(|| panic!("--types: {t} is not a GGML type"))
        })
        .collect();
    for dtype in types {
        for &(m, k, n) in &shapes {
            if !k.is_multiple_of(dtype.block_size()) {
                continue;
            }
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let bytes = q.data().unwrap().to_vec();
            let packed = PackedQ8::from_ggml(dtype, &bytes, n, k).unwrap_or_else(|| {
                panic!("the int8 GEMM reads no {dtype:?} here (or this CPU lacks AVX-512 VNNI and AVX2 + FMA)")
            });
            let mm = QMatMul::from_qtensor(q).unwrap();
            let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let wt = w.t().unwrap().contiguous().unwrap();
            let f32w =
                PackedMatrix::pack(&wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(), k, n);
            let candle = best_ms(runs.min(3), || {
                mm.forward(&x).unwrap();
            });
            let int8 = best_ms(runs, || {
                qgemm(m, &xv, &packed, None);
            });
            let f32_ = match &f32w {
                Some(f32w) => best_ms(runs, || {
                    gemm_packed(m, &xv, f32w, None, &|_| {});
                }),
                None => best_ms(runs, || {
                    x.matmul(&wt).unwrap();
                }),
            };
            let g = |ms: f64| 2.0 * (m * k * n) as f64 / ms / 1e6;
            println!(
                "| {dtype:?} | {m} x {k} x {n} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.1}x |",
                g(candle),
                g(int8),
                g(f32_),
                f32_ / int8,
                candle / int8
            );
        }
    }
}
