#!/usr/bin/env python3
"""Writes fixtures/bombs/: small files that claim (or expand to) far more memory than they hold.

Each is a real torch zip (records from `torch.save`) whose `data.pkl` is replaced by a
hand-made pickle, or a real `torch.save` of a stride-0 view. ferry must refuse each with an
error naming its memory budget, quickly and without allocating what the file claims
(issue 14, findings 4 and 5). The script checks each file with torch itself and prints what
torch does with it.

    .venv/bin/python scripts/make_bomb_fixtures.py           # writes fixtures/bombs/
    .venv/bin/python scripts/make_bomb_fixtures.py --check   # rebuild in a temp dir, compare
"""

import argparse
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from ferry_scripts import FIXED_ZIP_TIME, write_sums

ROOT = Path(__file__).resolve().parent.parent


def K(i):  # BININT1
    return b"K" + bytes([i])


def put(i):  # BINPUT
    return b"q" + bytes([i])


def get(i):  # BINGET
    return b"h" + bytes([i])


def unicode(s):  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def memo_list_bomb():
    """L0 = 200 ints; L(i) = [L(i-1)] * 200 by memo reference, 4 levels: 2 KB that a naive
    flattener expands to 200^4 lists of 200 scalars (3.2e11 values). No POP opcode, so torch's
    weights-only unpickler reads it too."""

    def lst(level):
        if level == 0:
            return b"](" + K(1) * 200 + b"e" + put(0)
        return b"](" + lst(level - 1) + get(level - 1) * 199 + b"e" + put(level)

    return b"\x80\x02}" + unicode("w") + lst(4) + b"s."


def long_keys_bomb():
    """Two 64 KiB keys; D(0) = {k1: 1}, D(i) = {k1: D(i-1), k2: D(i-1)}, 200 levels: 132 KB
    whose dotted names are up to 13 MB each, and 2^200 of them."""
    k1, k2 = "a" * 65536, "b" * 65536

    top = 200

    def d(i):  # memo: 0 = k1 (defined first, at the top), 1 = k2, 10 + i = D(i)
        first = (unicode(k1) + put(0)) if i == top else get(0)
        if i == 0:
            return b"}" + get(0) + K(1) + b"s" + put(10)
        second = (unicode(k2) + put(1)) if i == 1 else get(1)
        return b"}" + first + d(i - 1) + b"s" + second + get(9 + i) + b"s" + put(10 + i)

    return b"\x80\x02}" + unicode("w") + d(top) + b"s."


def wide_list_bomb():
    """L0 = 7,500 ints; the root list holds L0 7,500 times: 30 KB of pickle, 56M values when
    each reference becomes its own list of scalars."""
    l0 = b"](" + K(7) * 7500 + b"e" + put(0)
    return b"\x80\x02}" + unicode("w") + b"](" + l0 + get(0) * 7499 + b"e" + b"s."


def call_copy_bomb():
    """L = 20,000 ints; then `set(L)` called 20,000 times on the memoized argument tuple: 160 KB
    of pickle whose calls copy 4e8 values."""
    first = b"cbuiltins\nset\n" + put(1) + b"](" + K(3) * 20000 + b"e" + b"\x85" + put(0) + b"R"
    calls = first + (get(1) + get(0) + b"R") * 19999
    return b"\x80\x02}" + unicode("w") + b"](" + calls + b"e" + b"s."


def torch_zip(path, pickle_bytes):
    """A real torch zip whose data.pkl is `pickle_bytes` (other records kept)."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as zin:
        entries = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                data = pickle_bytes
            zi = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            zi.external_attr = 0o644 << 16
            zout.writestr(zi, data)


def build(out, quiet=False):
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else print
    for name, make in [
        ("memo_list_bomb", memo_list_bomb),
        ("long_keys_bomb", long_keys_bomb),
        ("wide_list_bomb", wide_list_bomb),
        ("call_copy_bomb", call_copy_bomb),
    ]:
        pk = make()
        p = out / f"{name}.pth"
        torch_zip(p, pk)
        # torch itself loads these: pickle keeps shared references shared (set() is a call
        # weights_only refuses, so that one is loaded with plain pickle semantics off).
        try:
            obj = torch.load(p, weights_only=True)
            what = f"torch.load(weights_only=True) loads it ({type(obj['w']).__name__})"
        except Exception as e:  # noqa: BLE001
            what = f"torch.load(weights_only=True) refuses it: {str(e).splitlines()[0][:80]}"
        say(f"{p.name}: pickle {len(pk)} bytes, file {p.stat().st_size} bytes; {what}")

    # A real torch.save of a stride-0 view: 4 bytes of storage, 16 GiB as a dense tensor.
    p = out / "expanded_view.pth"
    big = torch.ones(1).expand(65536, 65536)
    torch.save({"big": big, "small": torch.arange(4.0)}, p)
    back = torch.load(p, weights_only=True)
    assert back["big"].stride() == (0, 0) and back["big"].shape == (65536, 65536)
    say(f"{p.name}: {p.stat().st_size} bytes; `big` is [65536, 65536] float32, stride (0, 0), "
        f"{big.untyped_storage().nbytes()} bytes of storage")

    write_sums(out, {f.name: f.read_bytes() for f in out.glob("*.pth")})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "fixtures" / "bombs")
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare hashes")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), quiet=True)
            same = (Path(tmp) / "SHA256SUMS").read_text() == (args.out / "SHA256SUMS").read_text()
        print("fixtures/bombs: up to date" if same else "fixtures/bombs: stale; rerun the script")
        sys.exit(0 if same else 1)
    build(args.out)


if __name__ == "__main__":
    main()
