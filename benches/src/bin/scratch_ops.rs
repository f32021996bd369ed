use candle_core::{Device, Tensor, Var};
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn bench(name: &str, vars: &[&Var], f: &dyn Fn() -> Tensor) {
    let run = || {
        let y = f();
        let l = y.sum_all().unwrap();
        let g = l.backward().unwrap();
        for v in vars {
            let _ = g.get(v).unwrap();
        }
    };
    let fwd = || {
        let _ = f();
    };
    for _ in 0..3 {
        run();
    }
    let n = 30;
    let s = Instant::now();
    for _ in 0..n {
        fwd();
    }
    let tf = s.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let s = Instant::now();
    for _ in 0..n {
        run();
    }
    let tb = s.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!("{name}: fwd {tf:.3} ms, fwd+bwd {tb:.3} ms");
}
fn main() {
    let d = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, 64, 128), &d).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (384, 128), &d).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, 384, &d).unwrap()).unwrap();
    bench("linear 128->384", &[&x, &w, &b], &|| {
        ferry_train::ops::linear(&x, &w, Some(&b), None).unwrap()
    });
    let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, 64, 384), &d).unwrap()).unwrap();
    bench("attention", &[&qkv], &|| {
        ferry_train::ops::self_attention(&qkv, 4, None).unwrap()
    });
    let g = Var::from_tensor(&Tensor::ones(128, candle_core::DType::F32, &d).unwrap()).unwrap();
    let be = Var::from_tensor(&Tensor::zeros(128, candle_core::DType::F32, &d).unwrap()).unwrap();
    bench("layernorm", &[&x, &g, &be], &|| {
        ferry_train::ops::layer_norm(&x, &g, &be, 1e-5).unwrap()
    });
    bench("add", &[&x], &|| (x.as_tensor() + x.as_tensor()).unwrap());
    let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (32, 64, 512), &d).unwrap()).unwrap();
    bench("relu 4MB", &[&h], &|| h.relu().unwrap());
    bench("mean(1)", &[&x], &|| x.mean(1).unwrap());
    let e = Var::from_tensor(&Tensor::randn(0f32, 1.0, (10000, 128), &d).unwrap()).unwrap();
    let ids = Tensor::arange(0u32, 2048, &d)
        .unwrap()
        .reshape((32, 64))
        .unwrap();
    bench("embedding", &[&e], &|| {
        ferry_train::ops::embedding(&e, &ids).unwrap()
    });
}
