//! Running the model with some tensors rounded as a quantization would round them, without
//! writing a file, and measuring per language how far its outputs moved from the original's:
//! the mean KL divergence of the next-token distributions (decoders) or the mean of
//! `1 - cosine` of the pooled embeddings (encoders).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use ferry_io::formats::gguf::names::{ArchLayout, Direction, Mapped};
use ferry_io::imatrix::Imatrix;
use ferry_io::DType;
use ferry_runtime::weights::WeightEdit;
use ferry_runtime::{Kernels, Model};

use super::table::fake_quant;
use crate::error::{Error, Result};
use crate::run::{mean_row, rows};
use crate::stats;

/// One calibration text: its language (an index) and token ids.
#[derive(Debug, Clone)]
pub struct Text {
    /// Index of its language.
    pub lang: usize,
    /// Token ids.
    pub ids: Vec<u32>,
}

/// The original model's outputs on the texts.
pub enum Reference {
    /// Logits per text, row per position.
    Decoder(Vec<Vec<Vec<f32>>>),
    /// Pooled (mean) last hidden state per text.
    Encoder(Vec<Vec<f32>>),
}

impl Reference {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Reference::Decoder(v) => v.iter().flatten().map(|r| r.len() * 4).sum(),
            Reference::Encoder(v) => v.iter().map(|r| r.len() * 4).sum(),
        }
    }
}

/// Per language: the distance (mean KLD or mean `1 - cosine`) and the share of positions
/// with the same top-1 token (1 for encoders).
#[derive(Debug, Clone, Default)]
pub struct Distances {
    /// Per language.
    pub value: Vec<f64>,
    /// Per language.
    pub top1: Vec<f64>,
}

/// The mean over positions of one text's last hidden state, as verification pools it.
fn pooled(t: &Tensor) -> Result<Vec<f32>> {
    Ok(mean_row(&rows(t)?))
}

/// `model`'s outputs on `texts`.
pub fn reference(model: &Model, texts: &[Text]) -> Result<Reference> {
    let mut dec = Vec::new();
    let mut enc = Vec::new();
    for t in texts {
        let x = Tensor::from_vec(t.ids.clone(), (1, t.ids.len()), &Device::Cpu)?;
        let out = model.forward(&x, None, false)?;
        if model.is_decoder() {
            dec.push(rows(&out.values)?);
        } else {
            enc.push(pooled(&out.values)?);
        }
    }
    Ok(if model.is_decoder() {
        Reference::Decoder(dec)
    } else {
        Reference::Encoder(enc)
    })
}

/// How far `model`'s outputs on `texts` are from `reference`, per language (`langs` of them).
pub fn distances(
    model: &Model,
    texts: &[Text],
    reference: &Reference,
    langs: usize,
) -> Result<Distances> {
    let mut sum = vec![0.0; langs];
    let mut same = vec![0.0; langs];
    let mut count = vec![0usize; langs];
    for (i, t) in texts.iter().enumerate() {
        let x = Tensor::from_vec(t.ids.clone(), (1, t.ids.len()), &Device::Cpu)?;
        let out = model.forward(&x, None, false)?;
        match reference {
            Reference::Decoder(r) => {
                for (a, b) in r[i].iter().zip(rows(&out.values)?) {
                    let s = stats::token_stat(a, &b, None);
                    sum[t.lang] += s.kld;
                    same[t.lang] += f64::from(u8::from(s.same_top1));
                    count[t.lang] += 1;
                }
            }
            Reference::Encoder(r) => {
                sum[t.lang] += 1.0 - stats::cosine(&r[i], &pooled(&out.values)?);
                same[t.lang] += 1.0;
                count[t.lang] += 1;
            }
        }
    }
    let mean = |v: Vec<f64>| -> Vec<f64> {
        v.iter()
            .zip(&count)
            .map(|(s, &n)| s / n.max(1) as f64)
            .collect()
    };
    Ok(Distances {
        value: mean(sum),
        top1: mean(same),
    })
}

/// Rounds the tensors of an assignment (llama.cpp names to types) as quantization would,
/// as the runtime reads them under the checkpoint's own names.
pub struct FakeQuant {
    assignment: HashMap<String, DType>,
    layout: Option<ArchLayout>,
    imatrix: Option<Arc<Imatrix>>,
}

impl FakeQuant {
    /// For a model whose checkpoint names map to llama.cpp's by `layout` (`None`: the names
    /// are llama.cpp's already, or the architecture has no table), quantizing with `imatrix`
    /// where a type has a weighted kernel.
    pub fn new(
        assignment: HashMap<String, DType>,
        layout: Option<ArchLayout>,
        imatrix: Option<Arc<Imatrix>>,
    ) -> FakeQuant {
        FakeQuant {
            assignment,
            layout,
            imatrix,
        }
    }

    fn gguf_name(&self, name: &str) -> String {
        match self.layout.as_ref().map(|l| l.map(name, Direction::ToGguf)) {
            Some(Mapped::To(n, _)) | Some(Mapped::Trimmed(n, _)) => n,
            _ => name.to_string(),
        }
    }
}

impl WeightEdit for FakeQuant {
    fn wants(&self, name: &str) -> bool {
        self.assignment.contains_key(&self.gguf_name(name))
    }

    fn edit(
        &self,
        name: &str,
        shape: &[usize],
        data: Vec<f32>,
    ) -> std::result::Result<Vec<f32>, String> {
        let gguf = self.gguf_name(name);
        let Some(&dtype) = self.assignment.get(&gguf) else {
            return Ok(data);
        };
        let columns = *shape.last().unwrap_or(&1);
        let importance = match &self.imatrix {
            Some(m) => m
                .importance_for(&gguf, columns)
                .map_err(|e| e.to_string())?,
            None => None,
        };
        // Quantization rounds rows independently, so a row permutation (llama.cpp's Q/K
        // layout) commutes with it: the checkpoint's layout rounds as the file's does.
        fake_quant(&data, columns, dtype, importance.as_deref()).map_err(|e| e.to_string())
    }
}

/// Loads the model at `path` (names mapped by `layout`, see [`FakeQuant::new`]) with
/// `assignment` applied and measures it against `reference`.
pub fn measure(
    path: &Path,
    layout: Option<ArchLayout>,
    assignment: HashMap<String, DType>,
    imatrix: Option<Arc<Imatrix>>,
    texts: &[Text],
    reference: &Reference,
    langs: usize,
) -> Result<Distances> {
    let edit = FakeQuant::new(assignment, layout, imatrix);
    let model = Model::load_edited(path, &Device::Cpu, Kernels::F32, Arc::new(edit))?;
    if model.is_decoder() != matches!(reference, Reference::Decoder(_)) {
        return Err(Error::Mismatch(format!(
            "{}: the model changed kind while measuring",
            path.display()
        )));
    }
    distances(&model, texts, reference, langs)
}
