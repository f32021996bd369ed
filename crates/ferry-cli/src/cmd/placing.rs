//! Options shared by the commands that place a model on devices (`place`, `run`, `verify`,
//! `migrate`): which devices, memory caps, manual maps, the reserve. All go through
//! ferry-device's planner.

use anyhow::{Context, Result};
use ferry_device::{DTypePolicy, DeviceSpec, Inventory, PlanOptions, Reserve, Workload};

use crate::units::{human_bytes, parse_size};

/// Where a model runs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PlaceArgs {
    /// Devices in the order they are filled, comma-separated: cpu, cuda:N, metal:N, or auto (every device this machine has, accelerators first, the CPU last).
    #[arg(long, alias = "device", value_name = "LIST")]
    pub devices: Option<String>,
    /// Cap a device's memory: DEVICE=SIZE, comma-separated or repeated (e.g. cuda:0=20GiB,cpu=64GiB); also how to plan for a device this machine lacks.
    #[arg(long, value_name = "DEVICE=SIZE", value_delimiter = ',')]
    pub max_memory: Vec<String>,
    /// Put the units whose name matches REGEX on DEVICE (repeatable, first match wins; a decoder's units: embed, layers.N, head; an encoder's: embeddings, layer.N, moved whole), e.g. --map 'layers\.(2[0-9])=cpu'.
    #[arg(long, value_name = "REGEX=DEVICE")]
    pub map: Vec<String>,
    /// Memory kept free on each accelerator: a percentage of its total (2%) or a size (1GiB) (default: the larger of 2% and 512MiB).
    #[arg(long, value_name = "PCT|SIZE")]
    pub reserve: Option<String>,
}

impl PlaceArgs {
    /// Whether anything but the plain CPU was asked for.
    pub fn requested(&self, dtype: Option<&str>) -> bool {
        let cpu_only = self
            .devices
            .as_deref()
            .is_none_or(|d| d.trim().eq_ignore_ascii_case("cpu"));
        !(cpu_only
            && self.map.is_empty()
            && self.max_memory.is_empty()
            && dtype.is_none_or(|d| d == "f32" || d == "auto"))
    }

    /// The planner's options: `default_devices` when `--devices` is not given (`auto` for
    /// every device of `inventory`).
    pub fn options(
        &self,
        inventory: &Inventory,
        default_devices: &str,
        dtype: Option<&str>,
        workload: Workload,
    ) -> Result<PlanOptions> {
        let list = self.devices.as_deref().unwrap_or(default_devices);
        let devices = if list.trim().eq_ignore_ascii_case("auto") {
            inventory.devices()
        } else {
            ferry_device::spec::parse_list(list)?
        };
        let max_memory = self
            .max_memory
            .iter()
            .map(|m| {
                let (d, size) = m.split_once('=').with_context(|| {
                    format!("--max-memory {m}: expected DEVICE=SIZE, e.g. cuda:0=20GiB")
                })?;
                let d: DeviceSpec = d.parse()?;
                let bytes = parse_size(size).with_context(|| format!("--max-memory {m}"))?;
                Ok((d, bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let maps = self
            .map
            .iter()
            .map(|m| PlanOptions::parse_map(m))
            .collect::<Result<Vec<_>, _>>()?;
        let reserve = match self.reserve.as_deref() {
            None => Reserve::default(),
            Some(r) => match r.trim().strip_suffix('%') {
                Some(p) => Reserve {
                    fraction: p
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| (0.0..100.0).contains(f))
                        .with_context(|| {
                            format!("--reserve {r}: expected a percentage below 100")
                        })?
                        / 100.0,
                    min_bytes: 0,
                },
                None => Reserve {
                    fraction: 0.0,
                    min_bytes: parse_size(r).with_context(|| format!("--reserve {r}"))?,
                },
            },
        };
        Ok(PlanOptions {
            devices,
            max_memory,
            maps,
            reserve,
            workload,
            policy: DTypePolicy::parse(dtype)?,
            held_on_cpu: 0,
        })
    }
}

/// `layers.0, layers.1, ..., layers.5` as `layers.0-5`.
pub fn compact_units(units: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(String, usize, usize)> = None;
    let flush = |run: &mut Option<(String, usize, usize)>, out: &mut Vec<String>| {
        if let Some((stem, a, b)) = run.take() {
            out.push(if a == b {
                format!("{stem}.{a}")
            } else {
                format!("{stem}.{a}-{b}")
            });
        }
    };
    for u in units {
        let parsed = u
            .rsplit_once('.')
            .and_then(|(s, n)| n.parse::<usize>().ok().map(|n| (s.to_string(), n)));
        match (parsed, &mut run) {
            (Some((s, n)), Some((stem, _, b))) if *stem == s && n == *b + 1 => *b = n,
            (Some((s, n)), _) => {
                flush(&mut run, &mut out);
                run = Some((s, n, n));
            }
            (None, _) => {
                flush(&mut run, &mut out);
                out.push(u.clone());
            }
        }
    }
    flush(&mut run, &mut out);
    out.join(", ")
}

/// The plan as a table: per device its dtype, budget, weights, KV cache, activations, what is
/// free after, and its units.
pub fn plan_table(plan: &ferry_device::Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:<5} {:>11} {:>11} {:>11} {:>11} {:>11}  units",
        "device", "dtype", "budget", "weights", "KV cache", "activations", "free after"
    );
    for d in &plan.devices {
        let free = d.free_after();
        let free = if free < 0 {
            format!("-{}", human_bytes(free.unsigned_abs()))
        } else {
            human_bytes(free as u64)
        };
        let _ = writeln!(
            s,
            "{:<8} {:<5} {:>11} {:>11} {:>11} {:>11} {:>11}  {}",
            d.device.to_string(),
            d.dtype.as_str(),
            human_bytes(d.budget_bytes),
            human_bytes(d.weights_bytes),
            human_bytes(d.kv_bytes),
            human_bytes(d.activation_bytes),
            free,
            if d.units.is_empty() {
                "-".to_string()
            } else {
                compact_units(&d.units)
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_blocks_print_as_a_range() {
        let u: Vec<String> = [
            "embed", "layers.0", "layers.1", "layers.2", "layers.5", "head",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(compact_units(&u), "embed, layers.0-2, layers.5, head");
    }
}
