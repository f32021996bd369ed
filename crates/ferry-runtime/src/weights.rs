//! A model's weights from any checkpoint ferry reads, served to candle: plain tensors, matrices
//! that stay quantized for `QMatMul`, and a `candle_nn::VarBuilder` backend so that
//! candle-transformers' models load from a `.pth`, a legacy `.bin`, a sharded folder, an
//! `.npz` or a GGUF alike.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use ferry_io::Checkpoint;
use ferry_kernels::qgemm::PackedQ8;

use crate::error::{Error, Result};

/// Rewrites a name a model asks for into the name the checkpoint stores it under (for one
/// architecture's tensors served under another's names).
pub type Rename = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// How GGML-quantized matrices are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// candle's quantized kernels: weights stay quantized and activations are quantized to 8
    /// bits per block, as llama.cpp's CPU path computes (memory-light; slow for long inputs).
    #[default]
    Ggml,
    /// Weights dequantized to f32 once at load, then f32 products: what transformers' GGUF
    /// loader computes (fast for long inputs; f32 memory).
    F32,
}

impl std::str::FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Kernels, String> {
        match s {
            "ggml" => Ok(Kernels::Ggml),
            "f32" => Ok(Kernels::F32),
            _ => Err(format!("kernels `{s}`: expected ggml or f32")),
        }
    }
}

/// A change made to float weights as they are read, before they reach the model: what a
/// quantization would do to them, tried without writing a file (ferry-verify's automatic type
/// choice measures each tensor group's effect on the outputs this way).
pub trait WeightEdit: Send + Sync {
    /// Whether the checkpoint's tensor `name` is edited.
    fn wants(&self, name: &str) -> bool;
    /// The edited values of `name` (`shape`, row-major f32), or why they cannot be made.
    fn edit(
        &self,
        name: &str,
        shape: &[usize],
        data: Vec<f32>,
    ) -> std::result::Result<Vec<f32>, String>;
}

/// Named weights on a device. Tensors are read from the checkpoint when asked for.
pub struct Weights {
    ck: Checkpoint,
    index: HashMap<String, usize>,
    device: Device,
    kernels: Kernels,
    edit: Option<Arc<dyn WeightEdit>>,
}

impl Weights {
    /// Serves `ck`'s tensors (already under the names the model asks for) on `device`,
    /// multiplying GGML-quantized matrices with `kernels`.
    pub fn new(ck: Checkpoint, device: Device, kernels: Kernels) -> Weights {
        let index = ck
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Weights {
            ck,
            index,
            device,
            kernels,
            edit: None,
        }
    }

    /// These weights with `edit` applied to the float tensors it wants as they are read (a
    /// GGML-quantized tensor that stays quantized for [`Kernels::Ggml`] is not edited).
    pub fn with_edit(mut self, edit: Arc<dyn WeightEdit>) -> Weights {
        self.edit = Some(edit);
        self
    }

    /// The device tensors are loaded on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether a tensor called `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn err(&self, name: &str, msg: impl Into<String>) -> Error {
        Error::Tensor {
            path: self.ck.path.clone(),
            tensor: name.to_string(),
            msg: msg.into(),
        }
    }

    fn entry(&self, name: &str, shape: &[usize]) -> Result<&ferry_io::TensorEntry> {
        let i = self.index.get(name).ok_or_else(|| {
            self.err(
                name,
                format!(
                    "missing (the checkpoint has {} tensors; is it the model its config describes?)",
                    self.ck.tensors.len()
                ),
            )
        })?;
        let t = &self.ck.tensors[*i];
        if t.shape != shape {
            return Err(self.err(
                name,
                format!("shape {:?}, but the config implies {shape:?}", t.shape),
            ));
        }
        Ok(t)
    }

    /// The tensor `name` of `shape` on `device` in `dtype` (quantized tensors are dequantized).
    pub fn tensor_on(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let t = self.entry(name, shape)?;
        // Read on the CPU, cast there, then moved: a device holds only the cast copy.
        let mut x = t.to_candle(&Device::Cpu)?;
        if let Some(e) = self.edit.as_ref().filter(|e| e.wants(name)) {
            let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let data = e.edit(name, shape, data).map_err(|m| self.err(name, m))?;
            x = Tensor::from_vec(data, shape, &Device::Cpu)?;
        }
        Ok(x.to_dtype(dtype)?.to_device(device)?)
    }

    /// Whether `name` stays quantized for a matrix product on `device`: a GGML type with
    /// [`Kernels::Ggml`].
    pub fn stays_quantized(&self, name: &str) -> bool {
        self.index.get(name).is_some_and(|&i| {
            self.ck.tensors[i].dtype.is_quantized() && self.kernels == Kernels::Ggml
        })
    }

    /// The matrix `name` of `shape` (`[out, in]`) as a `QMatMul` on `device`: GGML-quantized
    /// weights stay quantized with [`Kernels::Ggml`] (candle's quantized kernels; they take
    /// f32 inputs), float ones (and every one with [`Kernels::F32`]) are held in `dtype`.
    pub fn matmul_on(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<QMatMul> {
        let t = self.entry(name, shape)?;
        match t.dtype.to_ggml().filter(|_| self.stays_quantized(name)) {
            Some(ggml) => {
                let data = t.data()?;
                let q = qtensor_from_ggml(ggml, &data, t.shape.clone(), device)
                    .map_err(|e| self.err(name, e.to_string()))?;
                Ok(QMatMul::from_qtensor(q)?)
            }
            None => Ok(QMatMul::Tensor(self.tensor_on(name, shape, device, dtype)?)),
        }
    }

    /// The matrix `name` of `shape` (`[out, in]`) packed for ferry-kernels' int8 GEMM, when
    /// it stays quantized ([`Kernels::Ggml`]) on `device`, the CPU, its GGML type is one that
    /// kernel reads exactly and the int8 GEMM runs on this CPU (`qgemm::available`: AVX-512
    /// VNNI or AVX2 + FMA); `None` otherwise.
    pub fn packed_q8(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
    ) -> Result<Option<PackedQ8>> {
        let t = self.entry(name, shape)?;
        let ggml = match t.dtype.to_ggml() {
            Some(g) if self.kernels == Kernels::Ggml && device.is_cpu() => g,
            _ => return Ok(None),
        };
        if !ferry_kernels::qgemm::available() || shape.len() != 2 {
            return Ok(None);
        }
        Ok(PackedQ8::from_ggml(ggml, &t.data()?, shape[0], shape[1]))
    }

    /// A `VarBuilder` over these weights serving tensors on `device` in `dtype`, for
    /// candle-transformers' models.
    pub fn var_builder_on(self: &Arc<Self>, device: &Device, dtype: DType) -> VarBuilder<'static> {
        self.backend(None, device, dtype)
    }

    /// A `VarBuilder` that serves each name a model asks for from the tensor `rename` maps it
    /// to: one architecture's checkpoint loaded by another's code (DistilBERT's tensors under
    /// BERT's names). Errors name the checkpoint's tensor, the one the file lacks.
    pub fn var_builder_renamed(
        self: &Arc<Self>,
        rename: Rename,
        device: &Device,
        dtype: DType,
    ) -> VarBuilder<'static> {
        self.backend(Some(rename), device, dtype)
    }

    fn backend(
        self: &Arc<Self>,
        rename: Option<Rename>,
        device: &Device,
        dtype: DType,
    ) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(Backend {
                weights: self.clone(),
                rename,
            }),
            dtype,
            device.clone(),
        )
    }
}

/// `SimpleBackend` over [`Weights`]: candle-transformers asks by name and shape; names are
/// rewritten first when there is a `rename`.
struct Backend {
    weights: Arc<Weights>,
    rename: Option<Rename>,
}

impl Backend {
    fn real<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.rename {
            Some(r) => r(name).into(),
            None => name.into(),
        }
    }
}

impl SimpleBackend for Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.weights
            .tensor_on(&self.real(name), s.dims(), dev, dtype)
            .map_err(candle_core::Error::wrap)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let real = self.real(name);
        let w = &self.weights;
        let i = w
            .index
            .get(real.as_ref())
            .ok_or_else(|| candle_core::Error::wrap(w.err(&real, "missing")))?;
        let shape = w.ck.tensors[*i].shape.clone();
        self.get(
            Shape::from(shape),
            name,
            candle_nn::Init::Const(0.),
            dtype,
            dev,
        )
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.weights.has(&self.real(name))
    }
}
