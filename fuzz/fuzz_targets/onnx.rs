//! ONNX import (`ferry_graph::onnx::read_model`, what `ferry optimize` and `ferry run` call) of
//! a file beside the fixtures' external-data files, then the graph validated and every
//! initializer read.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// The scratch folder with fixtures/graph/*.onnx.data copied in, so inputs that name external
/// data (as the seeds do) reach the external-data path.
fn folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/graph");
        let dir = ferry_fuzz::scratch().join("onnx");
        std::fs::create_dir_all(&dir).expect("create the onnx folder");
        for e in std::fs::read_dir(&src).expect("fixtures/graph") {
            let e = e.expect("read the fixture folder");
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".onnx.data") {
                std::fs::copy(e.path(), dir.join(&name)).expect("copy external data");
            }
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let path = folder().join("model.onnx");
    std::fs::write(&path, data).expect("write the model");
    let Ok(mut model) = ferry_graph::onnx::read_model(&path) else {
        return;
    };
    let _ = model.graph.validate();
    let _ = model.graph.sort();
    let _ = model.opset();
    for t in model.graph.initializers.values() {
        ferry_fuzz::read_tensor(t);
    }
});
