//! Placement in the runtime: a decoder whose units run in different dtypes (the hidden state
//! moves and is cast between blocks, as between devices), the costs ferry-device plans from,
//! and the dtype policy's bf16 against the f32 run on the tiny grouped-query Llama of
//! `fixtures/decoders/`.

mod support;

use candle_core::{DType, Device};
use ferry_device::memory::Role;
use ferry_device::Keep;
use ferry_runtime::{planning, Kernels, Model, Placement};
use support::{inputs, reference, rel_err};

fn fixture() -> std::path::PathBuf {
    ferry_testkit::fixture("decoders/llama-gqa")
}

/// Embedding in f32, block 0 in bf16, block 1 in f32, head in bf16: the logits stay within
/// bf16's error of the f32 run and differ from it (the casts happen), and the taps come back
/// in f32 with one per unit boundary.
#[test]
fn a_decoder_split_across_dtypes_matches_the_f32_run() {
    let dir = fixture();
    let r = reference(&dir);
    let (ids, mask) = inputs(&r);
    let f32_model = Model::load(&dir, &Device::Cpu, Kernels::F32).unwrap();
    let place = Placement::single(Device::Cpu, DType::F32)
        .with_unit("layers.0", Device::Cpu, DType::BF16)
        .with_unit("head", Device::Cpu, DType::BF16);
    let split = Model::load_placed(&dir, &place, Kernels::F32).unwrap();
    let a = f32_model.forward(&ids, Some(&mask), true).unwrap();
    let b = split.forward(&ids, Some(&mask), true).unwrap();
    assert_eq!(b.values.dtype(), DType::F32);
    assert_eq!(b.taps.len(), a.taps.len());
    assert!(b.taps.iter().all(|t| t.dtype() == DType::F32));
    let err = rel_err(&b.values, &a.values, &mask);
    assert!(err > 0.0, "bf16 units must change the logits");
    assert!(err < 0.05, "relative error {err}");
    // The embedding ran in f32: its tap is the f32 run's exactly.
    assert_eq!(rel_err(&b.taps[0], &a.taps[0], &mask), 0.0);
    // And the f32 model still matches transformers.
    assert!(rel_err(&a.values, &r["logits"], &mask) < 1e-4);
}

/// What ferry-device plans from: the embedding, each block and the head with their tensors,
/// every byte of the checkpoint counted once (the head is untied here), f32 weights held in
/// the compute dtype.
#[test]
fn costs_cover_every_tensor_once_per_unit() {
    let dir = fixture();
    let cost = planning::cost(&dir, Kernels::Ggml).unwrap();
    let names: Vec<&str> = cost.units.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["embed", "layers.0", "layers.1", "head"]);
    assert_eq!(cost.units[1].role, Role::Block);
    assert!(cost.splittable);
    let ck = ferry_io::Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let total: u64 = ck.tensors.iter().map(|t| t.numel()).sum();
    let counted: u64 = cost
        .units
        .iter()
        .flat_map(|u| &u.tensors)
        .map(|t| t.numel)
        .sum();
    assert_eq!(counted, total);
    assert!(cost
        .units
        .iter()
        .flat_map(|u| &u.tensors)
        .all(|t| t.keep == Keep::Compute));
    let shape = cost.shape.unwrap();
    assert_eq!((shape.heads, shape.kv_heads, shape.head_dim), (8, 2, 8));
    assert!(shape.kv_cache);
}

/// A q8_0 GGUF of the fixture: its matrices stay quantized with ggml kernels (their bytes on
/// the CPU are ferry's int8 repack where the int8 GEMM runs (`qgemm::available`), else the GGML blocks; on
/// accelerators the GGML blocks), and are held in the compute dtype with f32 kernels.
#[test]
fn quantized_matrices_cost_what_the_runtime_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = support::gguf_of(&fixture(), tmp.path(), Some(ferry_io::DType::Q8_0));
    let ggml = planning::cost(&gguf, Kernels::Ggml).unwrap();
    let q = ggml.units[1]
        .tensors
        .iter()
        .find(|t| t.name.ends_with("mlp.up_proj.weight"))
        .unwrap();
    // 64 x 32 in q8_0: 64 rows of one 34-byte block.
    let stored = 64 * 34;
    match q.keep {
        Keep::Fixed {
            cpu_bytes,
            accelerator_bytes,
        } => {
            assert_eq!(accelerator_bytes, stored);
            // Two 32-feature panels of one 32-deep block: 32 x 32 int8 and 3 x 32 f32/i32.
            let int8 = 2 * (32 * 32 + 3 * 32 * 4);
            let expect = if ferry_kernels::qgemm::available() {
                int8
            } else {
                stored
            };
            assert_eq!(cpu_bytes, expect);
        }
        other => panic!("a q8_0 matrix is held as {other:?}"),
    }
    let f32 = planning::cost(&gguf, Kernels::F32).unwrap();
    assert!(f32.units[1].tensors.iter().all(|t| t.keep == Keep::Compute));
}
