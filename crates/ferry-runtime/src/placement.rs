//! Where a model's units run and in what dtype ([`Placement`]): the runtime loads each unit
//! where a plan ([`crate::planning`]) says.

use std::collections::HashMap;

use candle_core::{DType, Device};
use ferry_device::{DeviceSpec, Plan};

use crate::error::Result;

/// Each unit's device and compute dtype.
#[derive(Debug, Clone)]
pub struct Placement {
    units: HashMap<String, (Device, DType)>,
    default: (Device, DType),
}

impl Placement {
    /// Everything on `device` in `dtype`.
    pub fn single(device: Device, dtype: DType) -> Placement {
        Placement {
            units: HashMap::new(),
            default: (device, dtype),
        }
    }

    /// Puts unit `name` on `device` in `dtype` (a split no plan expresses: per-unit dtypes on
    /// one device, for instance).
    pub fn with_unit(mut self, name: &str, device: Device, dtype: DType) -> Placement {
        self.units.insert(name.to_string(), (device, dtype));
        self
    }

    /// The placement `plan` describes, its devices opened (a device this build or machine
    /// lacks is an error naming it).
    pub fn from_plan(plan: &Plan) -> Result<Placement> {
        let mut open: HashMap<DeviceSpec, Device> = HashMap::new();
        let mut units = HashMap::new();
        for (unit, spec) in &plan.assignment {
            let dev = match open.get(spec) {
                Some(d) => d.clone(),
                None => {
                    let d = ferry_device::open(*spec)?;
                    open.insert(*spec, d.clone());
                    d
                }
            };
            let dtype = plan.dtype_of(*spec).unwrap_or(DType::F32);
            units.insert(unit.clone(), (dev, dtype));
        }
        let default = plan
            .assignment
            .first()
            .and_then(|(u, _)| units.get(u).cloned())
            .unwrap_or((Device::Cpu, DType::F32));
        Ok(Placement { units, default })
    }

    /// Unit `name`'s device and dtype (the first unit's when the plan does not name it).
    pub fn of(&self, name: &str) -> (&Device, DType) {
        let (d, t) = self.units.get(name).unwrap_or(&self.default);
        (d, *t)
    }

    /// The device the model's input goes to (its first unit's).
    pub fn input_device(&self) -> &Device {
        &self.default.0
    }
}
