//! ONNX's own backend node tests (`onnx.backend.test.case.node`) on ferry's executor.
//!
//! The cases are written by `scripts/make_onnx_node_tests.py` (from the pinned onnx) to
//! `$FERRY_ONNX_NODE_TESTS`, else `target/onnx-node-tests`: per case a `model.onnx` and
//! `test_data_set_N/{input,output}_K.pb` (serialized `TensorProto`s), and a `MANIFEST.json`
//! written last. Without them the test is skipped; with `FERRY_REQUIRE_PYTHON=1` (CI) it fails.
//!
//! Every case is read, loaded by [`Executor::new`] and run on the CPU, and each output is
//! compared as ONNX's own runner does: same shape, same kind of element type (float, integer,
//! bool; ferry holds bool as u8, int8 as i16, uint16 as i32 and uint64 as i64), values within
//! `|got - want| <= atol + rtol * |want|` (rtol 1e-3, atol 1e-7, NaN equal to NaN), exact for
//! integers and bools. A case passes, is unsupported (reading, loading or running it is an
//! error), gives a wrong result, or panics.
//!
//! `tests/onnx_backend_unsupported.txt` lists, sorted, every case ferry does not pass yet
//! (`case<TAB>reason`). The test fails when a case panics, when a case that is not on the list
//! does not pass (a regression, or a new case), when a case on the list passes now (remove it
//! from the list: coverage only grows), and when the list names a case the suite no longer has.
//! `FERRY_BLESS=1 cargo test -p ferry-graph --test onnx_backend` rewrites the list from this
//! run (panics and wrong results are listed too, as `PANIC: ...` and `WRONG: ...`, and a panic
//! still fails the test). `FERRY_ONNX_TRACE=1` prints each case's name before it runs.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType as C, Device, Tensor};
use ferry_graph::exec::is_supported;
use ferry_graph::ir::entry_to_candle;
use ferry_graph::onnx::{read_model, read_tensor};
use ferry_graph::{Error, Executor, OnnxModel};
use ferry_io::DType;

const SCRIPT: &str = "scripts/make_onnx_node_tests.py";
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;
/// Longest reason kept in the list.
const REASON_CHARS: usize = 150;
/// A case running longer than this fails the test (a hang must not stall CI).
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Pass,
    Unsupported(String),
    Wrong(String),
    Panic(String),
}

fn list_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx_backend_unsupported.txt")
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == value)
}

/// The suite's folder, `None` (skipped) when it or its MANIFEST.json is missing; with
/// `FERRY_REQUIRE_PYTHON=1` that is a failure naming the script.
fn suite() -> Option<PathBuf> {
    let dir = std::env::var_os("FERRY_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| ferry_testkit::repo_root().join("target/onnx-node-tests"));
    if dir.join("MANIFEST.json").is_file() {
        return Some(dir);
    }
    let what = if dir.is_dir() {
        format!(
            "the ONNX node tests at {} are incomplete (no MANIFEST.json: an interrupted run?)",
            dir.display()
        )
    } else {
        format!("the ONNX node tests are not at {}", dir.display())
    };
    let fix = format!(".venv/bin/python {SCRIPT} {}", dir.display());
    assert!(
        !env_is("FERRY_REQUIRE_PYTHON", "1"),
        "FERRY_REQUIRE_PYTHON=1 but {what}: run {fix}"
    );
    eprintln!("skipped: {what} (run {fix}, or set FERRY_ONNX_NODE_TESTS)");
    None
}

/// One line, no tabs, no machine-specific paths, no backtrace (candle appends one to its
/// errors when `RUST_BACKTRACE` is set), at most [`REASON_CHARS`] characters.
fn tidy(msg: &str, suite: &Path) -> String {
    let root = format!("{}/", suite.display());
    let msg = match msg.find(&root) {
        // `<suite>/<case>/model.onnx: ` inside a message about the model.
        Some(at) => match msg[at + root.len()..].find("/model.onnx: ") {
            Some(end) => {
                let cut = at + root.len() + end + "/model.onnx: ".len();
                format!("{}{}", &msg[..at], &msg[cut..])
            }
            None => msg.to_string(),
        },
        None => msg.to_string(),
    };
    let msg: Vec<&str> = msg
        .lines()
        .take_while(|l| {
            let l = l.trim_start();
            let frame = l
                .split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            !frame && l != "stack backtrace:"
        })
        .collect();
    let one = msg.join(" ").replace(&root, "").replace(['\t', '\r'], " ");
    let mut s = one.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > REASON_CHARS {
        s = s.chars().take(REASON_CHARS - 3).collect::<String>() + "...";
    }
    s
}

/// An error without the file it names (the case's own).
fn short(e: &Error) -> String {
    match e {
        Error::File(f) => f.problem.to_string(),
        Error::Io(ferry_io::Error::Tensor { tensor, msg, .. }) => format!("`{tensor}`: {msg}"),
        other => other.to_string(),
    }
}

/// An error as `Op: what went wrong` where a node is involved.
fn error_reason(e: &Error, model: &OnnxModel) -> String {
    match e {
        Error::Node { op, msg, .. } => format!("{op}: {msg}"),
        Error::NodeOverBudget { op, exceeded, .. } => format!("{op}: {exceeded}"),
        Error::Unsupported(_) => {
            let mut ops: Vec<String> = Vec::new();
            // Inside If/Loop/Scan bodies too.
            for n in model
                .graph
                .all_nodes()
                .into_iter()
                .filter(|n| !is_supported(n))
            {
                let op = n.qualified_op();
                if !ops.contains(&op) {
                    ops.push(op);
                }
            }
            format!("unsupported op {}", ops.join(", "))
        }
        other => other.to_string(),
    }
}

/// `test_data_set_N` folders in order of N.
fn data_sets(case: &Path) -> Vec<PathBuf> {
    let mut sets: Vec<(usize, PathBuf)> = std::fs::read_dir(case)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e
                        .file_name()
                        .to_str()?
                        .strip_prefix("test_data_set_")?
                        .parse()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    sets.into_iter().map(|(_, p)| p).collect()
}

/// `{what}_0.pb`, `{what}_1.pb`, ... in `set`.
fn pbs(set: &Path, what: &str) -> Vec<PathBuf> {
    (0..)
        .map(|k| set.join(format!("{what}_{k}.pb")))
        .take_while(|p| p.is_file())
        .collect()
}

fn run_case(case: &Path, suite: &Path) -> Outcome {
    let tidy = |m: String| tidy(&m, suite);
    let model = match read_model(&case.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => return Outcome::Unsupported(tidy(format!("read: {}", short(&e)))),
    };
    // Errors that name no node name the op of a one-node graph.
    let op = match model.graph.nodes.as_slice() {
        [n] => format!("{}: ", n.qualified_op()),
        _ => String::new(),
    };
    let exec = match Executor::new(&model, &Device::Cpu) {
        Ok(x) => x,
        Err(e) => return Outcome::Unsupported(tidy(error_reason(&e, &model))),
    };
    let mut other_type = false;
    let sets = data_sets(case);
    if sets.is_empty() {
        return Outcome::Wrong(format!("{}: no test_data_set_N", case.display()));
    }
    for set in sets {
        let input_files = pbs(&set, "input");
        if input_files.len() != model.graph.inputs.len() {
            return Outcome::Unsupported(tidy(format!(
                "{} input files for the graph's {} inputs",
                input_files.len(),
                model.graph.inputs.len()
            )));
        }
        let mut inputs = HashMap::new();
        for (k, (file, vi)) in input_files.iter().zip(&model.graph.inputs).enumerate() {
            match read_tensor(file).and_then(|e| entry_to_candle(&e, &Device::Cpu)) {
                Ok(t) => inputs.insert(vi.name.clone(), t),
                Err(e) => {
                    return Outcome::Unsupported(tidy(format!("{op}input {k} {}", short(&e))))
                }
            };
        }
        let got = match exec.run(&inputs) {
            Ok(g) => g,
            Err(e) => return Outcome::Unsupported(tidy(error_reason(&e, &model))),
        };
        let output_files = pbs(&set, "output");
        if output_files.len() != got.len() {
            return Outcome::Wrong(format!(
                "{} outputs for {} expected",
                got.len(),
                output_files.len()
            ));
        }
        for (k, (file, (name, got))) in output_files.iter().zip(&got).enumerate() {
            let want = match read_tensor(file) {
                Ok(w) => w,
                Err(e) => {
                    return Outcome::Unsupported(tidy(format!(
                        "{op}expected output {k} {}",
                        short(&e)
                    )))
                }
            };
            match compare(&want, got) {
                Ok(same_type) => other_type |= !same_type,
                Err(e) => return Outcome::Wrong(tidy(format!("output `{name}`: {e}"))),
            }
        }
    }
    if other_type {
        if let Some(name) = case.file_name() {
            let name = name.to_string_lossy().into_owned();
            PASSED_AS_OTHER_TYPE.lock().unwrap().insert(name);
        }
    }
    Outcome::Pass
}

/// The comparison of ONNX's backend test runner (`assert_similar_outputs`), with element
/// types compared by kind: ferry holds several ONNX types in wider candle ones.
/// `Ok(false)` when the values match but `got`'s candle type is not the one ferry holds the
/// expected type in (f32 for float16, say).
fn compare(want: &ferry_io::TensorEntry, got: &Tensor) -> Result<bool, String> {
    let w = entry_to_candle(want, &Device::Cpu).map_err(|e| format!("expected value: {e}"))?;
    if w.dims() != got.dims() {
        return Err(format!("shape {:?}, expected {:?}", got.dims(), w.dims()));
    }
    let bool_ok = want.dtype != DType::Bool || got.dtype() == C::U8;
    if w.dtype().is_float() != got.dtype().is_float() || !bool_ok {
        return Err(format!(
            "element type {:?}, expected {} (held as {:?})",
            got.dtype(),
            want.dtype,
            w.dtype()
        ));
    }
    let cmp = |e: candle_core::Error| format!("comparing: {e}");
    if w.dtype().is_float() {
        let a = floats(got).map_err(cmp)?;
        let b = floats(&w).map_err(cmp)?;
        let close = |a: f64, b: f64| {
            a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= ATOL + RTOL * b.abs()
        };
        let bad: Vec<usize> = (0..a.len()).filter(|&i| !close(a[i], b[i])).collect();
        if let Some(&i) = bad.first() {
            let max = bad.iter().map(|&i| (a[i] - b[i]).abs()).fold(0.0, f64::max);
            return Err(format!(
                "{} of {} values differ (max abs diff {max:.3e}); first at {i}: {} vs {} expected{}",
                bad.len(),
                a.len(),
                a[i],
                b[i],
                held_as(&w, got)
            ));
        }
    } else {
        let a = got
            .to_dtype(C::I64)
            .and_then(|t| t.flatten_all()?.to_vec1::<i64>())
            .map_err(cmp)?;
        let b = w
            .to_dtype(C::I64)
            .and_then(|t| t.flatten_all()?.to_vec1::<i64>())
            .map_err(cmp)?;
        let bad: Vec<usize> = (0..a.len())
            .filter(|&i| a[i] != b[i] || (want.dtype == DType::Bool && a[i] > 1))
            .collect();
        if let Some(&i) = bad.first() {
            return Err(format!(
                "{} of {} values differ; first at {i}: {} vs {} expected{}",
                bad.len(),
                a.len(),
                a[i],
                b[i],
                held_as(&w, got)
            ));
        }
    }
    Ok(w.dtype() == got.dtype())
}

/// `" (as F32, expected F8E4M3)"` when `got`'s candle type is not the expected value's.
fn held_as(want: &Tensor, got: &Tensor) -> String {
    if want.dtype() == got.dtype() {
        String::new()
    } else {
        format!(" (as {:?}, expected {:?})", got.dtype(), want.dtype())
    }
}

/// A float tensor's values as f64. F8E4M3 goes through f32: candle's direct F8E4M3 -> F64
/// conversion never returns (candle-core 0.11.1 with float8 0.7.0).
fn floats(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    let t = if t.dtype() == C::F8E4M3 {
        t.to_dtype(C::F32)?
    } else {
        t.clone()
    };
    t.to_dtype(C::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Passing cases with an output of another element type of the same kind.
static PASSED_AS_OTHER_TYPE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

thread_local! {
    /// Where the case being run on this thread panicked (set by the panic hook).
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn run_guarded(case: &Path, suite: &Path) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run_case(case, suite))) {
        Ok(o) => o,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
            Outcome::Panic(tidy(&format!("{msg}{at}"), suite))
        }
    }
}

/// Runs every case on worker threads (one per core, at most 4), each outcome with its time;
/// `Err(case)` when a case runs past [`CASE_TIMEOUT`] (its worker is left behind).
fn run_all(
    suite: &Path,
    names: &[String],
) -> Result<BTreeMap<String, (Outcome, Duration)>, String> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let trace = env_is("FERRY_ONNX_TRACE", "1");
    let next = Arc::new(AtomicUsize::new(0));
    let names: Arc<Vec<String>> = Arc::new(names.to_vec());
    // (case, None) when it starts, (case, Some(outcome and time)) when it is done.
    let (tx, rx) = mpsc::channel::<(usize, Option<(Outcome, Duration)>)>();
    for _ in 0..workers {
        let (next, names, tx) = (next.clone(), names.clone(), tx.clone());
        let suite = suite.to_path_buf();
        std::thread::spawn(move || loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(name) = names.get(i) else { break };
            if trace {
                let _ = writeln!(std::io::stderr(), "case {name}");
            }
            if tx.send((i, None)).is_err() {
                break;
            }
            let t = Instant::now();
            let o = run_guarded(&suite.join(name), &suite);
            if tx.send((i, Some((o, t.elapsed())))).is_err() {
                break;
            }
        });
    }
    drop(tx);
    let mut running: HashMap<usize, Instant> = HashMap::new();
    let mut results = BTreeMap::new();
    while results.len() < names.len() {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((i, None)) => {
                running.insert(i, Instant::now());
            }
            Ok((i, Some(r))) => {
                running.remove(&i);
                results.insert(names[i].clone(), r);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some((&i, _)) = running.iter().find(|(_, t)| t.elapsed() > CASE_TIMEOUT) {
            return Err(names[i].clone());
        }
    }
    assert_eq!(results.len(), names.len(), "a worker thread died");
    Ok(results)
}

/// The committed list: the onnx version in its header, and case -> reason. Blank lines and
/// `#` comments are skipped.
fn read_list(path: &Path) -> (Option<String>, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut onnx = None;
    let mut list = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(rest) = comment.split_once("(onnx ") {
                onnx = onnx.or(rest.1.split_once(')').map(|v| v.0.to_string()));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (name, reason) = line.split_once('\t').unwrap_or((line, ""));
        let prev = list.insert(name.trim().to_string(), reason.to_string());
        assert!(
            prev.is_none(),
            "{}:{}: `{name}` is listed twice",
            path.display(),
            i + 1
        );
    }
    (onnx, list)
}

fn write_list(path: &Path, onnx: &str, results: &BTreeMap<String, Outcome>) {
    let mut out = format!(
        "# ONNX backend node test cases (onnx {onnx}) that ferry's executor does not pass yet:\n\
         # case<TAB>reason, sorted. Remove a case once it passes. Regenerate with\n\
         # FERRY_BLESS=1 cargo test -p ferry-graph --test onnx_backend (see tests/onnx_backend.rs).\n"
    );
    for (name, o) in results {
        let reason = match o {
            Outcome::Pass => continue,
            Outcome::Unsupported(r) => r.clone(),
            Outcome::Wrong(r) => format!("WRONG: {r}"),
            Outcome::Panic(r) => format!("PANIC: {r}"),
        };
        out.push_str(&format!("{name}\t{reason}\n"));
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn onnx_backend_node_tests() {
    let Some(suite) = suite() else { return };
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(suite.join("MANIFEST.json")).expect("read MANIFEST.json"),
    )
    .expect("MANIFEST.json is JSON");
    let onnx = manifest["onnx_version"].as_str().unwrap_or("?").to_string();
    let names: Vec<String> = manifest["cases"]
        .as_array()
        .expect("MANIFEST.json lists cases")
        .iter()
        .map(|c| c["name"].as_str().expect("case name").to_string())
        .collect();

    // Panics are caught and reported per case: keep the default hook from printing each one.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        // Inside a dependency, from the crate's folder on (not this machine's registry path).
        let at = info
            .location()
            .map(|l| {
                let f = l.file();
                let f = match f.find("/registry/src/") {
                    Some(i) => f[i + "/registry/src/".len()..]
                        .split_once('/')
                        .map_or(f, |(_, rest)| rest),
                    None => f,
                };
                format!(" at {f}:{}", l.line())
            })
            .unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
    }));
    let start = Instant::now();
    let timed = run_all(&suite, &names);
    let elapsed = start.elapsed();
    std::panic::set_hook(default_hook);
    let timed = timed.unwrap_or_else(|case| {
        panic!(
            "case {case} has run for over {} s: a hang (FERRY_ONNX_TRACE=1 prints each case)",
            CASE_TIMEOUT.as_secs()
        )
    });
    let mut slowest: Vec<(Duration, &String)> = timed.iter().map(|(n, (_, d))| (*d, n)).collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(d, n)| format!("{n} {:.0} ms", d.as_secs_f64() * 1e3))
        .collect();
    let results: BTreeMap<String, Outcome> = timed
        .iter()
        .map(|(n, (o, _))| (n.clone(), o.clone()))
        .collect();

    let count = |f: fn(&Outcome) -> bool| results.values().filter(|o| f(o)).count();
    let passed = count(|o| matches!(o, Outcome::Pass));
    let unsupported = count(|o| matches!(o, Outcome::Unsupported(_)));
    let wrong = count(|o| matches!(o, Outcome::Wrong(_)));
    let panics = count(|o| matches!(o, Outcome::Panic(_)));
    let n = results.len();
    // Straight to stderr, past the test harness's capture: CI logs show it on success too.
    let _ = writeln!(
        std::io::stderr(),
        "onnx backend node tests: {passed} passed of {n} ({:.1}%), {unsupported} unsupported, \
         {wrong} wrong, {panics} panics (onnx {onnx}; {:.1} s; slowest: {})",
        100.0 * passed as f64 / n.max(1) as f64,
        elapsed.as_secs_f64(),
        slowest.join(", ")
    );
    let other = PASSED_AS_OTHER_TYPE.lock().unwrap().clone();
    if !other.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "onnx backend node tests: {} of the passing cases give an output of another element              type of the same kind (compared by kind, as ferry holds int8 as i16): {}{}",
            other.len(),
            other.iter().take(8).cloned().collect::<Vec<_>>().join(", "),
            if other.len() > 8 { ", ..." } else { "" }
        );
    }

    let path = list_path();
    if env_is("FERRY_BLESS", "1") {
        write_list(&path, &onnx, &results);
        eprintln!("FERRY_BLESS=1: wrote {}", path.display());
    }
    let (list_onnx, list) = read_list(&path);

    let mut problems: Vec<String> = Vec::new();
    let mut section = |title: String, lines: Vec<String>| {
        if !lines.is_empty() {
            problems.push(format!(
                "{} {title}:\n  {}",
                lines.len(),
                lines.join("\n  ")
            ));
        }
    };
    let listed_not = |f: fn(&Outcome) -> Option<&String>| -> Vec<String> {
        results
            .iter()
            .filter(|(n, _)| !list.contains_key(*n))
            .filter_map(|(n, o)| f(o).map(|m| format!("{n}: {m}")))
            .collect()
    };
    section(
        "case(s) panic (a panic is a bug: what ferry cannot run must be an error)".into(),
        results
            .iter()
            .filter_map(|(n, o)| match o {
                Outcome::Panic(m) => Some(format!("{n}: {m}")),
                _ => None,
            })
            .collect(),
    );
    section(
        "case(s) give wrong results and are not on the list".into(),
        listed_not(|o| match o {
            Outcome::Wrong(m) => Some(m),
            _ => None,
        }),
    );
    section(
        "case(s) fail and are not on the list (they passed before, or are new in the suite)".into(),
        listed_not(|o| match o {
            Outcome::Unsupported(m) => Some(m),
            _ => None,
        }),
    );
    section(
        "case(s) on the list pass now: remove it from the list (coverage only grows)".into(),
        list.keys()
            .filter(|n| results.get(*n) == Some(&Outcome::Pass))
            .cloned()
            .collect(),
    );
    section(
        format!("case(s) on the list are not in the suite (onnx {onnx}): remove them"),
        list.keys()
            .filter(|n| !results.contains_key(*n))
            .cloned()
            .collect(),
    );
    let version_note = match list_onnx {
        Some(v) if v != onnx => format!(
            "\n\nThe list was made with onnx {v}, the suite with onnx {onnx}: regenerate the \
             suite with the pinned onnx ({SCRIPT}), or bless the list for the new one."
        ),
        _ => String::new(),
    };
    assert!(
        problems.is_empty(),
        "ONNX backend node tests against {}:\n{}{version_note}\n\nTo take this run as the new \
         list (after fixing any panic): FERRY_BLESS=1 cargo test -p ferry-graph --test onnx_backend",
        path.display(),
        problems.join("\n"),
    );
}
