//! Control flow: `If`, `Loop` and `Scan`. Their subgraphs ("bodies") read values of the
//! enclosing graphs by name ([`Node::captured_inputs`]), so the executor runs these nodes
//! itself instead of through the op registry: each body is prepared once, as an [`Executor`]
//! of its own, when the enclosing one is built ([`prepare`]), and run with its formal inputs
//! plus the outer values it captures ([`run`]).
//!
//! - `If` (opsets 1 to 23): a one-element condition picks `then_branch` or `else_branch`.
//! - `Loop` (opsets 1 to 23): optional trip count `M` and condition; the body takes
//!   `(iteration_num, cond, carried...)` and returns `(cond, carried..., scan_outputs...)`; the
//!   node returns the final carried values and each scan output's per-iteration values stacked
//!   along a new axis 0.
//! - `Scan`: opset 9 on (`num_scan_inputs`, `scan_input_axes`, `scan_input_directions`,
//!   `scan_output_axes`, `scan_output_directions`), and opset 8 (batch axis 0, the scan along
//!   axis 1, optional `sequence_lens`, `directions`; outputs past a shorter sequence are zero).
//!
//! Nothing a file says is trusted: a Loop without a condition whose trip count would pass
//! [`MAX_ITERATIONS`] (or without either, which would never end) is refused before it runs,
//! and a run stops once its Loop and Scan bodies, nested ones included, have run that many
//! iterations ([`Executor::with_max_iterations`] changes the limit). Stacked scan outputs are
//! checked against the [`MemoryBudget`] as they grow. Wrong arities, a condition that is not
//! one element, and body outputs that change shape between iterations are errors naming the
//! node.

use std::cell::Cell;
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::ops::OpCx;
use super::util::{ints_of, norm_axis};
use super::{check_input, op_error, Executor, MemoryBudget, RunStats};
use crate::error::{Error, Result};
use crate::ir::{Dim, Node, ValueInfo};

/// The most body iterations the Loop and Scan nodes of one run of a graph may take together
/// (nested ones included), unless [`Executor::with_max_iterations`] says otherwise: a file
/// cannot make a run loop forever.
pub const MAX_ITERATIONS: u64 = 1_000_000;

/// Whether `node` is a control-flow op the executor runs itself.
pub(crate) fn is_control(node: &Node) -> bool {
    (node.domain.is_empty() || node.domain == "ai.onnx")
        && matches!(node.op_type.as_str(), "If" | "Loop" | "Scan")
}

/// What one run of a graph hands down to the bodies it runs: the memory budget and the
/// iteration count so far.
pub(crate) struct Limits {
    /// The most bytes one tensor may take.
    pub budget: MemoryBudget,
    max_iterations: u64,
    iterations: Cell<u64>,
}

impl Limits {
    /// A run under `budget` that may take `max_iterations` body iterations.
    pub fn new(budget: MemoryBudget, max_iterations: u64) -> Self {
        Limits {
            budget,
            max_iterations,
            iterations: Cell::new(0),
        }
    }

    /// Iterations left to this run.
    fn remaining(&self) -> u64 {
        self.max_iterations.saturating_sub(self.iterations.get())
    }

    /// Counts one more iteration of `node`'s body, or the error when the run has used them up.
    fn take(&self, node: &Node) -> Result<()> {
        if self.remaining() == 0 {
            return Err(node.error(format!(
                "stopped: the run has reached ferry's limit of {} Loop/Scan body iterations \
                     (nested ones counted together)",
                self.max_iterations
            )));
        }
        self.iterations.set(self.iterations.get() + 1);
        Ok(())
    }

    /// `Ok` when `n` more iterations fit the limit, else the error naming `node` and `why`.
    fn check(&self, node: &Node, n: u64, why: impl FnOnce() -> String) -> Result<()> {
        if n <= self.remaining() {
            return Ok(());
        }
        Err(node.error(format!(
            "{}, over ferry's limit of {} Loop/Scan body iterations in one run ({} left); \
                 nothing was run",
            why(),
            self.max_iterations,
            self.remaining()
        )))
    }
}

/// One subgraph, prepared to run.
struct Body {
    /// The attribute holding it (`then_branch`, `body`).
    attr: String,
    exec: Executor,
    /// The values of enclosing graphs it reads.
    captured: Vec<String>,
}

/// The subgraphs of one control-flow node, prepared to run (in the attribute order of
/// [`prepare`]: `then_branch`, `else_branch`, or `body`).
pub(crate) struct Bodies(Vec<Body>);

/// Prepares `node`'s subgraphs when it is a control-flow op (`None` otherwise): each becomes
/// an [`Executor`] on `device` (its initializers loaded once), and the node's arity is checked
/// against them.
pub(crate) fn prepare(node: &Node, opset: i64, device: &Device) -> Result<Option<Bodies>> {
    if !is_control(node) {
        return Ok(None);
    }
    let attrs: &[&str] = if node.op_type == "If" {
        &["then_branch", "else_branch"]
    } else {
        &["body"]
    };
    let mut bodies = Vec::with_capacity(attrs.len());
    for &attr in attrs {
        let g = node
            .attr_graph(attr)
            .ok_or_else(|| node.error(format!("its subgraph attribute `{attr}` is missing")))?;
        let captured = g.outer_reads().into_iter().map(String::from).collect();
        let exec = Executor::prepare(g.clone(), opset, device).map_err(|e| match e {
            e @ Error::Node { .. } => node.error(format!("in its `{attr}`: {e}")),
            e => e,
        })?;
        bodies.push(Body {
            attr: attr.into(),
            exec,
            captured,
        });
    }
    check_arity(node, opset, &bodies)?;
    Ok(Some(Bodies(bodies)))
}

/// The counts of inputs and outputs of the node and its bodies agree.
fn check_arity(node: &Node, opset: i64, bodies: &[Body]) -> Result<()> {
    let fail = |msg: String| Err(node.error(msg));
    let (ins, outs) = (node.inputs.len(), node.outputs.len());
    match node.op_type.as_str() {
        "If" => {
            for b in bodies {
                let g = &b.exec.graph;
                if !g.inputs.is_empty() {
                    return fail(format!(
                        "its `{}` declares {} inputs; If's branches take none",
                        b.attr,
                        g.inputs.len()
                    ));
                }
                if g.outputs.len() != outs {
                    return fail(format!(
                        "its `{}` has {} outputs for the node's {outs}",
                        b.attr,
                        g.outputs.len()
                    ));
                }
            }
        }
        "Loop" => {
            let g = &bodies[0].exec.graph;
            let Some(n) = ins.checked_sub(2) else {
                return fail(format!(
                    "it has {ins} inputs; Loop takes a trip count and a condition (either may be \
                     empty) before its loop-carried values"
                ));
            };
            if g.inputs.len() != n + 2 {
                return fail(format!(
                    "its body takes {} inputs; with {n} loop-carried values it must take {} \
                     (iteration number, condition, the values)",
                    g.inputs.len(),
                    n + 2
                ));
            }
            if outs < n || g.outputs.len() != outs + 1 {
                return fail(format!(
                    "its body has {} outputs and the node {outs}, for {n} loop-carried values: \
                     the body returns the condition, the values and the scan outputs, the node \
                     the values and the scan outputs",
                    g.outputs.len()
                ));
            }
        }
        _ => {
            let g = &bodies[0].exec.graph;
            let m = node.attr_int("num_scan_inputs", 0);
            let first = usize::from(opset < 9);
            let m = usize::try_from(m)
                .ok()
                .filter(|&m| m >= 1 && m + first <= ins)
                .ok_or_else(|| {
                    node.error(format!("num_scan_inputs {m} does not fit its {ins} inputs"))
                })?;
            let n = ins - first - m;
            if g.inputs.len() != n + m {
                return fail(format!(
                    "its body takes {} inputs; with {n} state values and {m} scan inputs it must \
                     take {}",
                    g.inputs.len(),
                    n + m
                ));
            }
            if outs < n || g.outputs.len() != outs {
                return fail(format!(
                    "its body has {} outputs and the node {outs}, for {n} state values: both \
                     return the states, then the scan outputs",
                    g.outputs.len()
                ));
            }
        }
    }
    Ok(())
}

/// Where a run of a body reads the outer values it captures and counts its transfers.
pub(crate) struct Scope<'a> {
    /// A value of the enclosing graph by name.
    pub outer: &'a dyn Fn(&str) -> Option<Tensor>,
    /// The run's limits.
    pub limits: &'a Limits,
    /// The enclosing run's statistics (body transfers are added).
    pub stats: &'a mut RunStats,
}

/// Runs control-flow node `node` on its inputs `args` with its prepared `bodies`.
pub(crate) fn run(
    node: &Node,
    bodies: &Bodies,
    cx: &OpCx,
    args: Vec<Option<Tensor>>,
    scope: Scope,
) -> Result<Vec<Tensor>> {
    let mut run = Run {
        node,
        cx,
        limits: scope.limits,
        stats: scope.stats,
    };
    let captured: Vec<HashMap<String, Tensor>> = bodies
        .0
        .iter()
        .map(|b| run.capture(b, scope.outer))
        .collect::<Result<_>>()?;
    match node.op_type.as_str() {
        "If" => run.if_(bodies, &captured, &args),
        "Loop" => run.loop_(&bodies.0[0], &captured[0], &args),
        _ if cx.opset < 9 => run.scan8(&bodies.0[0], &captured[0], &args),
        _ => run.scan(&bodies.0[0], &captured[0], &args),
    }
}

/// One run of a control-flow node.
struct Run<'a> {
    node: &'a Node,
    cx: &'a OpCx<'a>,
    limits: &'a Limits,
    stats: &'a mut RunStats,
}

/// A scan input sliced per iteration: the tensor, its scan axis, whether it is read backwards.
type ScanInput = (Tensor, usize, bool);

impl Run<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        self.node.error(msg)
    }

    /// A candle error as an error naming the node.
    fn candle<T>(&self, r: candle_core::Result<T>) -> Result<T> {
        r.map_err(|e| self.err(e.to_string()))
    }

    /// Input `i`, which must be present.
    fn arg<'t>(&self, args: &'t [Option<Tensor>], i: usize, what: &str) -> Result<&'t Tensor> {
        args.get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.err(format!("input {i} ({what}) is required but missing")))
    }

    /// The outer values `body` reads.
    fn capture(
        &self,
        body: &Body,
        outer: &dyn Fn(&str) -> Option<Tensor>,
    ) -> Result<HashMap<String, Tensor>> {
        body.captured
            .iter()
            .map(|name| {
                outer(name).map(|t| (name.clone(), t)).ok_or_else(|| {
                    self.err(format!(
                        "its `{}` reads `{name}` of the enclosing graph, which is not available",
                        body.attr
                    ))
                })
            })
            .collect()
    }

    /// Runs `body` once on `formal` (its inputs, in order) and the captured values; its
    /// outputs in order. `at` says which run it is for errors ("iteration 3").
    fn body(
        &mut self,
        body: &Body,
        formal: Vec<Tensor>,
        captured: &HashMap<String, Tensor>,
        at: &dyn Fn() -> String,
    ) -> Result<Vec<Tensor>> {
        let g = &body.exec.graph;
        let wrap = |e: Error| match e {
            // Keeps its own node and the budget in the error's kind.
            e @ Error::NodeOverBudget { .. } => e,
            e => self.node.error(format!("`{}`{}: {e}", body.attr, at())),
        };
        let mut values: HashMap<String, Tensor> =
            HashMap::with_capacity(formal.len() + captured.len());
        for (name, t) in captured {
            values.insert(name.clone(), t.clone());
        }
        for (vi, t) in g.inputs.iter().zip(formal) {
            check_input(vi, &t).map_err(wrap)?;
            values.insert(vi.name.clone(), t);
        }
        let (values, stats) = body
            .exec
            .run_values(values, &|_| false, false, self.limits)
            .map_err(wrap)?;
        self.stats.transfers += stats.transfers;
        g.outputs
            .iter()
            .map(|o| {
                values.get(&o.name).cloned().ok_or_else(|| {
                    wrap(Error::Invalid(format!(
                        "output `{}` was not computed",
                        o.name
                    )))
                })
            })
            .collect()
    }

    /// The single value of a one-element tensor, as a truth value.
    fn truth(&self, t: &Tensor, what: &str) -> Result<bool> {
        if t.elem_count() != 1 {
            return Err(self.err(format!(
                "its {what} has shape {:?}; it must hold one element",
                t.dims()
            )));
        }
        Ok(self.candle(super::scalar_f64(t))? != 0.0)
    }

    fn if_(
        &mut self,
        bodies: &Bodies,
        captured: &[HashMap<String, Tensor>],
        args: &[Option<Tensor>],
    ) -> Result<Vec<Tensor>> {
        let cond = self.arg(args, 0, "condition")?;
        let k = if self.truth(cond, "condition")? { 0 } else { 1 };
        let outs = self.body(&bodies.0[k], Vec::new(), &captured[k], &String::new)?;
        if outs.len() != self.node.outputs.len() {
            return Err(self.err(format!(
                "its `{}` gave {} outputs for the node's {}",
                bodies.0[k].attr,
                outs.len(),
                self.node.outputs.len()
            )));
        }
        Ok(outs)
    }

    fn loop_(
        &mut self,
        body: &Body,
        captured: &HashMap<String, Tensor>,
        args: &[Option<Tensor>],
    ) -> Result<Vec<Tensor>> {
        let g = &body.exec.graph;
        let n = self.node.inputs.len() - 2;
        let k = self.node.outputs.len() - n;
        let trip = match args.first().and_then(Option::as_ref) {
            None => None,
            Some(t) if t.elem_count() == 1 => {
                Some(u64::try_from(self.candle(ints_of(t))?[0]).unwrap_or(0))
            }
            Some(t) => {
                return Err(self.err(format!(
                    "its trip count has shape {:?}; it must hold one element",
                    t.dims()
                )))
            }
        };
        let has_cond = args.get(1).is_some_and(Option::is_some);
        let mut cond = match args.get(1).and_then(Option::as_ref) {
            Some(t) => self.truth(t, "condition")?,
            None => true,
        };
        if !has_cond {
            match trip {
                None => {
                    return Err(
                        self.err("it has neither a trip count nor a condition: it would never end")
                    )
                }
                Some(m) => self.limits.check(self.node, m, || {
                    format!("its trip count is {m} and it has no condition")
                })?,
            }
        }
        let mut carried = (0..n)
            .map(|j| self.arg(args, j + 2, "loop-carried value").cloned())
            .collect::<Result<Vec<_>>>()?;
        let rank1 = |vi: &ValueInfo| vi.shape.as_ref().is_some_and(|s| s.len() == 1);
        let (iter_rank1, cond_rank1) = (rank1(&g.inputs[0]), rank1(&g.inputs[1]));
        let dev = self.cx.device;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); k];
        let mut i: u64 = 0;
        while cond && trip.is_none_or(|m| i < m) {
            self.limits.take(self.node)?;
            let mut formal = Vec::with_capacity(n + 2);
            formal.push(self.candle(scalar(Tensor::new(i as i64, dev), iter_rank1))?);
            formal.push(self.candle(scalar(Tensor::new(u8::from(cond), dev), cond_rank1))?);
            formal.append(&mut carried);
            let outs = self.body(body, formal, captured, &|| format!(" iteration {i}"))?;
            let mut outs = outs.into_iter();
            let Some(c) = outs.next() else {
                return Err(self.err("its body returned no condition"));
            };
            if has_cond {
                cond = self.truth(&c, "body's condition output")?;
            }
            carried.extend(outs.by_ref().take(n));
            for (j, t) in outs.enumerate() {
                self.push_scan(&mut scans[j], t, j)?;
            }
            i += 1;
        }
        let mut result = carried;
        for (j, list) in scans.into_iter().enumerate() {
            result.push(self.stack_scan(list, 0, false, &g.outputs[1 + n + j])?);
        }
        Ok(result)
    }

    /// Appends one iteration's value of scan output `j`: the same shape and type as the
    /// first, and the stack so far within the memory budget.
    fn push_scan(&self, list: &mut Vec<Tensor>, t: Tensor, j: usize) -> Result<()> {
        if let Some(first) = list.first() {
            if first.dims() != t.dims() || first.dtype() != t.dtype() {
                return Err(self.err(format!(
                    "scan output {j} is {:?} {:?} in the first iteration but {:?} {:?} in \
                     iteration {}",
                    first.dims(),
                    first.dtype(),
                    t.dims(),
                    t.dtype(),
                    list.len()
                )));
            }
        }
        let mut shape = vec![list.len() + 1];
        shape.extend_from_slice(t.dims());
        self.cx
            .fits("its scan output", &shape, t.dtype())
            .map_err(|e| op_error(self.node, e))?;
        list.push(t);
        Ok(())
    }

    /// The values of one scan output stacked along `axis` (of the stacked rank), last
    /// iteration first when `reverse`. No iteration: an empty tensor shaped as the body's
    /// output `vi` declares (unknown dimensions 0).
    fn stack_scan(
        &self,
        mut list: Vec<Tensor>,
        axis: usize,
        reverse: bool,
        vi: &ValueInfo,
    ) -> Result<Tensor> {
        if list.is_empty() {
            return self.empty_scan(vi, axis, 0);
        }
        if reverse {
            list.reverse();
        }
        self.candle(Tensor::stack(&list, axis))
    }

    /// A tensor of `len` zero-filled steps of the body output `vi` declares, stacked along
    /// `axis` (unknown dimensions 0).
    fn empty_scan(&self, vi: &ValueInfo, axis: usize, len: usize) -> Result<Tensor> {
        let mut shape: Vec<usize> = vi
            .shape
            .as_ref()
            .map(|s| {
                s.iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        _ => 0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        shape.insert(axis.min(shape.len()), len);
        let dtype = match vi.dtype {
            Some(ferry_io::DType::Bool) => DType::U8,
            Some(d) => d.to_candle().unwrap_or(DType::F32),
            None => DType::F32,
        };
        if ferry_io::tensor::numel(&shape).is_none() {
            return Err(self.err(format!(
                "its scan output `{}` would be {shape:?}, which overflows",
                vi.name
            )));
        }
        self.cx
            .fits("its scan output", &shape, dtype)
            .map_err(|e| op_error(self.node, e))?;
        self.candle(Tensor::zeros(shape, dtype, self.cx.device))
    }

    /// An integer-list attribute of `len` entries, or `len` zeros when it is absent.
    fn attr_list(&self, name: &str, len: usize) -> Result<Vec<i64>> {
        match self.node.attr_ints(name) {
            None => Ok(vec![0; len]),
            Some(v) if v.len() == len => Ok(v.to_vec()),
            Some(v) => Err(self.err(format!(
                "`{name}` has {} entries for {len} tensors",
                v.len()
            ))),
        }
    }

    /// Directions (0 forward, 1 reverse) as `reverse` flags.
    fn directions(&self, name: &str, len: usize) -> Result<Vec<bool>> {
        self.attr_list(name, len)?
            .into_iter()
            .map(|d| match d {
                0 => Ok(false),
                1 => Ok(true),
                d => Err(self.err(format!(
                    "`{name}` holds {d}; directions are 0 (forward) or 1 (reverse)"
                ))),
            })
            .collect()
    }

    /// Runs the body `len` times over `xs`, carrying `states`; the final states and each scan
    /// output's values per iteration.
    fn scan_steps(
        &mut self,
        body: &Body,
        captured: &HashMap<String, Tensor>,
        mut states: Vec<Tensor>,
        xs: &[ScanInput],
        len: usize,
    ) -> Result<(Vec<Tensor>, Vec<Vec<Tensor>>)> {
        let n = states.len();
        let k = body.exec.graph.outputs.len().saturating_sub(n);
        self.limits.check(self.node, len as u64, || {
            format!("its sequence has {len} steps")
        })?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); k];
        for t in 0..len {
            self.limits.take(self.node)?;
            let mut formal = std::mem::take(&mut states);
            for (x, axis, reverse) in xs {
                let at = if *reverse { len - 1 - t } else { t };
                formal.push(self.candle(x.narrow(*axis, at, 1).and_then(|s| s.squeeze(*axis)))?);
            }
            let outs = self.body(body, formal, captured, &|| format!(" step {t}"))?;
            let mut outs = outs.into_iter();
            states.extend(outs.by_ref().take(n));
            for (j, o) in outs.enumerate() {
                self.push_scan(&mut scans[j], o, j)?;
            }
        }
        Ok((states, scans))
    }

    /// The length of the scan axis of every scan input (they must agree).
    fn scan_len(&self, xs: &[ScanInput]) -> Result<usize> {
        let mut len = None;
        for (j, (x, axis, _)) in xs.iter().enumerate() {
            let l = x.dims()[*axis];
            match len {
                None => len = Some(l),
                Some(first) if first != l => {
                    return Err(self.err(format!(
                        "scan input {j} has {l} steps along its axis {axis}, scan input 0 has \
                         {first}"
                    )))
                }
                _ => {}
            }
        }
        Ok(len.unwrap_or(0))
    }

    /// Scan, opset 9 on.
    fn scan(
        &mut self,
        body: &Body,
        captured: &HashMap<String, Tensor>,
        args: &[Option<Tensor>],
    ) -> Result<Vec<Tensor>> {
        let g = &body.exec.graph;
        let m = self.node.attr_int("num_scan_inputs", 0) as usize;
        let n = self.node.inputs.len() - m;
        let k = self.node.outputs.len() - n;
        let states = (0..n)
            .map(|j| self.arg(args, j, "state").cloned())
            .collect::<Result<Vec<_>>>()?;
        let in_axes = self.attr_list("scan_input_axes", m)?;
        let in_rev = self.directions("scan_input_directions", m)?;
        let out_axes = self.attr_list("scan_output_axes", k)?;
        let out_rev = self.directions("scan_output_directions", k)?;
        let mut xs: Vec<ScanInput> = Vec::with_capacity(m);
        for j in 0..m {
            let x = self.arg(args, n + j, "scan input")?;
            let axis = norm_axis(in_axes[j], x.rank()).map_err(|e| op_error(self.node, e))?;
            xs.push((x.clone(), axis, in_rev[j]));
        }
        let len = self.scan_len(&xs)?;
        let (mut result, scans) = self.scan_steps(body, captured, states, &xs, len)?;
        for (j, list) in scans.into_iter().enumerate() {
            let vi = &g.outputs[n + j];
            let rank = match list.first() {
                Some(t) => t.rank(),
                None => vi.shape.as_ref().map_or(0, Vec::len),
            };
            let axis = norm_axis(out_axes[j], rank + 1).map_err(|e| op_error(self.node, e))?;
            result.push(self.stack_scan(list, axis, out_rev[j], vi)?);
        }
        Ok(result)
    }

    /// Scan, opset 8: every state and scan input has a batch axis 0 and the scan runs along
    /// axis 1, each batch entry for its own `sequence_lens` steps (all by default); scan
    /// outputs are zero past a shorter sequence.
    fn scan8(
        &mut self,
        body: &Body,
        captured: &HashMap<String, Tensor>,
        args: &[Option<Tensor>],
    ) -> Result<Vec<Tensor>> {
        let g = &body.exec.graph;
        let m = self.node.attr_int("num_scan_inputs", 0) as usize;
        let n = self.node.inputs.len() - 1 - m;
        let k = self.node.outputs.len() - n;
        let states = (0..n)
            .map(|j| self.arg(args, 1 + j, "state").cloned())
            .collect::<Result<Vec<_>>>()?;
        let xs = (0..m)
            .map(|j| self.arg(args, 1 + n + j, "scan input").cloned())
            .collect::<Result<Vec<_>>>()?;
        let rev = self.directions("directions", m)?;
        let Some(x0) = xs.first() else {
            return Err(self.err("it has no scan input"));
        };
        if x0.rank() < 2 {
            return Err(self.err(format!(
                "scan input 0 has shape {:?}; opset-8 Scan inputs are [batch, sequence, ...]",
                x0.dims()
            )));
        }
        let (batch, max_len) = (x0.dims()[0], x0.dims()[1]);
        for (what, t) in states
            .iter()
            .map(|s| ("state", s))
            .chain(xs.iter().map(|x| ("scan input", x)))
        {
            if t.rank() == 0
                || t.dims()[0] != batch
                || (what == "scan input" && t.dims().get(1) != Some(&max_len))
            {
                return Err(self.err(format!(
                    "a {what} has shape {:?}, scan input 0 {:?}: they share the batch axis 0 \
                     (and scan inputs the sequence axis 1)",
                    t.dims(),
                    x0.dims()
                )));
            }
        }
        let lens: Vec<usize> = match args.first().and_then(Option::as_ref) {
            None => vec![max_len; batch],
            Some(t) => {
                let v = self.candle(ints_of(t))?;
                if v.len() != batch || v.iter().any(|&l| l < 0 || l as usize > max_len) {
                    return Err(self.err(format!(
                        "sequence_lens {v:?} must give one length in 0..={max_len} per batch \
                         entry ({batch})"
                    )));
                }
                v.into_iter().map(|l| l as usize).collect()
            }
        };
        let total: u64 = lens.iter().map(|&l| l as u64).sum();
        self.limits.check(self.node, total, || {
            format!("its sequences have {total} steps")
        })?;
        let mut final_states: Vec<Vec<Tensor>> = vec![Vec::with_capacity(batch); n];
        let mut outs: Vec<Vec<Option<Tensor>>> = vec![Vec::with_capacity(batch); k];
        for (b, &len) in lens.iter().enumerate() {
            let st = states
                .iter()
                .map(|s| self.candle(s.get(b)))
                .collect::<Result<Vec<_>>>()?;
            let xb = xs
                .iter()
                .zip(&rev)
                .map(|(x, &r)| {
                    Ok((
                        self.candle(x.get(b).and_then(|x| x.narrow(0, 0, len)))?,
                        0,
                        r,
                    ))
                })
                .collect::<Result<Vec<ScanInput>>>()?;
            let (st, scans) = self.scan_steps(body, captured, st, &xb, len)?;
            for (j, s) in st.into_iter().enumerate() {
                final_states[j].push(s);
            }
            for (j, list) in scans.into_iter().enumerate() {
                outs[j].push(if list.is_empty() {
                    None
                } else {
                    Some(self.candle(Tensor::stack(&list, 0))?)
                });
            }
        }
        let mut result = Vec::with_capacity(n + k);
        for (j, per_batch) in final_states.into_iter().enumerate() {
            let first = per_batch
                .first()
                .ok_or_else(|| self.err("the batch is empty"))?;
            let mut shape = vec![batch];
            shape.extend_from_slice(first.dims());
            self.cx
                .fits("its final state", &shape, first.dtype())
                .map_err(|e| op_error(self.node, e))?;
            result.push(self.candle(Tensor::stack(&per_batch, 0)).map_err(|e| {
                self.err(format!("state {j} differs in shape across the batch: {e}"))
            })?);
        }
        for (j, per_batch) in outs.into_iter().enumerate() {
            let vi = &g.outputs[n + j];
            // One step's shape and type: from a batch entry that ran, else as declared.
            let (step, dtype) = match per_batch.iter().flatten().next() {
                Some(t) => (t.dims()[1..].to_vec(), t.dtype()),
                None => {
                    let e = self.empty_scan(vi, 0, 0)?;
                    (e.dims()[1..].to_vec(), e.dtype())
                }
            };
            let mut shape = vec![batch, max_len];
            shape.extend_from_slice(&step);
            self.cx
                .fits("its scan output", &shape, dtype)
                .map_err(|e| op_error(self.node, e))?;
            let dev = self.cx.device;
            let mut padded = Vec::with_capacity(batch);
            for (t, &len) in per_batch.into_iter().zip(&lens) {
                let mut pad_shape = vec![max_len - len];
                pad_shape.extend_from_slice(&step);
                let pad = self.candle(Tensor::zeros(pad_shape, dtype, dev))?;
                padded.push(match t {
                    Some(t) if len < max_len => self.candle(Tensor::cat(&[&t, &pad], 0))?,
                    Some(t) => t,
                    None => pad,
                });
            }
            result.push(self.candle(Tensor::stack(&padded, 0))?);
        }
        Ok(result)
    }
}

/// `t` as a scalar, or as a one-element vector when `rank1`.
fn scalar(t: candle_core::Result<Tensor>, rank1: bool) -> candle_core::Result<Tensor> {
    if rank1 {
        t?.reshape(1)
    } else {
        t
    }
}
