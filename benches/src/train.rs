//! The two training workloads of docs/benchmarks.md, shared by the `train_throughput`
//! binary (run side by side with PyTorch by scripts/bench_train_peer.py) and the criterion
//! bench: AdamW + cross entropy + clipping by global norm 1.0 on random token batches.

use candle_core::{Device, Tensor};
use ferry_data::rng::Rng;
use ferry_train::grads::{clip_factor, Grads};
use ferry_train::models::{Arch, Classifier, ModelSpec, Pooling, TransformerConfig};
use ferry_train::nn::Activation;
use ferry_train::optim::{Optimizer, OptimizerConfig};

/// A workload: model, batch shape, and its optimizer state.
pub struct Workload {
    model: Classifier,
    optimizer: Optimizer,
    batches: Vec<(Tensor, Tensor)>,
    next: usize,
    /// Examples per batch.
    pub batch: usize,
    /// Tokens per example.
    pub seq: usize,
}

impl Workload {
    /// `bag`: Embedding(10000, 100) -> mean -> Linear(100, 30), batch 64 x 64;
    /// `transformer`: 2 layers, d_model 128, 4 heads, ff 512, learned positions, mean
    /// pooling, 30 classes, batch 32 x 64. `steps` random batches are made up front.
    pub fn new(name: &str, steps: usize) -> Option<Self> {
        let (arch, batch, seq) = match name {
            "bag" => (Arch::Bag { dim: 100 }, 64, 64),
            "transformer" => (
                Arch::Transformer(TransformerConfig {
                    layers: 2,
                    heads: 4,
                    dim: 128,
                    ff: 512,
                    max_len: 64,
                    activation: Activation::Relu,
                    norm_first: false,
                    pooling: Pooling::Mean,
                }),
                32,
                64,
            ),
            _ => return None,
        };
        let (vocab, classes) = (10_000, 30);
        let spec = ModelSpec {
            arch,
            vocab_size: vocab,
            classes: (0..classes).map(|c| c.to_string()).collect(),
        };
        let dev = Device::Cpu;
        let model = Classifier::new(&spec, 0, &dev).ok()?;
        let optimizer = OptimizerConfig::Adamw {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
        .build(model.params());
        let mut rng = Rng::new(42);
        let batches = (0..steps.max(1))
            .map(|_| {
                let ids: Vec<u32> = (0..batch * seq)
                    .map(|_| rng.below(vocab as u64) as u32)
                    .collect();
                let labels: Vec<u32> = (0..batch).map(|_| rng.below(classes) as u32).collect();
                (
                    Tensor::from_vec(ids, (batch, seq), &dev).unwrap(),
                    Tensor::from_vec(labels, batch, &dev).unwrap(),
                )
            })
            .collect();
        Some(Workload {
            model,
            optimizer,
            batches,
            next: 0,
            batch,
            seq,
        })
    }

    /// One training step on the next batch (no padding, so no mask); returns the loss.
    pub fn step(&mut self) -> f32 {
        let (ids, labels) = &self.batches[self.next % self.batches.len()];
        self.next += 1;
        let logits = self.model.forward(ids, None).unwrap();
        let loss = ferry_train::loss::cross_entropy(&logits, labels, 0.0).unwrap();
        let grads = Grads::from_loss(self.model.params(), &loss).unwrap();
        let norm = grads.global_norm().unwrap();
        self.optimizer
            .step(
                self.model.params(),
                &grads,
                1e-3,
                clip_factor(norm, Some(1.0)),
            )
            .unwrap();
        loss.to_scalar().unwrap()
    }
}
