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
    model.graph.nodes[0].device = Some("tpu:0".into());
    let e = Executor::new(&model, &Device::Cpu)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown device `tpu:0`"), "{e}");
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
    use ferry_graph::ir::{entry_from_candle, Graph, Model, ValueInfo};
    use ferry_graph::passes::{by_names, PassManager};
    let shape = candle_core::Tensor::new(&[100_000_000i64, 100_000_000], &Device::Cpu).unwrap();
    let mut model = Model {
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
        ..Model::default()
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
    assert!(e.contains("`huge`") && e.contains("would create"), "{e}");
    let r = PassManager::new(by_names(&["const-fold".into()]).unwrap())
        .run(&mut model, |_| {})
        .unwrap();
    assert_eq!(model.graph.nodes.len(), 1, "the node stays");
    assert!(
        r.passes[0].skipped[0].reason.contains("too many to store"),
        "{r:#?}"
    );
}
