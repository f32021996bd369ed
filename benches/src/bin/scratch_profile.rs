use candle_core::{Device, Tensor};
use ferry_data::rng::Rng;
use ferry_train::grads::{clip_factor, Grads};
use ferry_train::models::{Arch, Model, ModelSpec, Pooling};
use ferry_train::nn::Activation;
use ferry_train::optim::OptimizerConfig;
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let which = std::env::args().nth(1).unwrap_or("transformer".into());
    let (arch, batch, seq) = if which == "bag" {
        (Arch::Bag { dim: 100 }, 64, 64)
    } else {
        (
            Arch::Transformer {
                layers: 2,
                heads: 4,
                dim: 128,
                ff: 512,
                max_len: 64,
                activation: Activation::Relu,
                norm_first: false,
                pooling: Pooling::Mean,
            },
            32,
            64,
        )
    };
    let spec = ModelSpec {
        arch,
        vocab_size: 10000,
        classes: (0..30).map(|c| c.to_string()).collect(),
    };
    let dev = Device::Cpu;
    let model = Model::new(&spec, 0, &dev).unwrap();
    let mut opt = OptimizerConfig::Adamw {
        lr: 1e-3,
        betas: (0.9, 0.999),
        eps: 1e-8,
        weight_decay: 0.01,
    }
    .build(model.params());
    let mut rng = Rng::new(1);
    let ids: Vec<u32> = (0..batch * seq).map(|_| rng.below(10000) as u32).collect();
    let ids = Tensor::from_vec(ids, (batch, seq), &dev).unwrap();
    let labels = Tensor::from_vec(
        (0..batch as u32).map(|i| i % 30).collect::<Vec<_>>(),
        batch,
        &dev,
    )
    .unwrap();
    let mut acc = [0f64; 5];
    let n = 20;
    for it in 0..n + 3 {
        let t0 = Instant::now();
        let logits = model.forward(&ids, None).unwrap();
        let loss = ferry_train::loss::cross_entropy(&logits, &labels, 0.0).unwrap();
        let _ = loss.to_scalar::<f32>().unwrap();
        let t1 = Instant::now();
        let grads = Grads::from_loss(model.params(), &loss).unwrap();
        let t2 = Instant::now();
        let norm = grads.global_norm().unwrap();
        let t3 = Instant::now();
        opt.step(model.params(), &grads, 1e-3, clip_factor(norm, Some(1.0)))
            .unwrap();
        let t4 = Instant::now();
        drop(grads);
        drop(loss);
        drop(logits);
        let t5 = Instant::now();
        if it >= 3 {
            for (a, d) in acc
                .iter_mut()
                .zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
            {
                *a += d.as_secs_f64() * 1000.0 / n as f64;
            }
        }
    }
    println!(
        "forward {:.2} backward {:.2} norm {:.2} optim {:.2} drop {:.2} ms",
        acc[0], acc[1], acc[2], acc[3], acc[4]
    );
}
