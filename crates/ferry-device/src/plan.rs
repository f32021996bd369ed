//! Placing a model's units on devices.
//!
//! `auto` fills the devices in the order given (accelerators first, the CPU last, by
//! default) while keeping a reserve on each accelerator, never splits a unit, and moves on to
//! the next device when a unit does not fit: what does not fit the accelerators spills to the
//! CPU. A unit a `--map REGEX=DEVICE` matches (first match wins) goes where the map says.
//! `--max-memory DEVICE=SIZE` caps a device (and lets a plan name a device this machine lacks).
//! A device's use is its units' weights, their KV caches, and the largest activation peak of
//! its units (see [`crate::memory`]). A model that fits nowhere is [`Error::DoesNotFit`],
//! saying by how many MiB and what context or batch would fit.

use candle_core::DType;
use regex::Regex;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::memory::{mib, ModelCost, Unit, Workload};
use crate::policy::DTypePolicy;
use crate::spec::DeviceSpec;

/// Memory kept free on each accelerator: the larger of a fraction of its total and a floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reserve {
    /// Fraction of the device's total memory.
    pub fraction: f64,
    /// The least bytes kept.
    pub min_bytes: u64,
}

impl Default for Reserve {
    /// The larger of 2% and 512 MiB.
    fn default() -> Self {
        Reserve {
            fraction: 0.02,
            min_bytes: 512 << 20,
        }
    }
}

impl Reserve {
    /// The bytes kept on an accelerator of `total` bytes.
    pub fn of(&self, total: u64) -> u64 {
        ((total as f64 * self.fraction) as u64).max(self.min_bytes)
    }
}

/// How to place.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The devices `auto` fills, in order.
    pub devices: Vec<DeviceSpec>,
    /// Per-device caps in bytes (`--max-memory`): a device's budget is its cap (at most its
    /// free memory when this machine has it), its reserve not taken off.
    pub max_memory: Vec<(DeviceSpec, u64)>,
    /// Units whose name a regex matches go to its device (first match wins).
    pub maps: Vec<(Regex, DeviceSpec)>,
    /// Kept free on accelerators without a cap.
    pub reserve: Reserve,
    /// The batch and context sized for.
    pub workload: Workload,
    /// Each device's compute dtype.
    pub policy: DTypePolicy,
    /// Bytes the CPU holds besides the plan (the f32 reference a verification loads there),
    /// taken off the CPU's budget.
    pub held_on_cpu: u64,
}

impl PlanOptions {
    /// Every device of `inventory`, accelerators first, with the defaults.
    pub fn auto(inventory: &Inventory) -> PlanOptions {
        PlanOptions {
            devices: inventory.devices(),
            max_memory: Vec::new(),
            maps: Vec::new(),
            reserve: Reserve::default(),
            workload: Workload::default(),
            policy: DTypePolicy::default(),
            held_on_cpu: 0,
        }
    }

    /// Parses one `--map REGEX=DEVICE`.
    pub fn parse_map(s: &str) -> Result<(Regex, DeviceSpec)> {
        let (re, dev) = s.rsplit_once('=').ok_or_else(|| {
            Error::Option(format!(
                "--map {s}: expected REGEX=DEVICE, e.g. 'layers\\.(2[0-9])=cpu'"
            ))
        })?;
        let re = Regex::new(&format!("^(?:{re})$"))
            .map_err(|e| Error::Option(format!("--map {s}: {e}")))?;
        let dev = dev
            .parse()
            .map_err(|e: Error| Error::Option(format!("--map {s}: {e}")))?;
        Ok((re, dev))
    }
}

/// What one device holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePlan {
    /// The device.
    pub device: DeviceSpec,
    /// Its compute dtype.
    #[serde(serialize_with = "dtype_name")]
    pub dtype: DType,
    /// Its total memory, when this machine has it.
    pub total_bytes: Option<u64>,
    /// What the plan may use: free memory less the reserve, or the cap.
    pub budget_bytes: u64,
    /// Memory kept free (taken off `budget_bytes` already).
    pub reserve_bytes: u64,
    /// Its units' weights.
    pub weights_bytes: u64,
    /// Its blocks' KV caches.
    pub kv_bytes: u64,
    /// The largest activation peak of its units.
    pub activation_bytes: u64,
    /// Its units, in forward order.
    pub units: Vec<String>,
    /// Whether `auto` fills it (a device only a map names is not).
    #[serde(skip)]
    auto: bool,
}

fn dtype_name<S: serde::Serializer>(d: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

impl DevicePlan {
    /// Weights, KV cache and activations.
    pub fn used_bytes(&self) -> u64 {
        self.weights_bytes + self.kv_bytes + self.activation_bytes
    }

    /// The budget left after the plan (negative when over).
    pub fn free_after(&self) -> i64 {
        self.budget_bytes as i64 - self.used_bytes() as i64
    }

    fn over(&self) -> u64 {
        self.used_bytes().saturating_sub(self.budget_bytes)
    }
}

/// A placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The architecture placed.
    pub arch: String,
    /// The batch and context sized for.
    pub workload: Workload,
    /// Every device considered, in order (some may hold nothing).
    pub devices: Vec<DevicePlan>,
    /// Each unit and its device, in forward order.
    pub assignment: Vec<(String, DeviceSpec)>,
}

impl Plan {
    /// Places `model` on the devices of `opts` (memory from `inventory`).
    pub fn new(model: &ModelCost, inventory: &Inventory, opts: &PlanOptions) -> Result<Plan> {
        let plan = place(model, inventory, opts)?;
        let over: u64 = plan.devices.iter().map(DevicePlan::over).sum();
        if over == 0 {
            return Ok(plan);
        }
        Err(Error::DoesNotFit(does_not_fit(
            model, inventory, opts, &plan, over,
        )))
    }

    /// The device unit `name` is on.
    pub fn device_of(&self, name: &str) -> Option<DeviceSpec> {
        self.assignment
            .iter()
            .find(|(u, _)| u == name)
            .map(|(_, d)| *d)
    }

    /// The compute dtype of `device` in this plan.
    pub fn dtype_of(&self, device: DeviceSpec) -> Option<DType> {
        self.devices
            .iter()
            .find(|d| d.device == device)
            .map(|d| d.dtype)
    }

    /// The devices that hold at least one unit.
    pub fn used(&self) -> impl Iterator<Item = &DevicePlan> {
        self.devices.iter().filter(|d| !d.units.is_empty())
    }
}

/// Each device's budget, dtype (the model's own, else the policy's) and reserve.
fn budgets(
    model: &ModelCost,
    inventory: &Inventory,
    opts: &PlanOptions,
) -> Result<Vec<DevicePlan>> {
    if opts.devices.is_empty() {
        return Err(Error::Option("no device to place on".into()));
    }
    let mut plans = devices_placed_on(opts)?
        .into_iter()
        .map(|(device, auto)| {
            let (total, budget, reserve) = memory(inventory, opts, device)?;
            Ok(DevicePlan {
                device,
                dtype: model
                    .dtype
                    .unwrap_or_else(|| opts.policy.dtype(device, Some(inventory))),
                total_bytes: total,
                budget_bytes: budget,
                reserve_bytes: reserve,
                weights_bytes: 0,
                kv_bytes: 0,
                activation_bytes: 0,
                units: Vec::new(),
                auto,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    share_unified_memory(&mut plans, opts);
    for p in plans.iter_mut().filter(|p| p.device == DeviceSpec::CPU) {
        p.budget_bytes = p.budget_bytes.saturating_sub(opts.held_on_cpu);
    }
    Ok(plans)
}

/// The devices placed on, each with whether `auto` fills it: those of `--devices`, then
/// those only a map names; an error when `--max-memory` names another.
fn devices_placed_on(opts: &PlanOptions) -> Result<Vec<(DeviceSpec, bool)>> {
    let mut list: Vec<(DeviceSpec, bool)> = opts.devices.iter().map(|d| (*d, true)).collect();
    for (_, d) in &opts.maps {
        if !list.iter().any(|(x, _)| x == d) {
            list.push((*d, false));
        }
    }
    if let Some((d, _)) = opts
        .max_memory
        .iter()
        .find(|(d, _)| !list.iter().any(|(x, _)| x == d))
    {
        return Err(Error::Option(format!(
            "--max-memory names {d}, which is not among the devices placed on ({}); add it to \
             --devices",
            list.iter()
                .map(|(d, _)| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(list)
}

/// `(total, budget, reserve)` of `device`: its cap (at most its free memory), else its free
/// memory less the reserve of an accelerator; an error when it has neither.
fn memory(
    inventory: &Inventory,
    opts: &PlanOptions,
    device: DeviceSpec,
) -> Result<(Option<u64>, u64, u64)> {
    let cap = opts
        .max_memory
        .iter()
        .find(|(d, _)| *d == device)
        .map(|(_, b)| *b);
    Ok(match (cap, inventory.memory(device)) {
        (Some(c), Some((t, free))) => (Some(t), c.min(free), 0),
        (Some(c), None) => (None, c, 0),
        (None, Some((t, free))) => {
            let r = if device.is_accelerator() {
                opts.reserve.of(t)
            } else {
                0
            };
            (Some(t), free.saturating_sub(r), r)
        }
        (None, None) if !crate::spec::compiled(device.kind) => {
            // The build command, not "not on this machine".
            return Err(crate::spec::not_compiled(device));
        }
        (None, None) => return Err(not_usable(inventory, device)),
    })
}

/// The error for a `device` this machine lacks (and no cap plans it without loading it).
fn not_usable(inventory: &Inventory, device: DeviceSpec) -> Error {
    Error::Option(format!(
        "device {device} is not usable on this machine (it has {}{}): use --devices cpu, or \
         plan for it without loading it: ferry place --dry-run --max-memory {device}=SIZE",
        inventory
            .devices()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        inventory
            .notes
            .iter()
            .map(|n| format!("; {n}"))
            .collect::<String>()
    ))
}

/// Apple GPUs use the host's RAM: an uncapped Metal device may use three quarters of what is
/// available (macOS's usual GPU working-set limit), less its reserve, and the CPU keeps what
/// the Metal devices do not take (capped or not), so the same RAM is not offered twice.
fn share_unified_memory(plans: &mut [DevicePlan], opts: &PlanOptions) {
    let capped = |d: DeviceSpec| opts.max_memory.iter().any(|(x, _)| *x == d);
    let mut taken = 0;
    for p in plans.iter_mut() {
        if p.device.kind != crate::spec::DeviceKind::Metal {
            continue;
        }
        if !capped(p.device) {
            let available = p.budget_bytes + p.reserve_bytes;
            p.budget_bytes = (available / 4 * 3).saturating_sub(p.reserve_bytes);
        }
        taken += p.budget_bytes + p.reserve_bytes;
    }
    for p in plans.iter_mut() {
        if p.device == DeviceSpec::CPU && !capped(p.device) {
            p.budget_bytes = p.budget_bytes.saturating_sub(taken);
        }
    }
}

/// `(weights, kv, activations)` of `unit` on `d`.
fn unit_cost(model: &ModelCost, unit: &Unit, d: &DevicePlan, w: Workload) -> (u64, u64, u64) {
    let weights = unit.weight_bytes(d.device, d.dtype);
    let (kv, act) = match &model.shape {
        Some(s) => (
            if unit.role == crate::memory::Role::Block {
                s.kv_bytes(w, d.dtype)
            } else {
                0
            },
            s.activation_bytes(unit.role, w, d.dtype),
        ),
        None => (0, 0),
    };
    (weights, kv, act)
}

fn fits(d: &DevicePlan, (w, kv, act): (u64, u64, u64)) -> bool {
    d.weights_bytes + w + d.kv_bytes + kv + d.activation_bytes.max(act) <= d.budget_bytes
}

fn add(d: &mut DevicePlan, name: &str, (w, kv, act): (u64, u64, u64)) {
    d.weights_bytes += w;
    d.kv_bytes += kv;
    d.activation_bytes = d.activation_bytes.max(act);
    d.units.push(name.to_string());
}

/// Assigns every unit; units that fit nowhere overflow onto the last device `auto` fills (the
/// caller turns any overflow into an error).
fn place(model: &ModelCost, inventory: &Inventory, opts: &PlanOptions) -> Result<Plan> {
    let mut devices = budgets(model, inventory, opts)?;
    let auto: Vec<usize> = (0..devices.len()).filter(|&i| devices[i].auto).collect();
    let assignment = if !model.splittable {
        place_whole(model, opts, &mut devices, &auto)
    } else {
        place_units(model, opts, &mut devices, &auto)
    };
    check_maps(model, opts)?;
    Ok(Plan {
        arch: model.arch.clone(),
        workload: opts.workload,
        devices,
        assignment,
    })
}

/// The index in `devices` of the device a `--map` sends unit `name` to (first match wins).
fn mapped(opts: &PlanOptions, devices: &[DevicePlan], name: &str) -> Option<usize> {
    let (_, dev) = opts.maps.iter().find(|(re, _)| re.is_match(name))?;
    devices.iter().position(|d| d.device == *dev)
}

/// Places a model that is not split on one device: a map's, else the first of `auto` that
/// holds all of it, else the last; returns each unit and its device.
fn place_whole(
    model: &ModelCost,
    opts: &PlanOptions,
    devices: &mut [DevicePlan],
    auto: &[usize],
) -> Vec<(String, DeviceSpec)> {
    let w = opts.workload;
    let target = model
        .units
        .iter()
        .find_map(|u| mapped(opts, devices, &u.name))
        .unwrap_or_else(|| {
            auto.iter()
                .copied()
                .find(|&i| holds_all(model, &devices[i], w))
                .unwrap_or(*auto.last().expect("budgets lists a device"))
        });
    let mut assignment = Vec::with_capacity(model.units.len());
    for u in &model.units {
        let c = unit_cost(model, u, &devices[target], w);
        add(&mut devices[target], &u.name, c);
        assignment.push((u.name.clone(), devices[target].device));
    }
    assignment
}

/// Whether `d` has room for every unit of `model` besides what it holds.
fn holds_all(model: &ModelCost, d: &DevicePlan, w: Workload) -> bool {
    let mut probe = d.clone();
    for u in &model.units {
        let c = unit_cost(model, u, &probe, w);
        add(&mut probe, &u.name, c);
    }
    probe.over() == 0
}

/// Places a model unit by unit: mapped units where their map says, the others filling the
/// devices of `auto` in order; returns each unit and its device, in forward order.
fn place_units(
    model: &ModelCost,
    opts: &PlanOptions,
    devices: &mut [DevicePlan],
    auto: &[usize],
) -> Vec<(String, DeviceSpec)> {
    let w = opts.workload;
    // Mapped units take their room first, so filling in order leaves it to them.
    let mut slots: Vec<Option<usize>> = model
        .units
        .iter()
        .map(|u| mapped(opts, devices, &u.name))
        .collect();
    for (u, slot) in model.units.iter().zip(&slots) {
        if let Some(i) = *slot {
            let c = unit_cost(model, u, &devices[i], w);
            add(&mut devices[i], &u.name, c);
        }
    }
    let mut cursor = 0;
    for (u, slot) in model.units.iter().zip(slots.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        while cursor + 1 < auto.len()
            && !fits(
                &devices[auto[cursor]],
                unit_cost(model, u, &devices[auto[cursor]], w),
            )
        {
            cursor += 1;
        }
        let i = auto[cursor];
        let c = unit_cost(model, u, &devices[i], w);
        add(&mut devices[i], &u.name, c);
        *slot = Some(i);
    }
    // Each device lists its units in forward order.
    for d in devices.iter_mut() {
        d.units.clear();
    }
    let mut assignment = Vec::with_capacity(model.units.len());
    for (u, slot) in model.units.iter().zip(&slots) {
        let i = slot.expect("every unit has a device");
        devices[i].units.push(u.name.clone());
        assignment.push((u.name.clone(), devices[i].device));
    }
    assignment
}

/// An error when a `--map` matches no unit of `model`.
fn check_maps(model: &ModelCost, opts: &PlanOptions) -> Result<()> {
    if let Some((re, _)) = opts
        .maps
        .iter()
        .find(|(re, _)| !model.units.iter().any(|u| re.is_match(&u.name)))
    {
        return Err(Error::Option(format!(
            "--map {}: no unit of this {} matches (its units: {})",
            re.as_str()
                .strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(re.as_str()),
            model.arch,
            model
                .units
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// The message for a model `over` bytes too large: what it needs, what the devices hold, and
/// the largest context (or batch 1) that fits.
fn does_not_fit(
    model: &ModelCost,
    inventory: &Inventory,
    opts: &PlanOptions,
    plan: &Plan,
    over: u64,
) -> String {
    let need: u64 = plan.devices.iter().map(DevicePlan::used_bytes).sum();
    let have: u64 = plan.devices.iter().map(|d| d.budget_bytes).sum();
    let held = plan
        .devices
        .iter()
        .map(|d| format!("{} {} MiB", d.device, d.budget_bytes >> 20))
        .collect::<Vec<_>>()
        .join(", ");
    let w = opts.workload;
    let fits_with = |w: Workload| {
        let o = PlanOptions {
            workload: w,
            ..opts.clone()
        };
        place(model, inventory, &o)
            .map(|p| p.devices.iter().all(|d| d.over() == 0))
            .unwrap_or(false)
    };
    let hint = if w.batch > 1 && fits_with(Workload { batch: 1, ..w }) {
        " it fits at batch 1".to_string()
    } else if w.context > 1 && fits_with(Workload { context: 1, ..w }) {
        let (mut lo, mut hi) = (1, w.context); // fits at lo, not at hi
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits_with(Workload { context: mid, ..w }) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        format!(" it fits at a context of {lo} tokens")
    } else {
        " even its weights do not fit: add a device, raise --max-memory, or quantize \
         (ferry convert --quant q8_0 or q4_k)"
            .to_string()
    };
    format!(
        "{} does not fit: it needs {} MiB (weights, KV cache for batch {} x context {}, \
         activations) where {held} hold {} MiB; placed unit by unit (none is split) it exceeds \
         total capacity by {} MiB ({});{hint}",
        model.arch,
        mib(need),
        w.batch,
        w.context,
        have >> 20,
        mib(over),
        plan.devices
            .iter()
            .filter(|d| d.over() > 0)
            .map(|d| format!("{} over by {} MiB", d.device, mib(d.over())))
            .collect::<Vec<_>>()
            .join(", "),
    )
}
