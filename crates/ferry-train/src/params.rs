//! Named trainable parameters: an ordered list of candle [`Var`]s with seeded, PyTorch-style
//! initialization (candle's own `randn` draws from an unseeded thread RNG, which would make
//! runs irreproducible), and loading from any format ferry-io reads.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use ferry_data::rng::Rng;

use crate::error::{Error, Result};

/// Parameters in creation order, addressed by name.
#[derive(Debug, Default, Clone)]
pub struct Params {
    names: Vec<String>,
    vars: Vec<Var>,
    index: HashMap<String, usize>,
    frozen: Vec<bool>,
}

/// How a new parameter is filled.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Normal with this standard deviation (mean 0).
    Normal(f64),
    /// Uniform in [-a, a].
    Uniform(f64),
}

/// Fills `n` values by `init` from `rng`.
fn fill(init: Init, n: usize, rng: &mut Rng) -> Vec<f32> {
    match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Uniform(a) => (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * a) as f32)
            .collect(),
        Init::Normal(std) => {
            let mut out = Vec::with_capacity(n + 1);
            while out.len() < n {
                // Box-Muller: two normals from two uniforms.
                let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
                let u2 = rng.next_f64();
                let r = (-2.0 * u1.ln()).sqrt() * std;
                let t = std::f64::consts::TAU * u2;
                out.push((r * t.cos()) as f32);
                out.push((r * t.sin()) as f32);
            }
            out.truncate(n);
            out
        }
    }
}

impl Params {
    /// An empty set.
    pub fn new() -> Self {
        Params::default()
    }

    /// Creates the parameter `name` of `shape` on `device`, filled by `init` from `rng`.
    pub fn create(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Tensor> {
        let n = shape.iter().product();
        let t = Tensor::from_vec(fill(init, n, rng), shape, device)?;
        self.insert(name, t)
    }

    /// Adds `value` as the trainable parameter `name` and returns the tracked tensor.
    pub fn insert(&mut self, name: &str, value: Tensor) -> Result<Tensor> {
        if self.index.contains_key(name) {
            return Err(Error::Invalid(format!("parameter {name} defined twice")));
        }
        let var = Var::from_tensor(&value.to_dtype(DType::F32)?)?;
        let t = var.as_tensor().clone();
        self.index.insert(name.to_string(), self.vars.len());
        self.names.push(name.to_string());
        self.vars.push(var);
        self.frozen.push(false);
        Ok(t)
    }

    /// Excludes the parameters whose names start with `prefix` from training.
    pub fn freeze(&mut self, prefix: &str) -> usize {
        let mut n = 0;
        for (i, name) in self.names.iter().enumerate() {
            if name.starts_with(prefix) {
                self.frozen[i] = true;
                n += 1;
            }
        }
        n
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Total number of scalar values.
    pub fn numel(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// (name, variable, trainable) in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var, bool)> {
        self.names
            .iter()
            .zip(&self.vars)
            .zip(&self.frozen)
            .map(|((n, v), f)| (n.as_str(), v, !f))
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.index.get(name).map(|&i| &self.vars[i])
    }

    /// Sets every parameter from `tensors` by name: all must be present with the right shape.
    pub fn assign(&self, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        for (name, var) in self.names.iter().zip(&self.vars) {
            let t = tensors.get(name).ok_or_else(|| {
                Error::malformed(
                    source,
                    format!("has no tensor {name}, which the model needs"),
                )
            })?;
            if t.dims() != var.dims() {
                return Err(Error::malformed(
                    source,
                    format!(
                        "tensor {name} has shape {:?}, the model expects {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// A snapshot of every parameter's value (detached), by name.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect()
    }
}

/// Reads every tensor of a weights file (any format ferry-io reads) into candle on `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let ck = ferry_io::Checkpoint::open(path)?;
    let mut out = HashMap::new();
    for e in &ck.tensors {
        out.insert(e.name.clone(), e.to_candle(device)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded_and_has_the_asked_spread() {
        let dev = Device::Cpu;
        let mut a = Params::new();
        let mut b = Params::new();
        let ta = a
            .create("w", &[200, 50], Init::Normal(0.5), &mut Rng::new(7), &dev)
            .unwrap();
        let tb = b
            .create("w", &[200, 50], Init::Normal(0.5), &mut Rng::new(7), &dev)
            .unwrap();
        let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, tb.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mean = va.iter().map(|&x| x as f64).sum::<f64>() / va.len() as f64;
        let var = va.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / va.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "std {}", var.sqrt());
        let mut c = Params::new();
        let u = c
            .create("u", &[10000], Init::Uniform(0.25), &mut Rng::new(1), &dev)
            .unwrap();
        let max = u.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(max <= 0.25 && max > 0.24, "{max}");
        assert!(c.insert("u", u).is_err(), "a duplicate name is refused");
    }
}
