//! Criterion benches of ferry-io's hot paths: float casts, GGML quantization, and whole
//! conversions (pth -> safetensors, safetensors -> GGUF q8_0) on a 64 MiB synthetic model.
//! The 1 GB side-by-side comparison with the Python peers is `scripts/bench_peer.py`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry_benches::{synthetic_f32, write_synthetic_pth};
use ferry_io::cast::cast_bytes;
use ferry_io::convert::{self, ConvertOptions, Plan, TargetFormat};
use ferry_io::{quant, Checkpoint, DType};

fn casts(c: &mut Criterion) {
    let v = synthetic_f32(1 << 22, 1);
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut g = c.benchmark_group("cast");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    for to in [DType::F16, DType::BF16] {
        g.bench_function(format!("f32_to_{to}_16MiB"), |b| {
            b.iter(|| cast_bytes(&bytes, DType::F32, to).unwrap())
        });
    }
    g.finish();
}

fn quantization(c: &mut Criterion) {
    let v = synthetic_f32(1 << 22, 2);
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Bytes(v.len() as u64 * 4));
    let k_quants = [DType::Q2K, DType::Q3K, DType::Q4K, DType::Q5K, DType::Q6K];
    for q in [DType::Q8_0, DType::Q4_0].into_iter().chain(k_quants) {
        g.bench_function(format!("{q}_16MiB"), |b| {
            b.iter(|| quant::quantize(&v, q).unwrap())
        });
        g.bench_function(format!("{q}_measured_16MiB"), |b| {
            b.iter(|| quant::quantize_measured(&v, q).unwrap())
        });
    }
    g.finish();
}

fn conversions(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("synthetic.pth");
    write_synthetic_pth(&pth, 4, 2048);
    let mut g = c.benchmark_group("convert");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(4 * 2048 * 2048 * 4));
    let run = |src: &std::path::Path, out: &std::path::Path, target, opts: &ConvertOptions| {
        let ck = Checkpoint::open(src).unwrap();
        let plan = Plan::new(&ck, target, opts).unwrap();
        convert::write(&plan, &ck, out, &ck.metadata, None, &mut |_, _| {}).unwrap();
    };
    let st = dir.path().join("out.safetensors");
    g.bench_function("pth_to_safetensors_64MiB", |b| {
        b.iter(|| {
            run(
                &pth,
                &st,
                TargetFormat::Safetensors,
                &ConvertOptions::default(),
            )
        })
    });
    let gguf = dir.path().join("out.gguf");
    let q8 = ConvertOptions {
        quant: Some(DType::Q8_0),
        ..Default::default()
    };
    g.bench_function("safetensors_to_gguf_q8_0_64MiB", |b| {
        b.iter(|| run(&st, &gguf, TargetFormat::Gguf, &q8))
    });
    g.finish();
}

criterion_group!(benches, casts, quantization, conversions);
criterion_main!(benches);
