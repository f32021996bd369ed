//! If, Loop and Scan: subgraphs that read values of the enclosing graphs, their semantics
//! (loop-carried values, scan outputs, directions and axes, opset-8 batches), the round trip
//! of a graph with subgraphs through ONNX, and hostile ones (a trip count with no end, a
//! condition of three elements, scan outputs past the memory budget, wrong arities): errors
//! naming the node, never a hang or a panic.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use ferry_graph::exec::{MemoryBudget, MAX_ITERATIONS};
use ferry_graph::ir::entry_from_candle;
use ferry_graph::onnx::{read_model, write_model, ExportOptions};
use ferry_graph::{Attr, Error, Executor, Graph, Node, OnnxModel, ValueInfo};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn vis(names: &[&str]) -> Vec<ValueInfo> {
    names.iter().map(|n| ValueInfo::untyped(*n)).collect()
}

fn graph(name: &str, inputs: &[&str], outputs: &[&str], nodes: Vec<Node>) -> Graph {
    Graph {
        name: name.into(),
        inputs: vis(inputs),
        outputs: vis(outputs),
        nodes,
        ..Graph::default()
    }
}

fn sub(g: Graph) -> Attr {
    Attr::Graph(Box::new(g))
}

fn model(graph: Graph, opset: i64) -> OnnxModel {
    OnnxModel {
        graph,
        opsets: [(String::new(), opset)].into_iter().collect(),
        ir_version: 8,
        ..OnnxModel::default()
    }
}

fn f32s(v: &[f32], dims: &[usize]) -> Tensor {
    Tensor::from_slice(v, dims, &Device::Cpu).unwrap()
}

fn init(g: &mut Graph, name: &str, t: Tensor) {
    g.initializers
        .insert(name.into(), entry_from_candle(name, &t).unwrap());
}

fn feeds(items: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// `r = Relu(x)`, `a = Neg(r)` (the last direct reader of `r`), then
/// `Loop(m, "", x)` whose body adds `r` (captured: it must outlive `a`) to the carried value
/// and emits twice the sum (a body initializer) as its scan output.
fn accumulate() -> OnnxModel {
    let mut body = graph(
        "acc_body",
        &["i", "c", "acc"],
        &["c_out", "acc1", "twice"],
        vec![
            Node::new("c_id", "Identity", s(&["c"]), s(&["c_out"])),
            Node::new("add", "Add", s(&["acc", "r"]), s(&["acc1"])),
            Node::new("mul", "Mul", s(&["acc1", "two"]), s(&["twice"])),
        ],
    );
    init(&mut body, "two", f32s(&[2.0], &[1]));
    let g = graph(
        "main",
        &["x", "m"],
        &["a", "acc", "scan"],
        vec![
            Node::new("relu", "Relu", s(&["x"]), s(&["r"])),
            Node::new("neg", "Neg", s(&["r"]), s(&["a"])),
            Node::new("loop", "Loop", s(&["m", "", "x"]), s(&["acc", "scan"]))
                .with_attr("body", sub(body)),
        ],
    );
    model(g, 17)
}

#[test]
fn loop_carries_values_stacks_scan_outputs_and_reads_the_enclosing_graph() {
    let exec = Executor::new(&accumulate(), &Device::Cpu).unwrap();
    let x = f32s(&[1.0, -2.0, 3.0], &[3]);
    let m = Tensor::new(4i64, &Device::Cpu).unwrap();
    let out = exec.run(&feeds(&[("x", x.clone()), ("m", m)])).unwrap();
    assert_eq!(values(&out["a"]), [-1.0, 0.0, -3.0]);
    // x + 4 relu(x)
    assert_eq!(values(&out["acc"]), [5.0, -2.0, 15.0]);
    assert_eq!(out["scan"].dims(), [4, 3]);
    let want: Vec<f32> = (1..=4)
        .flat_map(|k| [1.0 + k as f32, -2.0, 3.0 + 3.0 * k as f32].map(|v| 2.0 * v))
        .collect();
    assert_eq!(values(&out["scan"]), want);

    // No iteration: the carried value as given, an empty scan output.
    let m = Tensor::new(0i64, &Device::Cpu).unwrap();
    let out = exec.run(&feeds(&[("x", x), ("m", m)])).unwrap();
    assert_eq!(values(&out["acc"]), [1.0, -2.0, 3.0]);
    assert_eq!(out["scan"].elem_count(), 0);
}

/// A Loop with a condition whose body holds an If: the branches read the Loop body's carried
/// value (one scope up) and the main graph's initializer `one` (two scopes up).
fn nested() -> OnnxModel {
    let branch = |name: &str, op: &str| {
        graph(
            name,
            &[],
            &[&format!("{name}_y")],
            vec![Node::new(
                format!("{name}_op"),
                op,
                s(&["acc", "one"]),
                vec![format!("{name}_y")],
            )],
        )
    };
    let body = graph(
        "body",
        &["i", "c", "acc"],
        &["c_out", "acc1"],
        vec![
            Node::new("lt", "Less", s(&["i", "three"]), s(&["small"])),
            Node::new("if", "If", s(&["small"]), s(&["acc1"]))
                .with_attr("then_branch", sub(branch("then", "Add")))
                .with_attr("else_branch", sub(branch("else", "Sub"))),
            // Go on while acc1 < 10.
            Node::new("go", "Less", s(&["acc1", "ten"]), s(&["c_out"])),
        ],
    );
    let mut g = graph(
        "main",
        &["m", "start"],
        &["final"],
        vec![
            Node::new("t", "Constant", vec![], s(&["cond"])).with_attr(
                "value",
                Attr::Tensor(
                    entry_from_candle("cond", &Tensor::new(1u8, &Device::Cpu).unwrap()).unwrap(),
                ),
            ),
            Node::new("loop", "Loop", s(&["m", "cond", "start"]), s(&["final"]))
                .with_attr("body", sub(body)),
        ],
    );
    init(&mut g, "one", f32s(&[1.0], &[]));
    init(&mut g, "ten", f32s(&[10.0], &[]));
    init(&mut g, "three", Tensor::new(3i64, &Device::Cpu).unwrap());
    model(g, 17)
}

#[test]
fn if_inside_loop_reads_two_scopes_up_and_the_condition_ends_the_loop() {
    let exec = Executor::new(&nested(), &Device::Cpu).unwrap();
    let run = |m: i64, start: f32| {
        let out = exec
            .run(&feeds(&[
                ("m", Tensor::new(m, &Device::Cpu).unwrap()),
                ("start", f32s(&[start], &[])),
            ]))
            .unwrap();
        values(&out["final"])[0]
    };
    // +1 for iterations 0..3, -1 after.
    assert_eq!(run(5, 0.0), 1.0);
    assert_eq!(run(2, 0.0), 2.0);
    // The condition stops it: 8 -> 9 -> 10, then acc1 < 10 is false.
    assert_eq!(run(100, 8.0), 10.0);
}

#[test]
fn scan_reads_backwards_along_an_axis_and_writes_along_another() {
    let body = graph(
        "body",
        &["s", "xt"],
        &["s1", "out"],
        vec![
            Node::new("add", "Add", s(&["s", "xt"]), s(&["s1"])),
            Node::new("id", "Identity", s(&["s1"]), s(&["out"])),
        ],
    );
    let g = graph(
        "main",
        &["s0", "x"],
        &["s", "y"],
        vec![Node::new("scan", "Scan", s(&["s0", "x"]), s(&["s", "y"]))
            .with_attr("body", sub(body))
            .with_attr("num_scan_inputs", Attr::Int(1))
            .with_attr("scan_input_axes", Attr::Ints(vec![1]))
            .with_attr("scan_input_directions", Attr::Ints(vec![1]))
            .with_attr("scan_output_axes", Attr::Ints(vec![-1]))
            .with_attr("scan_output_directions", Attr::Ints(vec![1]))],
    );
    let exec = Executor::new(&model(g, 16), &Device::Cpu).unwrap();
    let x = f32s(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let out = exec
        .run(&feeds(&[("s0", f32s(&[0., 0.], &[2])), ("x", x)]))
        .unwrap();
    // Steps x[:, 2], x[:, 1], x[:, 0]: sums [3, 6], [5, 11], [6, 15].
    assert_eq!(values(&out["s"]), [6., 15.]);
    // Stacked along the last axis, last step first.
    assert_eq!(out["y"].dims(), [2, 3]);
    assert_eq!(values(&out["y"]), [6., 5., 3., 15., 11., 6.]);
}

#[test]
fn opset8_scan_runs_each_batch_entry_for_its_length_and_pads_with_zeros() {
    let body = graph(
        "body",
        &["s", "xt"],
        &["s1", "out"],
        vec![
            Node::new("add", "Add", s(&["s", "xt"]), s(&["s1"])),
            Node::new("id", "Identity", s(&["s1"]), s(&["out"])),
        ],
    );
    let g = graph(
        "main",
        &["lens", "s0", "x"],
        &["s", "y"],
        vec![
            Node::new("scan", "Scan", s(&["lens", "s0", "x"]), s(&["s", "y"]))
                .with_attr("body", sub(body))
                .with_attr("num_scan_inputs", Attr::Int(1)),
        ],
    );
    let exec = Executor::new(&model(g, 8), &Device::Cpu).unwrap();
    let run = |lens: &[i32]| {
        exec.run(&feeds(&[
            ("lens", Tensor::new(lens, &Device::Cpu).unwrap()),
            ("s0", f32s(&[0., 0.], &[2, 1])),
            ("x", f32s(&[1., 2., 3., 4., 5., 6.], &[2, 3, 1])),
        ]))
    };
    let out = run(&[3, 1]).unwrap();
    assert_eq!(values(&out["s"]), [6., 4.]);
    assert_eq!(out["y"].dims(), [2, 3, 1]);
    assert_eq!(values(&out["y"]), [1., 3., 6., 4., 0., 0.]);
    let e = run(&[3, 4]).unwrap_err().to_string();
    assert!(
        e.contains("node `scan` (Scan)") && e.contains("sequence_lens"),
        "{e}"
    );
}

/// A graph with subgraphs, written and read back, is the same graph, and still runs.
#[test]
fn subgraphs_survive_a_round_trip_through_onnx() {
    let dir = tempfile::tempdir().unwrap();
    for (name, m) in [("acc.onnx", accumulate()), ("nested.onnx", nested())] {
        let path = dir.path().join(name);
        write_model(&m, &path, &ExportOptions::default()).unwrap();
        let back = read_model(&path).unwrap();
        assert_eq!(back.graph, m.graph, "{name}");
        Executor::new(&back, &Device::Cpu).unwrap();
    }
}

/// A Loop whose body is `c_out = Identity(c)` (the condition, when given, stays true) and
/// whose node has the trip count and condition inputs `m` and `cond`.
fn endless(m: &str, cond: &str) -> OnnxModel {
    let body = graph(
        "body",
        &["i", "c", "v"],
        &["c_out", "v1"],
        vec![
            Node::new("c_id", "Identity", s(&["c"]), s(&["c_out"])),
            Node::new("neg", "Neg", s(&["v"]), s(&["v1"])),
        ],
    );
    let mut inputs = vec!["v"];
    inputs.extend([m, cond].into_iter().filter(|n| !n.is_empty()));
    let g = graph(
        "main",
        &inputs,
        &["out"],
        vec![
            Node::new("loop", "Loop", s(&[m, cond, "v"]), s(&["out"])).with_attr("body", sub(body))
        ],
    );
    model(g, 17)
}

fn node_error(r: ferry_graph::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ Error::Node { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("node `loop` (Loop)")
                    || msg.starts_with("node `if` (If)")
                    || msg.starts_with("node `scan` (Scan)"),
                "{msg}"
            );
            msg
        }
        other => panic!("expected an error naming the node, got {other:?}"),
    }
}

#[test]
fn a_loop_without_end_is_refused_and_a_long_one_stops_at_the_limit() {
    let v = f32s(&[1.0], &[1]);
    let cpu = Device::Cpu;

    // A trip count of i64::MAX and no condition: refused before the first iteration.
    let exec = Executor::new(&endless("m", ""), &cpu).unwrap();
    let m = Tensor::new(i64::MAX, &cpu).unwrap();
    let e = node_error(exec.run(&feeds(&[("v", v.clone()), ("m", m)])));
    assert!(
        e.contains("trip count is 9223372036854775807") && e.contains(&MAX_ITERATIONS.to_string()),
        "{e}"
    );

    // Neither a trip count nor a condition.
    let exec = Executor::new(&endless("", ""), &cpu).unwrap();
    let e = node_error(exec.run(&feeds(&[("v", v.clone())])));
    assert!(e.contains("never end"), "{e}");

    // A condition that stays true: the run stops at the limit.
    let exec = Executor::new(&endless("", "cond"), &cpu)
        .unwrap()
        .with_max_iterations(50);
    let cond = Tensor::new(1u8, &cpu).unwrap();
    let e = node_error(exec.run(&feeds(&[("v", v.clone()), ("cond", cond.clone())])));
    assert!(e.contains("limit of 50"), "{e}");
    // Under the limit it finishes: an even count of negations.
    let exec = Executor::new(&endless("m", "cond"), &cpu)
        .unwrap()
        .with_max_iterations(50);
    let m = Tensor::new(50i64, &cpu).unwrap();
    let out = exec
        .run(&feeds(&[
            ("v", v.clone()),
            ("m", m),
            ("cond", cond.clone()),
        ]))
        .unwrap();
    assert_eq!(values(&out["out"]), [1.0]);

    // A trip count that is not one element.
    let exec = Executor::new(&endless("m", ""), &cpu).unwrap();
    let m = Tensor::new(&[1i64, 2], &cpu).unwrap();
    let e = node_error(exec.run(&feeds(&[("v", v), ("m", m)])));
    assert!(e.contains("trip count has shape [2]"), "{e}");
}

#[test]
fn an_if_condition_of_three_elements_is_an_error() {
    let branch = |name: &str| graph(name, &[], &["x"], vec![]);
    let g = graph(
        "main",
        &["c", "x"],
        &["y"],
        vec![Node::new("if", "If", s(&["c"]), s(&["y"]))
            .with_attr("then_branch", sub(branch("then")))
            .with_attr("else_branch", sub(branch("else")))],
    );
    let exec = Executor::new(&model(g, 17), &Device::Cpu).unwrap();
    let x = f32s(&[7.0], &[1]);
    let c = Tensor::new(&[1u8, 0, 1], &Device::Cpu).unwrap();
    let e = node_error(exec.run(&feeds(&[("c", c), ("x", x.clone())])));
    assert!(e.contains("condition has shape [3]"), "{e}");
    // A branch may return an enclosing value as it is.
    let c = Tensor::new(0u8, &Device::Cpu).unwrap();
    let out = exec.run(&feeds(&[("c", c), ("x", x)])).unwrap();
    assert_eq!(values(&out["y"]), [7.0]);
}

#[test]
fn scan_outputs_past_the_budget_are_refused() {
    // 1000 iterations of a 16-float scan output under a 1 KiB budget.
    let body = graph(
        "body",
        &["i", "c"],
        &["c_out", "row"],
        vec![
            Node::new("c_id", "Identity", s(&["c"]), s(&["c_out"])),
            Node::new("id", "Identity", s(&["x"]), s(&["row"])),
        ],
    );
    let g = graph(
        "main",
        &["x", "m"],
        &["rows"],
        vec![Node::new("loop", "Loop", s(&["m", ""]), s(&["rows"])).with_attr("body", sub(body))],
    );
    let exec = Executor::new(&model(g, 17), &Device::Cpu)
        .unwrap()
        .with_budget(MemoryBudget::new(1024));
    let r = exec.run(&feeds(&[
        ("x", f32s(&[0.0; 16], &[16])),
        ("m", Tensor::new(1000i64, &Device::Cpu).unwrap()),
    ]));
    match r {
        Err(Error::NodeOverBudget { node, exceeded, .. }) => {
            assert_eq!(node, "loop");
            assert_eq!(exceeded.shape, [17, 16]);
        }
        other => panic!("expected an over-budget error, got {other:?}"),
    }
}

#[test]
fn wrong_arities_and_unsupported_ops_in_bodies_are_found_when_loading() {
    // The body returns one value too few.
    let mut m = endless("m", "");
    let Some(Attr::Graph(body)) = m.graph.nodes[0].attrs.get_mut("body") else {
        unreachable!()
    };
    body.outputs.pop();
    let e = node_error(Executor::new(&m, &Device::Cpu).map(|_| ()));
    assert!(e.contains("its body has 1 outputs"), "{e}");

    // An op ferry does not run, inside a body, is listed with the others.
    let mut m = endless("m", "");
    let Some(Attr::Graph(body)) = m.graph.nodes[0].attrs.get_mut("body") else {
        unreachable!()
    };
    body.nodes[1].op_type = "NoSuchOp".into();
    m.graph
        .nodes
        .push(Node::new("other", "AlsoNot", s(&["v"]), s(&["w"])));
    match Executor::new(&m, &Device::Cpu) {
        Err(Error::Unsupported(list)) => {
            assert_eq!(list.len(), 2, "{list:?}");
            assert!(
                list[0].contains("`NoSuchOp` at node `neg` in `body` of node `loop`"),
                "{list:?}"
            );
        }
        other => panic!("expected the unsupported ops, got {:?}", other.map(|_| ())),
    }
}

/// A hostile file: a Loop whose trip count is an initializer of i64::MAX, written and read
/// back like any model, is refused when run.
#[test]
fn a_hostile_loop_in_a_file_is_refused() {
    let mut m = endless("m", "");
    m.graph.inputs.retain(|v| v.name != "m");
    init(
        &mut m.graph,
        "m",
        Tensor::new(i64::MAX, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.onnx");
    write_model(&m, &path, &ExportOptions::default()).unwrap();
    let back = read_model(&path).unwrap();
    let exec = Executor::new(&back, &Device::Cpu).unwrap();
    let e = node_error(exec.run(&feeds(&[("v", f32s(&[1.0], &[1]))])));
    assert!(e.contains("over ferry's limit"), "{e}");
}

/// The whole default pipeline on a graph whose Loop body reads an Identity's output and a
/// Constant's: the Identity stays (its readers inside the body are not rewired), the Constant
/// becomes an initializer the body still reads, the Loop is neither folded nor removed, and
/// the outputs do not change.
#[test]
fn passes_leave_what_subgraphs_read_working() {
    use ferry_graph::passes::{all, PassManager, VerifyOptions};
    let body = graph(
        "body",
        &["i", "c", "acc"],
        &["c_out", "acc1", "scaled"],
        vec![
            Node::new("c_id", "Identity", s(&["c"]), s(&["c_out"])),
            Node::new("add", "Add", s(&["acc", "xi"]), s(&["acc1"])),
            Node::new("mul", "Mul", s(&["acc1", "k"]), s(&["scaled"])),
        ],
    );
    let k = entry_from_candle("k", &f32s(&[3.0], &[1])).unwrap();
    let mut g = graph(
        "main",
        &["x", "m"],
        &["acc", "scan"],
        vec![
            Node::new("xi", "Identity", s(&["x"]), s(&["xi"])),
            Node::new("k", "Constant", vec![], s(&["k"])).with_attr("value", Attr::Tensor(k)),
            Node::new("loop", "Loop", s(&["m", "", "x"]), s(&["acc", "scan"]))
                .with_attr("body", sub(body)),
        ],
    );
    g.inputs[0].dtype = Some(ferry_io::DType::F32);
    g.inputs[0].shape = Some(vec![ferry_graph::Dim::Fixed(3)]);
    let mut m = model(g, 17);
    let inputs = feeds(&[
        ("x", f32s(&[1.0, 2.0, -1.0], &[3])),
        ("m", Tensor::new(3i64, &Device::Cpu).unwrap()),
    ]);
    let before = Executor::new(&m, &Device::Cpu)
        .unwrap()
        .run(&inputs)
        .unwrap();
    let report = PassManager::new(all())
        .verify(VerifyOptions {
            inputs: Some(inputs.clone()),
            rel_tolerance: 0.0,
        })
        .run(&mut m, |_| {})
        .unwrap();
    assert!(report.failed.is_none(), "{report:?}");
    let skipped: Vec<&str> = report
        .passes
        .iter()
        .flat_map(|p| p.skipped.iter().map(|s| s.reason.as_str()))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|r| r.contains("`xi` is read inside a subgraph of Loop `loop`")),
        "{skipped:?}"
    );
    let ops: Vec<&str> = m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Identity", "Loop"]);
    assert!(m.graph.initializers.contains_key("k"));
    let after = Executor::new(&m, &Device::Cpu)
        .unwrap()
        .run(&inputs)
        .unwrap();
    for name in ["acc", "scan"] {
        assert_eq!(values(&before[name]), values(&after[name]), "{name}");
    }
    assert_eq!(values(&after["acc"]), [4.0, 8.0, -4.0]);
}
