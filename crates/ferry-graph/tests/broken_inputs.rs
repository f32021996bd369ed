//! Truncated, corrupt and hostile ONNX files give errors naming what is wrong; nothing panics
//! and nothing allocates what a header claims before checking it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use candle_core::Device;
use ferry_graph::exec::Executor;
use ferry_graph::onnx::proto;
use ferry_graph::onnx::read_model;
use ferry_graph::{Error, Node};
use prost::Message;

fn fixture(name: &str) -> PathBuf {
    ferry_testkit::fixture(&format!("graph/{name}"))
}

fn err_of(path: &Path) -> String {
    read_model(path).map(|_| ()).unwrap_err().to_string()
}

/// A model with one initializer `w` of `dims` holding `raw` bytes, and `y = Relu(w)`.
fn model_with(dims: Vec<i64>, raw: Vec<u8>, external: Option<&str>) -> Vec<u8> {
    let mut t = proto::TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims,
        ..Default::default()
    };
    match external {
        Some(loc) => {
            t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
            t.external_data = vec![proto::StringStringEntryProto {
                key: Some("location".into()),
                value: Some(loc.into()),
            }];
        }
        None => t.raw_data = Some(Bytes::from(raw)),
    }
    let m = proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(proto::GraphProto {
            name: Some("g".into()),
            initializer: vec![t],
            node: vec![proto::NodeProto {
                name: Some("relu".into()),
                op_type: Some("Relu".into()),
                input: vec!["w".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            output: vec![proto::ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    m.encode_to_vec()
}

#[test]
fn truncated_and_garbage_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("encoder.onnx")).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&cut);
    assert!(
        e.contains("cut.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );

    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"PK\x03\x04 this is a zip, not a protobuf").unwrap();
    assert!(err_of(&junk).contains("junk.onnx"), "{}", err_of(&junk));

    let missing = err_of(&dir.path().join("nope.onnx"));
    assert!(missing.contains("nope.onnx"), "{missing}");
}

#[test]
fn a_header_claiming_1e15_elements_is_refused_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.onnx");
    std::fs::write(
        &p,
        model_with(vec![1_000_000_000, 1_000_000], vec![0; 4], None),
    )
    .unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("`w`") && e.contains("raw_data holds 4 bytes") && e.contains("4000000000000000"),
        "{e}"
    );

    std::fs::write(&p, model_with(vec![-3], vec![], None)).unwrap();
    assert!(err_of(&p).contains("negative dimension"), "{}", err_of(&p));
}

#[test]
fn external_data_must_stay_inside_the_model_folder_and_be_complete() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("escape.onnx");
    std::fs::write(&p, model_with(vec![4], vec![], Some("../../etc/passwd"))).unwrap();
    let e = err_of(&p);
    assert!(e.contains("leaves the model's folder"), "{e}");

    // The real external-data fixture, with its data file cut short.
    let model = dir.path().join("linear_external.onnx");
    std::fs::copy(fixture("linear_external.onnx"), &model).unwrap();
    let data = std::fs::read(fixture("linear_external.onnx.data")).unwrap();
    std::fs::write(
        dir.path().join("linear_external.onnx.data"),
        &data[..data.len() - 8],
    )
    .unwrap();
    let e = err_of(&model);
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn unsupported_ops_are_all_listed_before_running() {
    let mut model = read_model(&fixture("cnn.onnx")).unwrap();
    model.graph.nodes[0].op_type = "FancyConv".into();
    let last = model.graph.nodes.len() - 1;
    model.graph.nodes[last].op_type = "MysteryPool".into();
    let err = Executor::new(&model, &Device::Cpu).map(|_| ()).unwrap_err();
    let Error::Unsupported(list) = &err else {
        panic!("{err}")
    };
    assert_eq!(list.len(), 2, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("FancyConv") && text.contains("MysteryPool") && text.contains("opset 13"),
        "{text}"
    );
}

#[test]
fn a_node_on_an_unavailable_device_is_an_error_naming_it() {
    let mut model = read_model(&fixture("linear.onnx")).unwrap();
    model.graph.nodes[0].device = Some("cuda:3".into());
    let name = model.graph.nodes[0].name.clone();
    let e = Executor::new(&model, &Device::Cpu)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&name), "{e}");
    if !cfg!(feature = "cuda") {
        assert!(e.contains("--features cuda"), "{e}");
    }
    model.graph.nodes[0].device = Some("tpu:0".into());
    let e = Executor::new(&model, &Device::Cpu)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device `tpu:0`") && e.contains("expected cpu, cuda:N or metal:N"),
        "{e}"
    );
}

#[test]
fn a_graph_reading_an_undefined_value_is_invalid() {
    let mut model = read_model(&fixture("linear.onnx")).unwrap();
    model.graph.nodes.push(Node::new(
        "dangling",
        "Relu",
        vec!["nowhere".into()],
        vec!["z".into()],
    ));
    let e = model.graph.validate().unwrap_err().to_string();
    assert!(e.contains("`dangling`") && e.contains("`nowhere`"), "{e}");
}

#[test]
fn a_graph_asking_for_1e16_elements_gets_an_error_not_an_allocation() {
    use ferry_graph::ir::{entry_from_candle, Graph, OnnxModel, ValueInfo};
    use ferry_graph::passes::{by_names, PassManager};
    let shape = candle_core::Tensor::new(&[100_000_000i64, 100_000_000], &Device::Cpu).unwrap();
    let mut model = OnnxModel {
        graph: Graph {
            outputs: vec![ValueInfo::untyped("y")],
            nodes: vec![Node::new(
                "huge",
                "ConstantOfShape",
                vec!["shape".into()],
                vec!["y".into()],
            )],
            ..Graph::default()
        },
        opsets: [(String::new(), 17)].into_iter().collect(),
        ..OnnxModel::default()
    };
    model
        .graph
        .initializers
        .insert("shape".into(), entry_from_candle("shape", &shape).unwrap());
    let e = Executor::new(&model, &Device::Cpu)
        .unwrap()
        .run(&Default::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node `huge` (ConstantOfShape)") && e.contains("memory budget"),
        "{e}"
    );
    let r = PassManager::new(by_names(&["const-fold".into()]).unwrap())
        .run(&mut model, |_| {})
        .unwrap();
    assert_eq!(model.graph.nodes.len(), 1, "the node stays");
    assert!(
        r.passes[0].skipped[0].reason.contains("too large to store"),
        "{r:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Memory budget: the hostile graphs of `scripts/make_hostile_onnx.py` (fixtures/hostile_onnx/),
// each run the ways `ferry optimize`, `ferry optimize --verify` and `ferry run` run a graph.

fn hostile(name: &str) -> PathBuf {
    ferry_testkit::fixture(&format!("hostile_onnx/{name}.onnx"))
}

/// What `ferry optimize [--verify]` does (crates/ferry-cli/src/cmd/optimize.rs): read the
/// model, run every pass, verified after each one with `--verify`.
fn optimize(
    path: &Path,
    verify: bool,
) -> Result<ferry_graph::passes::PipelineReport, ferry_graph::Error> {
    use ferry_graph::passes::{all, PassManager, VerifyOptions};
    let mut model = read_model(path)?;
    let mut manager = PassManager::new(all());
    if verify {
        manager = manager.verify(VerifyOptions::default());
    }
    manager.run(&mut model, |_| {})
}

/// What `ferry run MODEL --input ...` does (crates/ferry-cli/src/cmd/run.rs): read the model,
/// build the executor, run it on `inputs`, then read every output (its `--output` file and its
/// printed summary do).
fn run(path: &Path, inputs: &[(&str, candle_core::Tensor)]) -> Result<(), ferry_graph::Error> {
    let model = read_model(path)?;
    let inputs = inputs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let outputs = Executor::new(&model, &Device::Cpu)?.run(&inputs)?;
    for (name, t) in &outputs {
        ferry_graph::ir::entry_from_candle(name, t)?;
    }
    Ok(())
}

/// The error names the node, its op and the budget, and says how to raise it.
fn assert_over_budget(e: &str, node: &str, op: &str) {
    assert!(
        e.contains(&format!("node `{node}` ({op})"))
            && e.contains("memory budget of 4.0 GiB")
            && e.contains("FERRY_MAX_TENSOR_BYTES="),
        "{e}"
    );
}

/// What plain `ferry optimize` (no `--verify`) does with a hostile graph.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plain {
    /// A pass runs the node (a probe) and fails with the budget error.
    Refused,
    /// Constant folding runs the node under its own smaller limit, and leaves it alone saying
    /// why; the pipeline succeeds.
    NotFolded,
    /// Nothing runs the node; the pipeline succeeds.
    Untouched,
}

/// `ferry optimize --verify` and `ferry run` (on `run_inputs`) end in an error naming `node`
/// (`op`) and the budget; plain `ferry optimize` does as `plain` says.
fn refused_everywhere(
    name: &str,
    node: &str,
    op: &str,
    plain: Plain,
    run_inputs: &[(&str, candle_core::Tensor)],
) {
    let path = hostile(name);
    let e = optimize(&path, true).map(|_| ()).unwrap_err();
    assert_over_budget(&e.to_string(), node, op);
    let e = run(&path, run_inputs).unwrap_err();
    assert_over_budget(&e.to_string(), node, op);
    match (optimize(&path, false), plain) {
        (Err(e), Plain::Refused) => assert_over_budget(&e.to_string(), node, op),
        (Ok(r), Plain::NotFolded | Plain::Untouched) => {
            let skip = r
                .passes
                .iter()
                .flat_map(|p| &p.skipped)
                .find(|s| s.node == node);
            match skip {
                Some(s) => assert!(
                    plain == Plain::NotFolded && s.reason.contains("too large to store"),
                    "{s:?}"
                ),
                None => assert_eq!(plain, Plain::Untouched, "{r:#?}"),
            }
        }
        (got, _) => panic!("expected {plain:?}, got {:?}", got.map(|r| r.passes)),
    }
}

#[test]
fn constant_of_shape_of_16_gib_is_refused() {
    refused_everywhere(
        "constant_of_shape_16gib",
        "fill",
        "ConstantOfShape",
        Plain::NotFolded,
        &[],
    );
}

#[test]
fn expand_to_1_tib_is_refused() {
    refused_everywhere("expand_1tib", "expand", "Expand", Plain::NotFolded, &[]);
}

#[test]
fn tile_to_4_tib_is_refused() {
    refused_everywhere("tile_4tib", "tile", "Tile", Plain::NotFolded, &[]);
}

#[test]
fn range_of_32_gib_is_refused() {
    refused_everywhere("range_32gib", "range", "Range", Plain::NotFolded, &[]);
}

#[test]
fn matmul_of_4_tib_is_refused() {
    refused_everywhere("matmul_4tib", "matmul", "MatMul", Plain::Refused, &[]);
}

#[test]
fn broadcasting_add_of_4_tib_is_refused() {
    refused_everywhere("add_broadcast_4tib", "add", "Add", Plain::NotFolded, &[]);
}

#[test]
fn concat_of_16_gib_is_refused() {
    refused_everywhere("concat_16gib", "concat", "Concat", Plain::Untouched, &[]);
}

#[test]
fn gather_of_4_tib_is_refused() {
    refused_everywhere("gather_4tib", "gather", "Gather", Plain::NotFolded, &[]);
}

fn nchw_input() -> [(&'static str, candle_core::Tensor); 1] {
    let x = candle_core::Tensor::zeros((1, 3, 8, 8), candle_core::DType::F32, &Device::Cpu);
    [("x", x.unwrap())]
}

#[test]
fn conv_pads_of_48_tib_are_refused() {
    refused_everywhere_but_folded("conv_pads_48tib");
}

/// pads [0, 0, 0, 2^62 + 9]: the padded size overflowed (a panic in candle in release builds:
/// "range start index 4611686018427387913+k out of range").
#[test]
fn conv_pads_overflowing_64_bits_are_refused() {
    refused_everywhere_but_folded("conv_pads_wrap");
}

/// Conv -> BatchNormalization: plain `ferry optimize` folds the BatchNorm into the Conv without
/// running the graph (its probe run is refused like any other), so it succeeds; running the
/// graph is refused.
fn refused_everywhere_but_folded(name: &str) {
    let path = hostile(name);
    let r = optimize(&path, false).unwrap();
    assert!(
        r.passes.iter().any(|p| p
            .matched
            .iter()
            .any(|m| m.contains("`bn` folded into Conv `conv`"))),
        "{r:#?}"
    );
    let e = optimize(&path, true).map(|_| ()).unwrap_err();
    assert_over_budget(&e.to_string(), "conv", "Conv");
    let e = run(&path, &nchw_input()).unwrap_err();
    assert_over_budget(&e.to_string(), "conv", "Conv");
}

/// x declared [2^40, 4]: the BatchNorm-fold probe and verification would make up a 16 TiB
/// input. (`ferry run` takes the user's input, which must have the declared shape.)
#[test]
fn a_huge_declared_input_is_refused_before_the_probe_makes_it() {
    let path = hostile("bn_probe_huge_input");
    let check = |e: &str| {
        assert!(
            e.contains("seeded input `x`")
                && e.contains("[1099511627776, 4]")
                && e.contains("memory budget of 4.0 GiB")
                && e.contains("FERRY_MAX_TENSOR_BYTES="),
            "{e}"
        )
    };
    let e = optimize(&path, false).map(|_| ()).unwrap_err();
    check(&e.to_string());
    let e = optimize(&path, true).map(|_| ()).unwrap_err();
    check(&e.to_string());
}

/// Reshape to [2^62 + 9, 4]: the element count wraps to the input's 36 in 64 bits (a release
/// build then crashed with a segmentation fault in the Transpose after it).
#[test]
fn a_reshape_whose_size_overflows_is_an_error() {
    let path = hostile("reshape_wrap");
    let r = optimize(&path, false).unwrap();
    assert!(
        r.passes[1]
            .skipped
            .iter()
            .any(|s| s.node == "reshape" && s.reason.contains("cannot reshape")),
        "{r:#?}"
    );
    for e in [
        (optimize(&path, true).map(|_| ())).unwrap_err(),
        (run(&path, &[])).unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains("node `reshape` (Reshape)") && e.contains("cannot reshape [36]"),
            "{e}"
        );
    }
}

/// A budget set on the executor applies to every node: cnn.onnx's first Conv makes
/// [2, 8, 16, 16] f32 (16 KiB), over 8 KiB; the input (6 KiB) and the padded input (7.6 KiB)
/// fit.
#[test]
fn the_executor_refuses_what_its_budget_does_not_allow() {
    use ferry_graph::exec::MemoryBudget;
    use ferry_graph::verify::{symbol_sizes, synth_inputs};
    let model = read_model(&fixture("cnn.onnx")).unwrap();
    let inputs = synth_inputs(&model.graph, &symbol_sizes(&model.graph, &[2]), 1).unwrap();
    let exec = Executor::new(&model, &Device::Cpu).unwrap();
    assert_eq!(exec.run(&inputs).unwrap()["logits"].dims(), [2, 10]);
    let err = Executor::new(&model, &Device::Cpu)
        .unwrap()
        .with_budget(MemoryBudget::new(8 << 10))
        .run(&inputs)
        .map(|_| ())
        .unwrap_err();
    let Error::NodeOverBudget { node, op, exceeded } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (
            node.as_str(),
            op.as_str(),
            exceeded.what,
            exceeded.shape.as_slice()
        ),
        (
            "/features/features.0/Conv",
            "Conv",
            "its output",
            &[2, 8, 16, 16][..]
        )
    );
    assert_eq!((exceeded.bytes, exceeded.budget), (Some(16 << 10), 8 << 10));
    assert!(
        err.to_string().contains("memory budget of 8.0 KiB"),
        "{err}"
    );
}

/// `FERRY_MAX_TENSOR_BYTES` sets the budget of every run ferry makes, probes and verification
/// included. The environment is the process's, so the test runs itself again in a child with
/// the variable set.
#[test]
fn ferry_max_tensor_bytes_sets_the_budget() {
    const CHILD: &str = "FERRY_TEST_BUDGET_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let e = optimize(&fixture("cnn.onnx"), true)
            .map(|_| ())
            .unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("node `/features/features.0/Conv` (Conv)")
                && e.contains("memory budget of 8.0 KiB"),
            "{e}"
        );
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ferry_max_tensor_bytes_sets_the_budget",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("FERRY_MAX_TENSOR_BYTES", "8KiB")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

/// One node `n` reading `consts` (name, tensor), with `attrs`: the dims of its output `y`, or
/// its error.
fn run_one(
    op: &str,
    consts: &[(&str, candle_core::Tensor)],
    attrs: &[(&str, ferry_graph::Attr)],
) -> Result<Vec<usize>, String> {
    use ferry_graph::ir::{entry_from_candle, Graph, OnnxModel, ValueInfo};
    let mut node = Node::new(
        "n",
        op,
        consts.iter().map(|(k, _)| k.to_string()).collect(),
        vec!["y".into()],
    );
    if op == "Attention" {
        node.domain = ferry_graph::onnx::FERRY_DOMAIN.into();
    }
    for (k, v) in attrs {
        node.attrs.insert(k.to_string(), v.clone());
    }
    let mut graph = Graph {
        outputs: vec![ValueInfo::untyped("y")],
        nodes: vec![node],
        ..Graph::default()
    };
    for (k, t) in consts {
        graph
            .initializers
            .insert(k.to_string(), entry_from_candle(k, t).unwrap());
    }
    let model = OnnxModel {
        graph,
        opsets: [
            (String::new(), 17),
            (ferry_graph::onnx::FERRY_DOMAIN.to_string(), 1),
        ]
        .into_iter()
        .collect(),
        ..OnnxModel::default()
    };
    let out = Executor::new(&model, &Device::Cpu)
        .unwrap()
        .run(&Default::default())
        .map_err(|e| e.to_string())?;
    Ok(out["y"].dims().to_vec())
}

/// Attributes and inputs that were used unchecked (as an index, in a multiplication, as an
/// allocation's length): each panicked or aborted before. Now the invalid ones are errors
/// naming the node, and the valid ones compute.
#[test]
fn corrupt_attributes_and_inputs_are_errors_not_panics() {
    use candle_core::{DType, Tensor};
    use ferry_graph::Attr;
    let dev = &Device::Cpu;
    let f32s = |dims: &[usize]| Tensor::zeros(dims, DType::F32, dev).unwrap();
    let i64s = |v: &[i64]| Tensor::new(v, dev).unwrap();
    let empty = || f32s(&[0]);
    let err = |op: &str, got: Result<Vec<usize>, String>, want: &str| {
        let e = got.unwrap_err();
        assert!(
            e.contains(&format!("node `n` ({op})")) && e.contains(want),
            "{e}"
        );
    };
    // BatchNormalization of a 1-D input set dimension 1 of a rank-1 shape.
    let x4 = || f32s(&[4]);
    let bn = [
        ("x", x4()),
        ("s", x4()),
        ("b", x4()),
        ("m", x4()),
        ("v", x4()),
    ];
    err(
        "BatchNormalization",
        run_one("BatchNormalization", &bn, &[]),
        "no channel",
    );
    // Range and Clip read the first value of an empty tensor.
    let range = [("s", empty()), ("l", f32s(&[1])), ("d", f32s(&[1]))];
    err("Range", run_one("Range", &range, &[]), "");
    err(
        "Clip",
        run_one("Clip", &[("x", f32s(&[2])), ("lo", empty())], &[]),
        "",
    );
    // Conv of a 1-D input took its weight's dims from 2 on.
    let conv = [("x", f32s(&[3])), ("w", f32s(&[3]))];
    err("Conv", run_one("Conv", &conv, &[]), "0-D convolution");
    // A group count of 2^62 + 9 overflowed inside candle (4 x groups).
    let conv = [("x", f32s(&[1, 4, 4, 4])), ("w", f32s(&[4, 4, 1, 1]))];
    let group = [("group", Attr::Int((1 << 62) + 9))];
    err("Conv", run_one("Conv", &conv, &group), "groups of weights");
    // Dilations of 2^63 - 1 overflowed the kernel's extent, (5 - 1) x dilation + 1.
    let conv = [("x", f32s(&[1, 3, 4, 4])), ("w", f32s(&[3, 3, 5, 5]))];
    let dil = [("dilations", Attr::Ints(vec![i64::MAX, i64::MAX]))];
    err("Conv", run_one("Conv", &conv, &dil), "overflows");
    // num_outputs 2^40 made a list of 2^40 sizes.
    let split = [("num_outputs", Attr::Int(1 << 40))];
    err(
        "Split",
        run_one("Split", &[("x", x4())], &split),
        "num_outputs",
    );

    // ReduceProd over an axis of size 0 took the first of no parts: it is 1.
    let axes = [("axes", Attr::Ints(vec![1]))];
    let got = run_one("ReduceProd", &[("x", f32s(&[2, 0]))], &axes);
    assert_eq!(got, Ok(vec![2, 1]));
    // An empty input tiled 2^40 times made a list of 2^40 copies of it.
    let got = run_one("Tile", &[("x", empty()), ("r", i64s(&[1 << 40]))], &[]);
    assert_eq!(got, Ok(vec![0]));
    // A step of i64::MIN overflowed when negated: it takes the start element only.
    let slice = [
        ("x", x4()),
        ("s", i64s(&[3])),
        ("e", i64s(&[0])),
        ("a", i64s(&[0])),
        ("st", i64s(&[i64::MIN])),
    ];
    assert_eq!(run_one("Slice", &slice, &[]), Ok(vec![1]));
    // An empty sequence with a per-key bias made chunks of 0 values.
    let qkv = || f32s(&[1, 0, 8]);
    let att = [
        ("q", qkv()),
        ("k", qkv()),
        ("v", qkv()),
        ("b", f32s(&[1, 0])),
    ];
    let heads = [("num_heads", Attr::Int(2)), ("scale", Attr::Float(0.5))];
    assert_eq!(run_one("Attention", &att, &heads), Ok(vec![1, 0, 8]));
}
