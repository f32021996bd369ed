//! The planner on synthetic machines and a synthetic decoder: where units go, what each device
//! holds (byte for byte, from the formulas of `ferry_device::memory`), `--map`, `--max-memory`,
//! the reserve, the CPU's share of unified memory, the dtype policy, and what a model that does
//! not fit is told.
//!
//! The expected bytes are written out here from the formulas, not computed with the crate's own
//! functions, so a wrong formula or a wrong sum fails.

use candle_core::DType;
use ferry_device::memory::Role;
use ferry_device::{
    ArchShape, CpuInfo, DTypePolicy, DeviceKind, DevicePlan, DeviceSpec, Error, GpuInfo, Inventory,
    Keep, ModelCost, Plan, PlanOptions, Reserve, TensorCost, Unit, Workload,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

// The decoder's shape.
const H: u64 = 2048;
const HEADS: u64 = 16;
const KV_HEADS: u64 = 4;
const HEAD_DIM: u64 = 128;
const INTER: u64 = 8192;
const VOCAB: u64 = 32768;

// Its tensors' element counts: the embedding table and the output head are `VOCAB x H`
// (64 Mi elements), a block 256 Mi elements (512 MiB in bf16, 1 GiB in f32).
//
// At batch 1 x `CONTEXT` a block's activations are 28 Mi elements of states (`2TH + 3TI`) in
// the compute dtype, 38 Mi of attention (`3 T heads hd + 2 heads T^2`) and the 1 Mi-element mask
// in f32 (the decoder computes attention in f32): 212 MiB in bf16, 268 MiB in f32. Its KV cache
// is 2 MiB in bf16, 4 MiB in f32. The head's are `T H` (2 Mi) in the compute dtype plus the 32
// Mi logits in the compute dtype and, when narrower, again in f32: 196 MiB in bf16, 136 MiB in
// f32. The encoder computes attention in its dtype, without mask or logits: a block 132 MiB in
// bf16, 264 MiB in f32.
const EMBED_NUMEL: u64 = VOCAB * H;
const ATTN_NUMEL: u64 = 64 << 20;
const MLP_NUMEL: u64 = 192 << 20;
const BLOCK_NUMEL: u64 = ATTN_NUMEL + MLP_NUMEL;
const HEAD_NUMEL: u64 = H + VOCAB * H;

/// The context most tests size for (batch 1).
const CONTEXT: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Models.

/// A unit of `Keep::Compute` tensors `(suffix, numel)`, named `{name}.{suffix}`.
fn unit(name: &str, role: Role, tensors: &[(&str, u64)]) -> Unit {
    Unit {
        name: name.to_string(),
        role,
        tensors: tensors
            .iter()
            .map(|&(t, numel)| TensorCost {
                name: format!("{name}.{t}"),
                numel,
                keep: Keep::Compute,
            })
            .collect(),
    }
}

fn shape() -> ArchShape {
    ArchShape {
        hidden: H as usize,
        heads: HEADS as usize,
        kv_heads: KV_HEADS as usize,
        head_dim: HEAD_DIM as usize,
        intermediate: INTER as usize,
        vocab: Some(VOCAB as usize),
        kv_cache: true,
        attention_f32: true,
    }
}

/// `embed`, `layers.0..n-1`, `head`: a splittable causal decoder.
fn decoder(n: usize) -> ModelCost {
    let mut units = vec![unit("embed", Role::Embed, &[("weight", EMBED_NUMEL)])];
    for i in 0..n {
        units.push(unit(
            &format!("layers.{i}"),
            Role::Block,
            &[("attn", ATTN_NUMEL), ("mlp", MLP_NUMEL)],
        ));
    }
    units.push(unit(
        "head",
        Role::Head,
        &[("norm", H), ("lm_head", VOCAB * H)],
    ));
    ModelCost {
        arch: "test-decoder".into(),
        units,
        shape: Some(shape()),
        splittable: true,
        dtype: None,
    }
}

/// The same units as a model that runs on one device, without KV cache or logits, computing
/// attention in its dtype (an encoder).
fn encoder(n: usize) -> ModelCost {
    ModelCost {
        arch: "test-encoder".into(),
        shape: Some(ArchShape {
            kv_cache: false,
            attention_f32: false,
            vocab: None,
            ..shape()
        }),
        splittable: false,
        dtype: None,
        ..decoder(n)
    }
}

/// `layers.{a}` .. `layers.{b-1}`.
fn layers(r: std::ops::Range<usize>) -> Vec<String> {
    r.map(|i| format!("layers.{i}")).collect()
}

/// `first`, then `middle`, then `last`, as unit names.
fn names(first: &[&str], middle: Vec<String>, last: &[&str]) -> Vec<String> {
    first
        .iter()
        .map(|s| s.to_string())
        .chain(middle)
        .chain(last.iter().map(|s| s.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Machines.

fn cpu(available: u64) -> CpuInfo {
    CpuInfo {
        name: "test cpu".into(),
        cores: 8,
        threads: 16,
        total_bytes: 64 * GIB,
        available_bytes: available,
    }
}

fn gpu(i: usize, total: u64, free: u64, cc: (u32, u32)) -> GpuInfo {
    GpuInfo {
        device: DeviceSpec::cuda(i),
        name: format!("test gpu {i}"),
        compute_capability: Some(cc),
        total_bytes: total,
        free_bytes: free,
    }
}

fn inventory(cuda: Vec<GpuInfo>, cpu: CpuInfo) -> Inventory {
    Inventory {
        cpu,
        cuda,
        metal: Vec::new(),
        compiled: vec!["cpu", "cuda"],
        notes: Vec::new(),
    }
}

/// Free memory of the 8 GiB GPUs: 256 MiB already taken.
const FREE_8G: u64 = 8 * GIB - 256 * MIB;

/// (a): two 8 GiB GPUs (compute capability 8.0 and 9.0) and a 64 GiB CPU with 48 GiB available.
fn two_gpus() -> Inventory {
    inventory(
        vec![
            gpu(0, 8 * GIB, FREE_8G, (8, 0)),
            gpu(1, 8 * GIB, FREE_8G, (9, 0)),
        ],
        cpu(48 * GIB),
    )
}

/// (b): one 1 GiB GPU (all free) and a CPU with `cpu_available` bytes available.
fn one_small_gpu(cpu_available: u64) -> Inventory {
    inventory(vec![gpu(0, GIB, GIB, (8, 0))], cpu(cpu_available))
}

/// (c): the CPU alone.
fn no_gpu() -> Inventory {
    inventory(Vec::new(), cpu(48 * GIB))
}

/// Every device of `inv` with the defaults, sized for batch 1 x `CONTEXT`.
fn opts(inv: &Inventory) -> PlanOptions {
    PlanOptions {
        workload: Workload {
            batch: 1,
            context: CONTEXT,
        },
        ..PlanOptions::auto(inv)
    }
}

// ---------------------------------------------------------------------------------------------
// The formulas, written out.

/// The dtype of `d` under the default policy (every test CUDA GPU is compute capability 8.0
/// or newer: bf16; Metal: f16; the CPU: f32) or `force`.
fn dtype_for(d: DeviceSpec, force: Option<DType>) -> DType {
    match (force, d.kind) {
        (Some(f), _) => f,
        (None, DeviceKind::Cuda) => DType::BF16,
        (None, DeviceKind::Metal) => DType::F16,
        (None, DeviceKind::Cpu) => DType::F32,
    }
}

fn weights_of(unit: &str, size: u64) -> u64 {
    match unit {
        "embed" => EMBED_NUMEL * size,
        "head" => HEAD_NUMEL * size,
        _ => BLOCK_NUMEL * size,
    }
}

/// `2 x kv_heads x head_dim x context x batch x size` for a block of a decoder.
fn kv_of(model: &ModelCost, unit: &str, size: u64, w: Workload) -> u64 {
    let (b, t) = (w.batch as u64, w.context as u64);
    if unit.starts_with("layers.") && model.shape.unwrap().kv_cache {
        2 * KV_HEADS * HEAD_DIM * t * b * size
    } else {
        0
    }
}

/// The activation peak of one unit (module docs of `ferry_device::memory`): a block's states
/// in the compute dtype, its attention in f32 with a `B T^2` f32 mask when the model computes
/// attention in f32 (else in the compute dtype, no mask); the head's hidden state in the compute
/// dtype and its logits in the compute dtype plus an f32 copy when that is narrower.
fn act_of(model: &ModelCost, unit: &str, size: u64, w: Workload) -> u64 {
    let (b, t) = (w.batch as u64, w.context as u64);
    let shape = model.shape.unwrap();
    let vocab = shape.vocab.map_or(0, |v| v as u64);
    match unit {
        "embed" => b * t * H * size,
        "head" => {
            let logits = if size == 4 { 4 } else { size + 4 };
            b * t * H * size + b * t * vocab * logits
        }
        _ => {
            let states = 2 * b * t * H + 3 * b * t * INTER;
            let attention = 3 * b * t * HEADS * HEAD_DIM + 2 * b * HEADS * t * t;
            if shape.attention_f32 {
                states * size + attention * 4 + b * t * t * 4
            } else {
                (states + attention) * size
            }
        }
    }
}

fn device(plan: &Plan, d: DeviceSpec) -> &DevicePlan {
    plan.devices
        .iter()
        .find(|p| p.device == d)
        .unwrap_or_else(|| panic!("{d} not in the plan"))
}

fn units_on(plan: &Plan, d: DeviceSpec) -> Vec<String> {
    device(plan, d).units.clone()
}

/// Every unit of `model` is on exactly one device, the assignment lists them in forward order
/// and agrees with the devices' lists, and each device's dtype and weight, KV and activation
/// bytes are the formulas' (weights of `Keep::Compute` tensors only).
fn check(plan: &Plan, model: &ModelCost, force: Option<DType>) {
    let w = plan.workload;
    let order: Vec<&str> = model.units.iter().map(|u| u.name.as_str()).collect();
    let assigned: Vec<&str> = plan.assignment.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        assigned, order,
        "assignment in forward order, every unit once"
    );
    for (u, d) in &plan.assignment {
        let holders: Vec<DeviceSpec> = plan
            .devices
            .iter()
            .filter(|p| p.units.contains(u))
            .map(|p| p.device)
            .collect();
        assert_eq!(holders, vec![*d], "{u} is on one device, the one assigned");
    }
    for p in &plan.devices {
        let dtype = dtype_for(p.device, force);
        assert_eq!(p.dtype, dtype, "{}'s dtype", p.device);
        let size = dtype.size_in_bytes() as u64;
        let on: Vec<&str> = order
            .iter()
            .copied()
            .filter(|u| p.units.iter().any(|x| x == u))
            .collect();
        assert_eq!(p.units, on, "{}'s units in forward order", p.device);
        let weights: u64 = on.iter().map(|u| weights_of(u, size)).sum();
        let kv: u64 = on.iter().map(|u| kv_of(model, u, size, w)).sum();
        let act = on
            .iter()
            .map(|u| act_of(model, u, size, w))
            .max()
            .unwrap_or(0);
        assert_eq!(p.weights_bytes, weights, "{} weights", p.device);
        assert_eq!(p.kv_bytes, kv, "{} KV cache", p.device);
        assert_eq!(p.activation_bytes, act, "{} activations", p.device);
        assert_eq!(p.used_bytes(), weights + kv + act);
        assert!(p.free_after() >= 0, "{} over budget", p.device);
    }
}

fn does_not_fit(r: ferry_device::Result<Plan>) -> String {
    match r {
        Err(Error::DoesNotFit(m)) => m,
        Err(e) => panic!("expected DoesNotFit, got {e:?}"),
        Ok(p) => panic!("expected DoesNotFit, got a plan: {:?}", p.assignment),
    }
}

fn option_error(r: ferry_device::Result<Plan>) -> String {
    match r {
        Err(Error::Option(m)) => m,
        Err(e) => panic!("expected an option error, got {e:?}"),
        Ok(p) => panic!("expected an option error, got a plan: {:?}", p.assignment),
    }
}

// ---------------------------------------------------------------------------------------------
// Auto placement.

#[test]
fn two_gpus_fill_in_order_then_spill_to_the_cpu() {
    let inv = two_gpus();
    let model = decoder(30);
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);

    // The reserve of an 8 GiB GPU: 2% is 163.8 MiB, less than the 512 MiB floor.
    let (c0, c1, host) = (DeviceSpec::cuda(0), DeviceSpec::cuda(1), DeviceSpec::CPU);
    for d in [c0, c1] {
        let p = device(&plan, d);
        assert_eq!(p.total_bytes, Some(8 * GIB));
        assert_eq!(p.reserve_bytes, 512 * MIB);
        assert_eq!(p.budget_bytes, FREE_8G - 512 * MIB); // 7424 MiB
    }
    assert_eq!(device(&plan, host).reserve_bytes, 0);
    assert_eq!(device(&plan, host).budget_bytes, 48 * GIB);
    assert_eq!(device(&plan, host).total_bytes, Some(64 * GIB));

    // cuda:0 (bf16): embed 128 MiB + n blocks x (512 MiB + 2 MiB KV) + the 212 MiB block peak
    // <= 7424 MiB holds 13 blocks (7022 MiB; 14 would be 7536); cuda:1 holds 14 (212 + 14 x
    // 514 = 7408 MiB) and not the head (+128 MiB); the last 3 blocks and the head spill to the
    // CPU (f32), whose peak is the f32 block's 268 MiB (the head's is 136).
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..13), &[]));
    assert_eq!(units_on(&plan, c1), layers(13..27));
    assert_eq!(units_on(&plan, host), names(&[], layers(27..30), &["head"]));
    assert_eq!(device(&plan, c0).used_bytes(), 7022 * MIB);
    assert_eq!(device(&plan, c1).used_bytes(), 7408 * MIB);
    assert_eq!(device(&plan, c1).activation_bytes, 212 * MIB);
    let cpu = device(&plan, host);
    assert_eq!(cpu.weights_bytes, 3 * GIB + 256 * MIB + 8 * KIB);
    assert_eq!(cpu.kv_bytes, 12 * MIB);
    assert_eq!(cpu.activation_bytes, 268 * MIB);
    assert_eq!(plan.device_of("layers.12"), Some(c0));
    assert_eq!(plan.device_of("layers.13"), Some(c1));
    assert_eq!(plan.device_of("head"), Some(host));
    assert_eq!(plan.dtype_of(c1), Some(DType::BF16));
    assert_eq!(plan.dtype_of(host), Some(DType::F32));
    assert_eq!(plan.used().count(), 3);
}

#[test]
fn a_small_gpu_takes_what_fits_and_the_cpu_the_rest() {
    let inv = one_small_gpu(48 * GIB);
    let model = decoder(30);
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);
    // 1 GiB less the 512 MiB reserve: the embeddings (128 + 4 MiB) fit, a block (726 MiB
    // with its KV cache and activations) does not.
    let gpu = device(&plan, DeviceSpec::cuda(0));
    assert_eq!(gpu.reserve_bytes, 512 * MIB);
    assert_eq!(gpu.budget_bytes, 512 * MIB);
    assert_eq!(gpu.units, vec!["embed"]);
    assert_eq!(gpu.used_bytes(), 132 * MIB);
    let cpu = device(&plan, DeviceSpec::CPU);
    assert_eq!(cpu.units, names(&[], layers(0..30), &["head"]));
    assert_eq!(cpu.weights_bytes, 30 * GIB + 256 * MIB + 8 * KIB);
    assert_eq!(cpu.kv_bytes, 120 * MIB);
    assert_eq!(cpu.activation_bytes, 268 * MIB);
}

#[test]
fn without_a_gpu_everything_is_on_the_cpu_in_f32() {
    let inv = no_gpu();
    assert_eq!(inv.devices(), vec![DeviceSpec::CPU]);
    let model = decoder(30);
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);
    assert_eq!(plan.devices.len(), 1);
    let cpu = &plan.devices[0];
    assert_eq!(cpu.units.len(), 32);
    assert_eq!(
        cpu.weights_bytes,
        (EMBED_NUMEL + 30 * BLOCK_NUMEL + HEAD_NUMEL) * 4
    );
    assert_eq!(cpu.weights_bytes, 30 * GIB + 512 * MIB + 8 * KIB);
    assert_eq!(cpu.kv_bytes, 30 * 4 * MIB);
    assert_eq!(cpu.activation_bytes, 268 * MIB);
}

#[test]
fn the_reserve_is_the_larger_of_2_percent_and_512_mib() {
    let inv = inventory(
        vec![
            gpu(0, 80 * GIB, 79 * GIB, (9, 0)),
            gpu(1, 8 * GIB, 8 * GIB, (8, 0)),
        ],
        cpu(48 * GIB),
    );
    let model = decoder(2);
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);
    // 2% of 80 GiB is 1717986918.4 bytes.
    let big = device(&plan, DeviceSpec::cuda(0));
    assert_eq!(big.reserve_bytes, 1_717_986_918);
    assert_eq!(big.budget_bytes, 79 * GIB - 1_717_986_918);
    let small = device(&plan, DeviceSpec::cuda(1));
    assert_eq!(small.reserve_bytes, 512 * MIB);
    assert_eq!(small.budget_bytes, 8 * GIB - 512 * MIB);
    assert_eq!(Reserve::default().of(80 * GIB), 1_717_986_918);
    assert_eq!(Reserve::default().of(8 * GIB), 512 * MIB);
}

#[test]
fn a_custom_reserve_moves_the_split() {
    let inv = two_gpus();
    let model = decoder(30);
    // A quarter of each GPU kept: 7936 - 2048 = 5888 MiB to use. cuda:0: 340 + 514 n <= 5888
    // holds 10 blocks; cuda:1: 212 + 514 n <= 5888 holds 11.
    let o = PlanOptions {
        reserve: Reserve {
            fraction: 0.25,
            min_bytes: 0,
        },
        ..opts(&inv)
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    assert_eq!(device(&plan, DeviceSpec::cuda(0)).reserve_bytes, 2 * GIB);
    assert_eq!(device(&plan, DeviceSpec::cuda(0)).budget_bytes, 5888 * MIB);
    let (c0, c1) = (DeviceSpec::cuda(0), DeviceSpec::cuda(1));
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..10), &[]));
    assert_eq!(units_on(&plan, c1), layers(10..21));
    assert_eq!(
        units_on(&plan, DeviceSpec::CPU),
        names(&[], layers(21..30), &["head"])
    );

    // No reserve at all: the whole free memory, 340 + 514 n <= 7936 holds 14 blocks.
    let o = PlanOptions {
        reserve: Reserve {
            fraction: 0.0,
            min_bytes: 0,
        },
        ..opts(&inv)
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    assert_eq!(device(&plan, c0).budget_bytes, FREE_8G);
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..14), &[]));
}

// ---------------------------------------------------------------------------------------------
// --map.

fn with_maps(inv: &Inventory, maps: &[&str]) -> PlanOptions {
    PlanOptions {
        maps: maps
            .iter()
            .map(|m| PlanOptions::parse_map(m).unwrap())
            .collect(),
        ..opts(inv)
    }
}

#[test]
fn a_map_forces_blocks_to_the_cpu() {
    let inv = two_gpus();
    let model = decoder(30);
    let plan = Plan::new(&model, &inv, &with_maps(&inv, &["layers\\.[0-3]=cpu"])).unwrap();
    check(&plan, &model, None);
    // The other units fill the GPUs as before: 13 blocks on cuda:0, the remaining 13 and the
    // head (212 + 13 x 514 + 128 MiB + 4 KiB <= 7424 MiB) on cuda:1.
    let (c0, c1) = (DeviceSpec::cuda(0), DeviceSpec::cuda(1));
    assert_eq!(units_on(&plan, DeviceSpec::CPU), layers(0..4));
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(4..17), &[]));
    assert_eq!(units_on(&plan, c1), names(&[], layers(17..30), &["head"]));
    let cpu = device(&plan, DeviceSpec::CPU);
    assert_eq!(cpu.weights_bytes, 4 * GIB);
    assert_eq!(cpu.kv_bytes, 16 * MIB);
    assert_eq!(cpu.activation_bytes, 268 * MIB);
}

#[test]
fn the_first_matching_map_wins() {
    let inv = two_gpus();
    let model = decoder(30);
    let o = with_maps(&inv, &["layers\\.1[0-9]*=cuda:1", "layers\\..*=cpu"]);
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    let mut on_c1 = vec!["layers.1".to_string()];
    on_c1.extend(layers(10..20));
    assert_eq!(units_on(&plan, DeviceSpec::cuda(1)), on_c1);
    let mut on_cpu = layers(0..1);
    on_cpu.extend(layers(2..10));
    on_cpu.extend(layers(20..30));
    assert_eq!(units_on(&plan, DeviceSpec::CPU), on_cpu);
    // Unmapped units fill from cuda:0.
    assert_eq!(units_on(&plan, DeviceSpec::cuda(0)), vec!["embed", "head"]);

    // The other order: every block goes to the CPU.
    let o = with_maps(&inv, &["layers\\..*=cpu", "layers\\.1[0-9]*=cuda:1"]);
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    assert!(units_on(&plan, DeviceSpec::cuda(1)).is_empty());
    assert_eq!(units_on(&plan, DeviceSpec::CPU), layers(0..30));
}

#[test]
fn a_map_matches_whole_names_only() {
    let (re, d) = PlanOptions::parse_map("layers\\.1=cpu").unwrap();
    assert_eq!(d, DeviceSpec::CPU);
    assert!(re.is_match("layers.1"));
    assert!(!re.is_match("layers.10"));
    assert!(!re.is_match("xlayers.1"));

    let inv = two_gpus();
    let model = decoder(30);
    let plan = Plan::new(&model, &inv, &with_maps(&inv, &["layers\\.1=cpu"])).unwrap();
    check(&plan, &model, None);
    assert_eq!(
        units_on(&plan, DeviceSpec::CPU),
        names(&["layers.1"], layers(28..30), &["head"])
    );
    assert_eq!(plan.device_of("layers.10"), Some(DeviceSpec::cuda(0)));

    // `layers` alone names no unit: an error that lists the units.
    let e = option_error(Plan::new(&model, &inv, &with_maps(&inv, &["layers=cpu"])));
    assert!(
        e.contains("--map layers: no unit of this test-decoder matches"),
        "{e}"
    );
    assert!(
        e.contains("(its units: embed, layers.0, layers.1, layers.2,"),
        "{e}"
    );
    assert!(e.contains("layers.29, head)"), "{e}");
}

#[test]
fn bad_maps_are_errors() {
    let e = PlanOptions::parse_map("layers\\.1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--map layers\\.1") && e.contains("REGEX=DEVICE"),
        "{e}"
    );
    let e = PlanOptions::parse_map("layers\\.(1=cpu")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--map layers\\.(1=cpu"), "{e}");
    assert!(PlanOptions::parse_map("layers\\.1=tpu:0").is_err());
    assert!(PlanOptions::parse_map("layers\\.1=cpu:1").is_err());
    assert!(PlanOptions::parse_map("layers\\.1=cuda:x").is_err());
    // A regex may hold `=`: the device is after the last one.
    let (re, d) = PlanOptions::parse_map("a=b=cuda:1").unwrap();
    assert_eq!(d, DeviceSpec::cuda(1));
    assert!(re.is_match("a=b"));
}

#[test]
fn mapped_units_take_their_room_before_the_others_fill_in() {
    // One 8 GiB GPU capped at 7022 MiB, exactly what the embeddings and 13 blocks take in bf16:
    // 128 + 13 x (512 + 2) + the 212 MiB block peak.
    let inv = inventory(vec![gpu(0, 8 * GIB, FREE_8G, (8, 0))], cpu(48 * GIB));
    let model = decoder(30);
    let (c0, host) = (DeviceSpec::cuda(0), DeviceSpec::CPU);
    let capped = |maps: &[&str]| PlanOptions {
        max_memory: vec![(c0, 7022 * MIB)],
        ..with_maps(&inv, maps)
    };

    // Without a map for the head, the blocks fill cuda:0 to the byte and the head follows the
    // last blocks to the CPU: no room was left for it (a map charged after the filling would
    // overflow cuda:0 by its 128 MiB + 4 KiB).
    let plan = Plan::new(&model, &inv, &capped(&["layers\\.(2[0-9])=cpu"])).unwrap();
    check(&plan, &model, None);
    assert_eq!(device(&plan, c0).used_bytes(), 7022 * MIB);
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..13), &[]));
    assert_eq!(units_on(&plan, host), names(&[], layers(13..30), &["head"]));

    // Mapped to cuda:0, the head is charged first (128 MiB + 4 KiB, its 196 MiB peak), then
    // the embeddings and the blocks fill what is left: 256 MiB + 4 KiB + 514 n + 212 <= 7022
    // holds 12 blocks.
    let maps = ["layers\\.(2[0-9])=cpu", "head=cuda:0"];
    let plan = Plan::new(&model, &inv, &capped(&maps)).unwrap();
    check(&plan, &model, None);
    assert_eq!(plan.device_of("head"), Some(c0));
    assert_eq!(
        units_on(&plan, c0),
        names(&["embed"], layers(0..12), &["head"])
    );
    let p = device(&plan, c0);
    assert_eq!(p.weights_bytes, 256 * MIB + 4 * KIB + 12 * 512 * MIB);
    assert_eq!(p.kv_bytes, 12 * 2 * MIB);
    assert_eq!(p.activation_bytes, 212 * MIB);
    assert_eq!(p.used_bytes(), 6636 * MIB + 4 * KIB);
    // The CPU lists the blocks that spilled (12..19) and the mapped ones (20..29) in forward
    // order, though the mapped ones were charged first.
    assert_eq!(units_on(&plan, host), layers(12..30));
    assert_eq!(plan.device_of("layers.12"), Some(host));
    assert_eq!(plan.device_of("layers.20"), Some(host));

    // Mapped units are charged whatever their budget: too many for cuda:0 do not fit, and the
    // unmapped units go on to the next device rather than add to the overflow.
    // 20 x 514 + 212 = 10492 MiB on cuda:0; the embeddings and the head go to the CPU.
    let m = does_not_fit(Plan::new(
        &model,
        &inv,
        &capped(&["layers\\.1?[0-9]=cuda:0"]),
    ));
    assert!(m.contains("(cuda:0 over by 3470 MiB)"), "{m}");
}

#[test]
fn a_map_that_matches_no_unit_is_an_error() {
    let inv = two_gpus();
    let model = decoder(30);
    // There is no layers.30.
    let e = option_error(Plan::new(
        &model,
        &inv,
        &with_maps(&inv, &["layers\\.[0-3]=cpu", "layers\\.3[0-9]=cuda:1"]),
    ));
    assert!(
        e.starts_with(
            "--map layers\\.3[0-9]: no unit of this test-decoder matches (its units: \
             embed, layers.0,"
        ),
        "{e}"
    );
    // A model that runs on one device, the same.
    let e = option_error(Plan::new(
        &encoder(4),
        &inv,
        &with_maps(&inv, &["head=cpu", "lm_head=cpu"]),
    ));
    assert_eq!(
        e,
        "--map lm_head: no unit of this test-encoder matches (its units: embed, layers.0, \
         layers.1, layers.2, layers.3, head)"
    );
}

// ---------------------------------------------------------------------------------------------
// --max-memory.

#[test]
fn a_memory_cap_moves_the_split() {
    let inv = two_gpus();
    let model = decoder(30);
    let (c0, c1) = (DeviceSpec::cuda(0), DeviceSpec::cuda(1));
    // cuda:0 capped at 2 GiB, no reserve taken off: 340 + 514 n <= 2048 holds 3 blocks.
    let o = PlanOptions {
        max_memory: vec![(c0, 2 << 30)],
        ..opts(&inv)
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    let p = device(&plan, c0);
    assert_eq!((p.budget_bytes, p.reserve_bytes), (2 * GIB, 0));
    assert_eq!(p.total_bytes, Some(8 * GIB));
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..3), &[]));
    assert_eq!(units_on(&plan, c1), layers(3..17));
    assert_eq!(
        units_on(&plan, DeviceSpec::CPU),
        names(&[], layers(17..30), &["head"])
    );
    // cuda:1 keeps its reserve.
    assert_eq!(device(&plan, c1).reserve_bytes, 512 * MIB);

    // A cap above the free memory is the free memory (no reserve): 14 blocks.
    let o = PlanOptions {
        max_memory: vec![(c0, 100 * GIB)],
        ..opts(&inv)
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    assert_eq!(device(&plan, c0).budget_bytes, FREE_8G);
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..14), &[]));

    // A cap on the CPU makes a model that fitted not fit.
    let o = PlanOptions {
        max_memory: vec![(DeviceSpec::CPU, 3 * GIB)],
        ..opts(&inv)
    };
    does_not_fit(Plan::new(&model, &inv, &o));
}

#[test]
fn a_device_this_machine_lacks_needs_a_cap() {
    let inv = no_gpu();
    let model = decoder(30);
    let c0 = DeviceSpec::cuda(0);
    let o = PlanOptions {
        devices: vec![c0, DeviceSpec::CPU],
        ..opts(&inv)
    };
    // A build without CUDA says how to build it; one with CUDA, how to plan for the device.
    let lacking = |r: ferry_device::Result<Plan>, spec: &str| match r {
        Err(Error::NotCompiled { feature, how, .. }) if !cfg!(feature = "cuda") => {
            assert_eq!(feature, "cuda");
            assert!(how.contains("--features cuda"), "{how}");
        }
        r => {
            let e = option_error(r);
            assert!(
                e.contains(&format!(
                    "device {spec} is not usable on this machine (it has cpu)"
                )),
                "{e}"
            );
            assert!(
                e.contains(&format!(
                    "use --devices cpu, or plan for it without loading it: ferry place \
                     --dry-run --max-memory {spec}=SIZE"
                )),
                "{e}"
            );
        }
    };
    lacking(Plan::new(&model, &inv, &o), "cuda:0");
    // Named only by a map, the same.
    lacking(
        Plan::new(&model, &inv, &with_maps(&inv, &["head=cuda:1"])),
        "cuda:1",
    );

    // With a cap it is planned for: 4 GiB, no reserve, bf16 (capability unknown):
    // 340 + 514 n <= 4096 holds 7 blocks.
    let o = PlanOptions {
        max_memory: vec![(c0, 4 * GIB)],
        ..o
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    let p = device(&plan, c0);
    assert_eq!(p.total_bytes, None);
    assert_eq!((p.budget_bytes, p.reserve_bytes), (4 * GIB, 0));
    assert_eq!(p.dtype, DType::BF16);
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..7), &[]));
    assert_eq!(
        units_on(&plan, DeviceSpec::CPU),
        names(&[], layers(7..30), &["head"])
    );
}

#[test]
fn a_cap_for_a_device_not_placed_on_is_an_error() {
    let inv = two_gpus();
    let model = decoder(30);
    let (c0, c1, host) = (DeviceSpec::cuda(0), DeviceSpec::cuda(1), DeviceSpec::CPU);
    let o = PlanOptions {
        devices: vec![c0, host],
        max_memory: vec![(c1, GIB)],
        ..opts(&inv)
    };
    let e = option_error(Plan::new(&model, &inv, &o));
    assert_eq!(
        e,
        "--max-memory names cuda:1, which is not among the devices placed on (cuda:0, cpu); add \
         it to --devices"
    );

    // Named by a map it is placed on, within its cap (no reserve), and `auto` does not fill it:
    // cuda:0 takes the embeddings and 13 blocks as ever, the CPU the other 17.
    let o = PlanOptions {
        maps: vec![PlanOptions::parse_map("head=cuda:1").unwrap()],
        ..o
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    let p = device(&plan, c1);
    assert_eq!((p.budget_bytes, p.reserve_bytes), (GIB, 0));
    assert_eq!(p.units, vec!["head"]);
    // The head's weights and its 196 MiB peak (the logits in bf16 and in f32).
    assert_eq!(p.used_bytes(), 128 * MIB + 4 * KIB + 196 * MIB);
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..13), &[]));
    assert_eq!(units_on(&plan, host), layers(13..30));
}

// ---------------------------------------------------------------------------------------------
// Does not fit.

#[test]
fn a_model_whose_weights_do_not_fit_says_by_how_much_and_to_quantize() {
    // (b) with 8 GiB of RAM: the GPU takes the embeddings (132 MiB of its 512), the CPU the 30
    // blocks and the head in f32: 30 GiB + 256 MiB + 8 KiB of weights, 120 MiB of KV cache,
    // 268 MiB of activations = 31364 MiB + 8 KiB against 8192 MiB.
    let inv = one_small_gpu(8 * GIB);
    let model = decoder(30);
    let o = opts(&inv);
    let m = does_not_fit(Plan::new(&model, &inv, &o));
    let cpu_used = 30 * GIB + 256 * MIB + 8 * KIB + 120 * MIB + 268 * MIB;
    let over = cpu_used - 8 * GIB;
    assert_eq!(over.div_ceil(MIB), 23173);
    assert!(
        m.contains("exceeds total capacity by 23173 MiB (cpu over by 23173 MiB);"),
        "{m}"
    );
    assert!(m.starts_with("test-decoder does not fit"), "{m}");
    assert_eq!((cpu_used + 132 * MIB).div_ceil(MIB), 31497);
    assert!(m.contains("it needs 31497 MiB"), "{m}");
    assert!(
        m.contains("cuda:0 512 MiB, cpu 8192 MiB hold 8704 MiB"),
        "{m}"
    );
    assert!(m.contains("batch 1 x context 1024"), "{m}");
    assert!(m.contains("even its weights do not fit"), "{m}");
    assert!(m.contains("quantize"), "{m}");
    assert!(!m.contains("it fits at"), "{m}");
    assert!(!m.contains("cuda:0 over"), "{m}");
}

/// The CPU's use for `decoder(4)` on `one_small_gpu`, where the GPU holds only the embeddings:
/// 4 blocks and the head in f32, their KV caches, the block's activation peak.
fn cpu_use_of_4_blocks(w: Workload) -> u64 {
    let (b, t) = (w.batch as u64, w.context as u64);
    let weights = 4 * BLOCK_NUMEL * 4 + HEAD_NUMEL * 4;
    let kv = 4 * 2 * KV_HEADS * HEAD_DIM * t * b * 4;
    // The f32 block's: states, attention and mask all in f32 (more than the head's logits).
    let act = (2 * b * t * H + 3 * b * t * INTER) * 4
        + (3 * b * t * HEADS * HEAD_DIM + 2 * b * HEADS * t * t) * 4
        + b * t * t * 4;
    weights + kv + act
}

#[test]
fn a_context_too_long_names_the_longest_that_fits() {
    let inv = one_small_gpu(6 * GIB);
    let model = decoder(4);
    let at = |context| PlanOptions {
        workload: Workload { batch: 1, context },
        ..PlanOptions::auto(&inv)
    };
    // 4563410944 + 155648 T + 132 T^2 <= 6 GiB: T <= 3229.
    let w = |context| Workload { batch: 1, context };
    assert_eq!(cpu_use_of_4_blocks(w(0)), 4_563_410_944);
    assert!(cpu_use_of_4_blocks(w(3229)) <= 6 * GIB);
    assert!(cpu_use_of_4_blocks(w(3230)) > 6 * GIB);
    let m = does_not_fit(Plan::new(&model, &inv, &at(8192)));
    let over = cpu_use_of_4_blocks(w(8192)) - 6 * GIB;
    assert_eq!(over.div_ceil(MIB), 7873);
    assert!(
        m.contains("exceeds total capacity by 7873 MiB (cpu over by 7873 MiB);"),
        "{m}"
    );
    assert!(m.ends_with(" it fits at a context of 3229 tokens"), "{m}");

    let plan = Plan::new(&model, &inv, &at(3229)).unwrap();
    check(&plan, &model, None);
    assert_eq!(units_on(&plan, DeviceSpec::cuda(0)), vec!["embed"]);
    assert_eq!(
        device(&plan, DeviceSpec::CPU).used_bytes(),
        cpu_use_of_4_blocks(w(3229))
    );
    does_not_fit(Plan::new(&model, &inv, &at(3230)));
}

#[test]
fn a_batch_too_large_suggests_batch_1() {
    let inv = one_small_gpu(6 * GIB);
    let model = decoder(4);
    let w = Workload {
        batch: 4,
        context: 2048,
    };
    let o = PlanOptions {
        workload: w,
        ..PlanOptions::auto(&inv)
    };
    let m = does_not_fit(Plan::new(&model, &inv, &o));
    let over = cpu_use_of_4_blocks(w) - 6 * GIB;
    assert_eq!(over.div_ceil(MIB), 1537);
    assert!(
        m.contains("exceeds total capacity by 1537 MiB (cpu over by 1537 MiB);"),
        "{m}"
    );
    assert!(m.contains("batch 4 x context 2048"), "{m}");
    assert!(m.ends_with(" it fits at batch 1"), "{m}");
    assert!(cpu_use_of_4_blocks(Workload { batch: 1, ..w }) <= 6 * GIB);
    let o = PlanOptions {
        workload: Workload { batch: 1, ..w },
        ..o
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
}

#[test]
fn the_message_lists_every_device_over_its_budget() {
    // 20 blocks mapped to cuda:0 (bf16): 20 x (512 + 2) + 212 = 10492 MiB against 7424; 10
    // mapped to the CPU capped at 2 GiB (f32): 10 x (1024 + 4) + 268 = 10548 MiB against
    // 2048. The embeddings and the head do not fit cuda:0 and go to cuda:1 (452 MiB + 4 KiB).
    let inv = two_gpus();
    let model = decoder(30);
    let o = PlanOptions {
        max_memory: vec![(DeviceSpec::CPU, 2 * GIB)],
        ..with_maps(&inv, &["layers\\.1?[0-9]=cuda:0", "layers\\.2[0-9]=cpu"])
    };
    let m = does_not_fit(Plan::new(&model, &inv, &o));
    let c0_over = 20 * 514 * MIB + 212 * MIB - 7424 * MIB;
    let cpu_over = 10 * 1028 * MIB + 268 * MIB - 2 * GIB;
    assert_eq!((c0_over / MIB, cpu_over / MIB), (3068, 8500));
    assert!(
        m.contains(
            "exceeds total capacity by 11568 MiB (cuda:0 over by 3068 MiB, cpu over by 8500 \
             MiB);"
        ),
        "{m}"
    );
    assert!(m.contains("it needs 21493 MiB"), "{m}");
    assert!(
        m.contains("cuda:0 7424 MiB, cuda:1 7424 MiB, cpu 2048 MiB hold 16896 MiB"),
        "{m}"
    );
    assert!(!m.contains("cuda:1 over"), "{m}");
    // 20 blocks' weights alone (10 GiB) exceed cuda:0 at any context.
    assert!(m.contains("even its weights do not fit"), "{m}");
}

#[test]
fn what_the_cpu_holds_besides_the_plan_comes_off_its_budget() {
    // decoder(4) at batch 1 x 2048 on (b) with 6 GiB of RAM: the GPU takes the embeddings, the
    // CPU 4 blocks and the head, 5184 MiB + 8 KiB.
    let inv = one_small_gpu(6 * GIB);
    let model = decoder(4);
    let w = Workload {
        batch: 1,
        context: 2048,
    };
    let need = cpu_use_of_4_blocks(w);
    assert_eq!(need, 5184 * MIB + 8 * KIB);
    let held = |bytes| PlanOptions {
        workload: w,
        held_on_cpu: bytes,
        ..PlanOptions::auto(&inv)
    };
    let plan = Plan::new(&model, &inv, &held(0)).unwrap();
    check(&plan, &model, None);
    assert_eq!(device(&plan, DeviceSpec::CPU).budget_bytes, 6 * GIB);
    assert_eq!(device(&plan, DeviceSpec::CPU).used_bytes(), need);

    // Holding exactly what is left still fits; a byte more does not, and the longest context
    // that fits is one token shorter.
    let plan = Plan::new(&model, &inv, &held(6 * GIB - need)).unwrap();
    check(&plan, &model, None);
    let cpu = device(&plan, DeviceSpec::CPU);
    assert_eq!(cpu.budget_bytes, need);
    assert_eq!(cpu.free_after(), 0);
    // The GPU's budget is its own.
    assert_eq!(device(&plan, DeviceSpec::cuda(0)).budget_bytes, 512 * MIB);
    let m = does_not_fit(Plan::new(&model, &inv, &held(6 * GIB - need + 1)));
    assert!(
        m.contains("exceeds total capacity by 1 MiB (cpu over by 1 MiB);"),
        "{m}"
    );
    assert!(cpu_use_of_4_blocks(Workload { context: 2047, ..w }) < need);
    assert!(m.ends_with(" it fits at a context of 2047 tokens"), "{m}");

    // A 1 GiB f32 reference: 5120 MiB left, 64 MiB + 8 KiB short; 4563410944 + 155648 T +
    // 132 T^2 <= 5 GiB holds T <= 1949.
    let m = does_not_fit(Plan::new(&model, &inv, &held(GIB)));
    assert!(
        m.contains("cuda:0 512 MiB, cpu 5120 MiB hold 5632 MiB"),
        "{m}"
    );
    assert!(
        m.contains("exceeds total capacity by 65 MiB (cpu over by 65 MiB);"),
        "{m}"
    );
    assert!(cpu_use_of_4_blocks(Workload { context: 1949, ..w }) <= 5 * GIB);
    assert!(cpu_use_of_4_blocks(Workload { context: 1950, ..w }) > 5 * GIB);
    assert!(m.ends_with(" it fits at a context of 1949 tokens"), "{m}");
}

// ---------------------------------------------------------------------------------------------
// Models that run on one device.

/// A 4 GiB GPU before an 8 GiB one (7424 MiB to use), then the CPU.
fn small_then_big() -> Inventory {
    inventory(
        vec![
            gpu(0, 4 * GIB, 4 * GIB, (8, 0)),
            gpu(1, 8 * GIB, FREE_8G, (8, 6)),
        ],
        cpu(48 * GIB),
    )
}

#[test]
fn an_unsplittable_model_goes_whole_to_the_first_device_that_holds_it() {
    let inv = small_then_big();
    let (c0, c1) = (DeviceSpec::cuda(0), DeviceSpec::cuda(1));
    let all = |n| names(&["embed"], layers(0..n), &["head"]);
    // bf16: 256 MiB + 4 KiB of embeddings and head, 512 MiB a block, no KV cache, the 132 MiB
    // block peak (attention in bf16, no mask). 4 blocks (2436 MiB) fit cuda:0's 3584 MiB.
    let model = encoder(4);
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);
    assert_eq!(units_on(&plan, c0), all(4));
    assert_eq!(device(&plan, c0).used_bytes(), 2436 * MIB + 4 * KIB);
    assert_eq!(device(&plan, c0).kv_bytes, 0);
    // 8 blocks (4484 MiB) do not; cuda:1 holds them all, though cuda:0 could take a part.
    let model = encoder(8);
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);
    assert!(units_on(&plan, c0).is_empty());
    assert_eq!(units_on(&plan, c1), all(8));
    // 16 blocks (8580 MiB) fit neither GPU: the CPU, in f32.
    let model = encoder(16);
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);
    assert_eq!(units_on(&plan, DeviceSpec::CPU), all(16));
    assert_eq!(
        device(&plan, DeviceSpec::CPU).weights_bytes,
        16 * GIB + 512 * MIB + 8 * KIB
    );
    // 50 blocks fit nowhere: all on the CPU, the last device, over by 2825 MiB.
    let m = does_not_fit(Plan::new(&encoder(50), &inv, &opts(&inv)));
    let over = 50 * GIB + 512 * MIB + 8 * KIB + 264 * MIB - 48 * GIB;
    assert_eq!(over.div_ceil(MIB), 2825);
    assert!(
        m.contains("exceeds total capacity by 2825 MiB (cpu over by 2825 MiB);"),
        "{m}"
    );
    assert!(m.contains("even its weights do not fit"), "{m}");
}

#[test]
fn a_map_on_any_unit_moves_an_unsplittable_model_whole() {
    let inv = small_then_big();
    let model = encoder(4);
    let all = names(&["embed"], layers(0..4), &["head"]);
    let plan = Plan::new(&model, &inv, &with_maps(&inv, &["head=cpu"])).unwrap();
    check(&plan, &model, None);
    assert_eq!(units_on(&plan, DeviceSpec::CPU), all);
    assert!(units_on(&plan, DeviceSpec::cuda(0)).is_empty());
    let plan = Plan::new(&model, &inv, &with_maps(&inv, &["layers\\.2=cuda:1"])).unwrap();
    check(&plan, &model, None);
    assert_eq!(units_on(&plan, DeviceSpec::cuda(1)), all);
    assert!(units_on(&plan, DeviceSpec::cuda(0)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Dtypes and quantized tensors.

#[test]
fn forcing_f32_counts_four_bytes_a_weight_on_gpus() {
    let inv = two_gpus();
    let model = decoder(30);
    let o = PlanOptions {
        policy: DTypePolicy {
            force: Some(DType::F32),
        },
        ..opts(&inv)
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, Some(DType::F32));
    // f32: embed 256 MiB, a block 1 GiB + 4 MiB KV, the block peak 268 MiB.
    // cuda:0: 524 + 1028 n <= 7424 holds 6 blocks; cuda:1: 268 + 1028 n <= 7424 holds 6
    // (7 would need 7464 MiB).
    let (c0, c1) = (DeviceSpec::cuda(0), DeviceSpec::cuda(1));
    assert_eq!(plan.dtype_of(c0), Some(DType::F32));
    assert_eq!(units_on(&plan, c0), names(&["embed"], layers(0..6), &[]));
    assert_eq!(units_on(&plan, c1), layers(6..12));
    assert_eq!(device(&plan, c0).weights_bytes, 256 * MIB + 6 * GIB);
    assert_eq!(device(&plan, c0).kv_bytes, 24 * MIB);
    assert_eq!(device(&plan, c0).activation_bytes, 268 * MIB);
    assert_eq!(device(&plan, c1).used_bytes(), 6 * 1028 * MIB + 268 * MIB);
}

#[test]
fn fixed_size_tensors_take_their_stated_bytes_on_each_device() {
    let inv = two_gpus();
    let mut model = decoder(4);
    for u in model.units.iter_mut().filter(|u| u.role == Role::Block) {
        u.tensors[1].keep = Keep::Fixed {
            cpu_bytes: 100 * MIB,
            accelerator_bytes: 60 * MIB,
        };
    }
    let plan = Plan::new(&model, &inv, &with_maps(&inv, &["layers\\.[01]=cpu"])).unwrap();
    let (c0, host) = (DeviceSpec::cuda(0), DeviceSpec::CPU);
    assert_eq!(units_on(&plan, host), layers(0..2));
    assert_eq!(
        units_on(&plan, c0),
        names(&["embed"], layers(2..4), &["head"])
    );
    // cuda:0: embed 128 MiB, 2 x (attn 128 MiB + 60 MiB), head 128 MiB + 4 KiB (bf16).
    assert_eq!(device(&plan, c0).weights_bytes, 632 * MIB + 4 * KIB);
    // cpu: 2 x (attn 256 MiB + 100 MiB) (f32).
    assert_eq!(device(&plan, host).weights_bytes, 712 * MIB);
    // KV cache and activations are the dtype's as ever.
    assert_eq!(device(&plan, c0).kv_bytes, 4 * MIB);
    assert_eq!(device(&plan, host).kv_bytes, 8 * MIB);
    assert_eq!(device(&plan, c0).activation_bytes, 212 * MIB);
    assert_eq!(device(&plan, host).activation_bytes, 268 * MIB);
}

#[test]
fn f32_tensors_take_four_bytes_an_element_on_every_device() {
    let inv = two_gpus();
    let mut model = decoder(4);
    for u in model.units.iter_mut().filter(|u| u.role == Role::Block) {
        u.tensors[0].keep = Keep::F32;
    }
    let plan = Plan::new(&model, &inv, &with_maps(&inv, &["layers\\.[01]=cpu"])).unwrap();
    let (c0, host) = (DeviceSpec::cuda(0), DeviceSpec::CPU);
    assert_eq!(
        units_on(&plan, c0),
        names(&["embed"], layers(2..4), &["head"])
    );
    // cuda:0 (bf16): embed 128 MiB, 2 x (attn 256 MiB in f32 + mlp 384 MiB), head 128 MiB + 4 KiB.
    assert_eq!(device(&plan, c0).weights_bytes, 1536 * MIB + 4 * KIB);
    // cpu (f32): 2 x 1 GiB, as a Compute tensor would be.
    assert_eq!(device(&plan, host).weights_bytes, 2 * GIB);
}

// ---------------------------------------------------------------------------------------------
// Unified memory (Metal).

/// An Apple machine: 16 GiB of RAM, 12 GiB available, `metal:0` sharing it (its total and
/// free are the CPU's, as `Inventory::detect` reports them).
fn apple() -> Inventory {
    let mut cpu = cpu(12 * GIB);
    cpu.total_bytes = 16 * GIB;
    Inventory {
        metal: vec![GpuInfo {
            device: DeviceSpec::metal(0),
            name: "test apple gpu".into(),
            compute_capability: None,
            total_bytes: cpu.total_bytes,
            free_bytes: cpu.available_bytes,
        }],
        cpu,
        cuda: Vec::new(),
        compiled: vec!["cpu", "metal"],
        notes: Vec::new(),
    }
}

#[test]
fn metal_and_the_cpu_share_the_ram_without_counting_it_twice() {
    let inv = apple();
    let (gpu, host) = (DeviceSpec::metal(0), DeviceSpec::CPU);
    assert_eq!(inv.devices(), vec![gpu, host]);
    let model = decoder(18);

    // Uncapped: 3/4 of the 12 GiB available (9216 MiB) less the reserve (512 MiB: 2% of 16 GiB
    // is less) for metal:0; the CPU keeps the other 3 GiB.
    let plan = Plan::new(&model, &inv, &opts(&inv)).unwrap();
    check(&plan, &model, None);
    let p = device(&plan, gpu);
    assert_eq!(p.dtype, DType::F16);
    assert_eq!(p.total_bytes, Some(16 * GIB));
    assert_eq!(p.reserve_bytes, 512 * MIB);
    assert_eq!(p.budget_bytes, 8704 * MIB);
    let cpu = device(&plan, host);
    assert_eq!((cpu.budget_bytes, cpu.reserve_bytes), (3 * GIB, 0));
    assert_eq!(cpu.total_bytes, Some(16 * GIB));
    // f16 as bf16: 340 + 514 n <= 8704 holds 16 blocks (8564 MiB); the CPU takes 2 blocks and
    // the head in f32: 2048 + 256 MiB + 8 KiB + 8 + 268 = 2580 MiB + 8 KiB of its 3072.
    assert_eq!(units_on(&plan, gpu), names(&["embed"], layers(0..16), &[]));
    assert_eq!(p.used_bytes(), 8564 * MIB);
    assert_eq!(units_on(&plan, host), names(&[], layers(16..18), &["head"]));
    assert_eq!(device(&plan, host).used_bytes(), 2580 * MIB + 8 * KIB);

    // Capped at 4 GiB: metal:0 takes its cap (no reserve), the CPU the other 8 GiB.
    // 340 + 514 n <= 4096 holds 7 blocks; the CPU 5 blocks and the head (5664 MiB + 8 KiB).
    let model = decoder(12);
    let o = PlanOptions {
        max_memory: vec![(gpu, 4 * GIB)],
        ..opts(&inv)
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    let p = device(&plan, gpu);
    assert_eq!((p.budget_bytes, p.reserve_bytes), (4 * GIB, 0));
    assert_eq!(device(&plan, host).budget_bytes, 8 * GIB);
    assert_eq!(units_on(&plan, gpu), names(&["embed"], layers(0..7), &[]));
    assert_eq!(units_on(&plan, host), names(&[], layers(7..12), &["head"]));
    assert_eq!(device(&plan, host).used_bytes(), 5664 * MIB + 8 * KIB);
    // Placing on the CPU alone, the whole 12 GiB available is its.
    let o = PlanOptions {
        devices: vec![host],
        ..opts(&inv)
    };
    let plan = Plan::new(&decoder(2), &inv, &o).unwrap();
    assert_eq!(plan.devices.len(), 1);
    assert_eq!(device(&plan, host).budget_bytes, 12 * GIB);
    // Unless a map names metal:0: it takes its share then.
    let o = PlanOptions {
        maps: vec![PlanOptions::parse_map("head=metal:0").unwrap()],
        ..o
    };
    let model = decoder(2);
    let plan = Plan::new(&model, &inv, &o).unwrap();
    check(&plan, &model, None);
    assert_eq!(device(&plan, gpu).budget_bytes, 8704 * MIB);
    assert_eq!(device(&plan, host).budget_bytes, 3 * GIB);
    assert_eq!(units_on(&plan, gpu), vec!["head"]);
    // The head in f16 holds its logits in f16 and in f32: 4 + 32 x 6 = 196 MiB.
    assert_eq!(device(&plan, gpu).activation_bytes, 196 * MIB);
}

#[test]
fn there_is_one_metal_device() {
    assert_eq!(
        "metal:0".parse::<DeviceSpec>().unwrap(),
        DeviceSpec::metal(0)
    );
    assert_eq!("metal".parse::<DeviceSpec>().unwrap(), DeviceSpec::metal(0));
    assert_eq!("mps".parse::<DeviceSpec>().unwrap(), DeviceSpec::metal(0));
    for s in ["metal:1", "mps:2"] {
        let e = s.parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains("there is one Metal device, `metal:0`"), "{e}");
    }
    let e = PlanOptions::parse_map("head=metal:1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--map head=metal:1"), "{e}");
    assert!(e.contains("`metal:0`"), "{e}");
    assert!("cuda:3".parse::<DeviceSpec>().is_ok());
}

// ---------------------------------------------------------------------------------------------
// JSON.

#[test]
fn a_plan_serializes_with_device_and_dtype_names() {
    let inv = no_gpu();
    let model = decoder(30);
    let o = PlanOptions {
        devices: vec![DeviceSpec::cuda(0), DeviceSpec::CPU],
        max_memory: vec![(DeviceSpec::cuda(0), 4 * GIB)],
        ..opts(&inv)
    };
    let plan = Plan::new(&model, &inv, &o).unwrap();
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["arch"], "test-decoder");
    assert_eq!(
        v["workload"],
        serde_json::json!({"batch": 1, "context": 1024})
    );
    let gpu = &v["devices"][0];
    assert_eq!(gpu["device"], "cuda:0");
    assert_eq!(gpu["dtype"], "bf16");
    assert_eq!(gpu["total_bytes"], serde_json::Value::Null);
    assert_eq!(gpu["budget_bytes"], 4 * GIB);
    assert_eq!(gpu["reserve_bytes"], 0);
    assert_eq!(gpu["weights_bytes"], 128 * MIB + 7 * 512 * MIB);
    assert_eq!(gpu["units"][0], "embed");
    assert!(gpu.get("auto").is_none(), "{gpu}");
    let cpu = &v["devices"][1];
    assert_eq!(cpu["device"], "cpu");
    assert_eq!(cpu["dtype"], "f32");
    assert_eq!(cpu["total_bytes"], 64 * GIB);
    assert_eq!(v["assignment"][0], serde_json::json!(["embed", "cuda:0"]));
    assert_eq!(v["assignment"][31], serde_json::json!(["head", "cpu"]));
    assert_eq!(v["assignment"].as_array().unwrap().len(), 32);
}
