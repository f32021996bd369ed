//! ONNX graphs behind the runtime's [`crate::Model`], run by ferry-graph's executor: a graph
//! that takes token ids (`input_ids`, with `attention_mask` and `token_type_ids` filled when it
//! asks for them) runs like the model it was exported from, so `ferry verify` compares an ONNX
//! export with its Hugging Face original, or two ONNX files, language by language.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType as CDType, Device, Tensor};
use ferry_graph::{Executor, ValueInfo};

use crate::error::{Error, Result};

/// Whether `path` names an ONNX file.
pub fn is_onnx(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn graph_err(path: &Path, e: ferry_graph::Error) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// What a graph takes and returns, read without preparing it to run.
pub struct GraphInfo {
    /// Its inputs.
    pub inputs: Vec<ValueInfo>,
    /// Its first output (logits or the last hidden state).
    pub output: ValueInfo,
}

impl GraphInfo {
    /// Reads the graph at `path` and checks it takes token ids.
    pub fn read(path: &Path) -> Result<(ferry_graph::Model, GraphInfo)> {
        let model = ferry_graph::onnx::read_model(path).map_err(|e| graph_err(path, e))?;
        let g = &model.graph;
        if !g.inputs.iter().any(|v| v.name == "input_ids") {
            let names: Vec<&str> = g.inputs.iter().map(|v| v.name.as_str()).collect();
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "the graph takes {} but no `input_ids`: the runtime runs graphs exported from \
                     language models (run others with `ferry run MODEL --input NAME=FILE`)",
                    names.join(", ")
                ),
            });
        }
        if let Some(other) = g.inputs.iter().find(|v| {
            !matches!(
                v.name.as_str(),
                "input_ids" | "attention_mask" | "token_type_ids"
            )
        }) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "input `{}` cannot be filled from token ids (the runtime fills input_ids, \
                     attention_mask, token_type_ids)",
                    other.name
                ),
            });
        }
        let output = g.outputs.first().cloned().ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            msg: "the graph has no outputs".into(),
        })?;
        let info = GraphInfo {
            inputs: g.inputs.clone(),
            output,
        };
        Ok((model, info))
    }
}

/// A loaded graph.
pub struct GraphNet {
    exec: Executor,
    info: GraphInfo,
    path: std::path::PathBuf,
}

impl GraphNet {
    /// Reads the graph at `path` and prepares it to run on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<GraphNet> {
        let (model, info) = GraphInfo::read(path)?;
        let exec = Executor::new(&model, device).map_err(|e| graph_err(path, e))?;
        Ok(GraphNet {
            exec,
            info,
            path: path.to_path_buf(),
        })
    }

    /// What the graph takes and returns.
    pub fn info(&self) -> &GraphInfo {
        &self.info
    }

    /// The first output for `ids` (`[batch, seq]`, u32) with an optional `mask` (1 for real
    /// tokens), fed as int64 (what exporters declare; the executor casts for other types).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let ones;
        let mask = match mask {
            Some(m) => m,
            None => {
                ones = ids.ones_like()?;
                &ones
            }
        };
        let mut feeds = HashMap::new();
        for v in &self.info.inputs {
            let t = match v.name.as_str() {
                "input_ids" => ids.clone(),
                "attention_mask" => mask.clone(),
                _ => ids.zeros_like()?,
            };
            feeds.insert(v.name.clone(), t.to_dtype(CDType::I64)?);
        }
        let mut out = self
            .exec
            .run(&feeds)
            .map_err(|e| graph_err(&self.path, e))?;
        let name = &self.info.output.name;
        let t = out.shift_remove(name).ok_or_else(|| Error::Config {
            path: self.path.clone(),
            msg: format!("output `{name}` was not produced"),
        })?;
        Ok(t.to_dtype(CDType::F32)?)
    }
}
