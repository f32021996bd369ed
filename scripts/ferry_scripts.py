"""What the scripts in scripts/ share: SHA-256 sums and the --check of a folder against its
SHA256SUMS (the make_*_fixtures.py scripts and make_udhr_corpus.py), byte-stable JSON, the
fixed date of rewritten zip records, a pinned hash seed, and the side-by-side benchmarks'
pieces (bench_*_peer.py: the error exit, the ferry subprocess that prints one JSON object, its
environment, timing, the machine description and the command line that reproduces a run).

Imported by those scripts (run as `python scripts/<name>.py`, so this folder is on `sys.path`);
not run on its own. Standard library only: every script can import it before torch or numpy.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ----------------------------------------------------------------------------- fixtures


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def read_sums(path):
    """A SHA256SUMS file (`sha256sum` format) as {relative path: hex digest}."""
    sums = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, rel = line.split("  ", 1)
        sums[rel] = digest
    return sums


def write_sums(out, files):
    """Writes OUT/SHA256SUMS for FILES ({relative path: bytes}), in path order; returns its
    text."""
    sums = "".join(f"{sha256(files[rel])}  {rel}\n" for rel in sorted(files))
    (out / "SHA256SUMS").write_text(sums, encoding="utf-8")
    return sums


def fixture_parser(doc, default_out):
    """The command line the make_* scripts share: the description (DOC's first line), --out DIR
    (default: DEFAULT_OUT) and --check."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and compare hashes; exit 1 on mismatch")
    return ap


def check_against_sums(out, regenerate, versions=None, what="fixtures", same_sums_file=False):
    """The --check of a folder OUT with a SHA256SUMS of every other file in it: REGENERATE(tmp)
    writes a fresh copy under the temporary folder tmp and returns its folder; then every
    recorded hash must equal the regenerated one and the committed file's, and OUT must hold no
    file SHA256SUMS leaves out (with SAME_SUMS_FILE, the two SHA256SUMS must also be
    byte-identical). Prints the verdict and returns the exit status, 0 or 1. VERSIONS() is
    called on failure: a note on the tool versions the bytes depend on, e.g.
    " (pyarrow 26.0.1; ...)"."""
    sums_path = out / "SHA256SUMS"
    if not sums_path.is_file():
        print(f"missing {sums_path}", file=sys.stderr)
        return 1
    expected = read_sums(sums_path)
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        regen = regenerate(Path(tmp))
        got = read_sums(regen / "SHA256SUMS")
        if same_sums_file and (regen / "SHA256SUMS").read_bytes() != sums_path.read_bytes():
            bad.append("SHA256SUMS differs from the regenerated one")
        for rel in sorted(set(expected) | set(got)):
            if expected.get(rel) != got.get(rel):
                bad.append(f"regenerated {rel}: {got.get(rel)} != recorded {expected.get(rel)}")
            path = out / rel
            actual = sha256(path.read_bytes()) if path.is_file() else None
            if actual != expected.get(rel):
                bad.append(f"committed {rel}: {actual} != recorded {expected.get(rel)}")
        present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        extra = sorted(present - set(expected) - {"SHA256SUMS"})
        if extra:
            bad.append(f"files not in SHA256SUMS: {extra}")
    if bad:
        print(f"CHECK FAILED{versions() if versions else ''}:", *bad, sep="\n  ",
              file=sys.stderr)
        return 1
    print(f"check OK: {len(expected)} files in {out} match the regenerated {what}")
    return 0


# ----------------------------------------------------------------------------- stable bytes

# The date of every record of a zip the fixture scripts rewrite (so the bytes do not depend on
# when they ran).
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def json_bytes(obj):
    """OBJ as the fixtures' JSON files hold it: indent 1, UTF-8 (not \\u escapes), a final
    newline."""
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def pin_hash_seed():
    """Re-executes this script with PYTHONHASHSEED=0 unless it already runs so: TorchScript and
    the dynamo exporter write some things in set order, which follows string hashing."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)


# ----------------------------------------------------------------------------- benchmarks


def die(msg):
    """`<script>: error: MSG` on stderr, exit status 2."""
    print(f"{Path(sys.argv[0]).stem}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def ferry_env(threads=None):
    """This environment without RAYON_* variables, for a ferry subprocess; with THREADS,
    RAYON_NUM_THREADS set to it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYON")}
    if threads is not None:
        env["RAYON_NUM_THREADS"] = str(threads)
    return env


def run_json(cmd, env, hint=""):
    """Runs CMD (a ferry binary) with ENV; returns the JSON object it printed on stdout (the last
    line that parses as one: log lines before it are tolerated) and the process's wall seconds.
    Dies, quoting the command and its output, when it fails or prints no JSON object (HINT is
    added to the message of a failed run)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as e:
        die(f"cannot run {shlex.join(cmd)}: {e}")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        die(f"`{shlex.join(cmd)}` exited with status {proc.returncode}"
            + (f":\n{tail}" if tail else " and printed nothing") + hint)
    out = proc.stdout.strip()
    result = None
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        for line in reversed(out.splitlines()):  # tolerate log lines before the JSON
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(result, dict):
        die(f"`{shlex.join(cmd)}` did not print a JSON object on stdout; it printed:\n"
            + (out[-2000:] or "(nothing)"))
    return result, wall


def require_positive(result, fields):
    """Dies unless ferry's JSON RESULT has every one of FIELDS, each a positive number."""
    missing = [k for k in fields if k not in result]
    if missing:
        die(f"ferry's JSON lacks {', '.join(missing)} (got {', '.join(sorted(result))})")
    for k in fields:
        v = result[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            die(f"ferry's JSON field {k!r} is {v!r}, expected a positive number")


def time_ms(fn, runs, warmup=0):
    """Calls FN() WARMUP times untimed, then RUNS times; the timed calls' milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def load_text(before, after):
    """The 1-minute load averages around a run, as the tables' notes quote them."""
    return (f"load average {before[0]:.2f} before, {after[0]:.2f} after"
            if before and after else "load average unknown")


def fmt_rate(x):
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"


def machine():
    """The machine, for a run's JSON record."""
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def machine_line():
    """`Machine: <cpu>, <n> CPUs, <platform>`: how the notes under a table begin."""
    return f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}"


def report_header(script):
    """Prints the command line that reproduces this run of scripts/SCRIPT as a Markdown code
    block (docs/benchmarks.md quotes it); returns it and the UTC date."""
    cmdline = shlex.join([".venv/bin/python", f"scripts/{script}"] + sys.argv[1:])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print("```sh")
    print(cmdline)
    print("```")
    print()
    return cmdline, now
