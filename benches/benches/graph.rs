//! Criterion benches of the graph runtime on the committed BERT-config encoder export
//! (fixtures/graph/encoder.onnx, batch 8 x seq 64): forward unoptimized vs optimized, and the
//! optimization pipeline itself. The side-by-side run against onnxruntime on
//! all-MiniLM-L6-v2 is scripts/bench_graph_peer.py.

use std::collections::HashMap;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry_graph::exec::Executor;
use ferry_graph::passes::{all, PassManager};
use ferry_graph::verify::synth_inputs;
use ferry_graph::OnnxModel;

fn encoder() -> OnnxModel {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/graph/encoder.onnx");
    ferry_graph::onnx::read_model(&path).expect("fixtures/graph/encoder.onnx")
}

fn forward(c: &mut Criterion) {
    ferry_kernels::init_cpu_runtime();
    let model = encoder();
    let mut opt = model.clone();
    PassManager::new(all())
        .run(&mut opt, |_| {})
        .expect("optimize");
    let sizes: HashMap<String, usize> = [("batch", 8), ("seq", 64)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut g = c.benchmark_group("graph_forward");
    g.sample_size(20);
    g.throughput(Throughput::Elements(8 * 64));
    for (name, m) in [("encoder_unoptimized", &model), ("encoder_optimized", &opt)] {
        let inputs = synth_inputs(&m.graph, &sizes, 1).expect("inputs");
        let exec = Executor::new(m, &Device::Cpu).expect("prepare");
        g.bench_function(name, |b| b.iter(|| exec.run(&inputs).expect("run")));
    }
    g.finish();
    let mut g = c.benchmark_group("graph_optimize");
    g.sample_size(10);
    g.bench_function("encoder_all_passes", |b| {
        b.iter(|| {
            let mut m = model.clone();
            PassManager::new(all())
                .run(&mut m, |_| {})
                .expect("optimize")
        })
    });
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
