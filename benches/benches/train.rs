//! Criterion bench of one training step (forward, backward, clip, AdamW) of the two
//! workloads in docs/benchmarks.md. The side-by-side run against PyTorch is
//! scripts/bench_train_peer.py.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry_benches::train::Workload;

fn steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(20);
    for name in ["bag", "transformer"] {
        let mut w = Workload::new(name, 16).expect("known workload");
        g.throughput(Throughput::Elements((w.batch * w.seq) as u64));
        g.bench_function(name, |b| b.iter(|| w.step()));
    }
    g.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
