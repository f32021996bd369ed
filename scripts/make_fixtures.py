#!/usr/bin/env python3
"""Make ferry's test fixtures with the real tools (PyTorch, safetensors, gguf-py, NumPy).

Usage:
    .venv/bin/python scripts/make_fixtures.py            # (re)write fixtures/
    .venv/bin/python scripts/make_fixtures.py --out DIR  # write elsewhere (e.g. to compare)
    .venv/bin/python scripts/make_fixtures.py --check    # write to a temp dir and compare
                                                         # every file with fixtures/

Everything is seeded; see fixtures/README.md for which files are byte-identical across runs
(all but fixtures/pytorch/legacy.pth, whose storage keys are memory addresses) and what each
file is for. After writing, every output is loaded back with its own tool and checked.

Versions used for the committed fixtures: scripts/requirements-fixtures.txt.
"""
import argparse
import collections
import hashlib
import json
import math
import os
import pickle
import pickletools
import shutil
import struct
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import gguf
import safetensors
import safetensors.torch
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from ferry_scripts import FIXED_ZIP_TIME, pin_hash_seed

REPO = Path(__file__).resolve().parent.parent
PWN_CMD = "echo pwned > /tmp/ferry_pwned"
# Files the tools do not write byte-identically run to run (see fixtures/README.md):
#  legacy.pth: legacy torch.save names storages by memory address (str(storage._cdata));
#  single.safetensors: safetensors keeps __metadata__ in a Rust HashMap, so its two keys come
#  out in either order.
NOT_REPRODUCIBLE = ["pytorch/legacy.pth", "safetensors/single.safetensors"]

warnings_filter = __import__("warnings")
warnings_filter.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
warnings_filter.filterwarnings("ignore", message="Detected pickle protocol 4")


def tool_versions():
    import importlib.metadata as md

    return {
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "gguf": md.version("gguf"),
        "python": "%d.%d.%d" % sys.version_info[:3],
    }


def seed(n):
    torch.manual_seed(n)
    np.random.seed(n)


# --------------------------------------------------------------------------------------------
# reference files: every tensor "as torch sees it" after .contiguous(), flattened dotted names
# --------------------------------------------------------------------------------------------

NUMPY_LACKS = {torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2}


def torch_dtype_name(dt):
    return str(dt).replace("torch.", "")


def flatten(obj, prefix=""):
    """Yield (dotted_name, leaf) for nested dicts / lists / tuples; leaves are tensors or scalars."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], obj


def to_numpy(t):
    """A contiguous NumPy copy of a tensor; dtypes NumPy lacks become float32 (exact)."""
    t = t.detach().contiguous()
    if t.dtype in NUMPY_LACKS:
        return t.to(torch.float32).numpy().copy(), "float32"
    a = t.numpy().copy()
    return a, str(a.dtype)


def json_scalar(v):
    if isinstance(v, float) and not math.isfinite(v):
        return {"type": "float", "value": repr(v)}  # strict JSON has no nan/inf
    return {"type": type(v).__name__, "value": v}


def write_reference(obj, out_base, source_name, loader, extra=None):
    """Write <out_base>.reference.npz and <out_base>.reference.json for a loaded object."""
    arrays = {}
    tensors = collections.OrderedDict()
    scalars = collections.OrderedDict()
    by_storage = collections.OrderedDict()
    for name, leaf in flatten(obj):
        if isinstance(leaf, torch.Tensor):
            a, npz_dtype = to_numpy(leaf)
            arrays[name] = a
            st = leaf.untyped_storage()
            info = {
                "dtype": torch_dtype_name(leaf.dtype),
                "shape": list(leaf.shape),
                "stride": list(leaf.stride()),
                "storage_offset": leaf.storage_offset(),
                "storage_nbytes": st.nbytes(),
                "contiguous": leaf.is_contiguous(),
                "npz_dtype": npz_dtype,
            }
            if npz_dtype != torch_dtype_name(leaf.dtype):
                info["note"] = f"{info['dtype']} stored in the npz as float32 (exact widening)"
            tensors[name] = info
            if st.nbytes() > 0:
                by_storage.setdefault(st.data_ptr(), []).append(name)
        else:
            scalars[name] = json_scalar(leaf)
    shared = [names for names in by_storage.values() if len(names) > 1]
    np.savez(str(out_base) + ".reference.npz", **arrays) if arrays else None
    ref = {
        "source": source_name,
        "loaded_with": loader,
        "made_by": tool_versions(),
        "top_level_type": type(obj).__name__,
        "tensors": tensors,
        "scalars": scalars,
        "shared_storage": shared,
    }
    if extra:
        ref.update(extra)
    Path(str(out_base) + ".reference.json").write_text(json.dumps(ref, indent=1) + "\n")




# --------------------------------------------------------------------------------------------
# PyTorch pickle checkpoints
# --------------------------------------------------------------------------------------------


def all_dtypes_dict():
    f32 = torch.tensor([[0.0, -1.5, 3.4028234663852886e38, -3.4028234663852886e38, 1.1754943508222875e-38],
                        [1.401298464324817e-45, float("nan"), float("inf"), float("-inf"), -0.0]],
                       dtype=torch.float32)
    f64 = torch.tensor([0.0, -1.5, 1.7976931348623157e308, -1.7976931348623157e308, 2.2250738585072014e-308,
                        5e-324, float("nan"), float("inf"), float("-inf"), -0.0, 1 / 3], dtype=torch.float64)
    f16 = torch.tensor([[0.0, -1.5, 65504.0, -65504.0, 6.103515625e-05],
                        [5.960464477539063e-08, float("nan"), float("inf"), float("-inf"), -0.0]],
                       dtype=torch.float16)
    bf16 = torch.tensor([0.0, -1.5, 3.3895313892515355e38, -3.3895313892515355e38, 1.1754943508222875e-38,
                         float("nan"), float("inf"), float("-inf"), -0.0, 1 / 3], dtype=torch.bfloat16)
    d = collections.OrderedDict()
    d["float32"] = f32
    d["float64"] = f64
    d["float16"] = f16
    d["bfloat16"] = bf16
    d["int64"] = torch.tensor([0, -1, 2**63 - 1, -(2**63), 123456789012345], dtype=torch.int64)
    d["int32"] = torch.tensor([[0, -1, 2**31 - 1], [-(2**31), 42, 7]], dtype=torch.int32)
    d["int16"] = torch.tensor([0, -1, 32767, -32768, 7], dtype=torch.int16)
    d["int8"] = torch.tensor([0, -1, 127, -128, 5], dtype=torch.int8)
    d["uint8"] = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8)
    d["bool"] = torch.tensor([[True, False, True], [True, False, False]], dtype=torch.bool)
    d["float8_e4m3fn"] = torch.tensor([0.0, -1.5, 448.0, -448.0, 0.001953125, float("nan")]).to(torch.float8_e4m3fn)
    # "shell" unsigned dtypes (torch >= 2.3): construct with torch.tensor (arange is not implemented).
    for name, dt, vals in [("uint16", "uint16", [0, 1, 32768, 65535]),
                           ("uint32", "uint32", [0, 1, 2**31, 2**32 - 1]),
                           ("uint64", "uint64", [0, 1, 2**63, 2**64 - 1])]:
        try:
            d[name] = torch.tensor(vals, dtype=getattr(torch, dt))
        except Exception as e:  # recorded in the reference json
            print(f"  note: cannot build {dt}: {e}")
    return d


def small_state_dict():
    seed(1)
    m = nn.Sequential(collections.OrderedDict([
        ("fc1", nn.Linear(4, 8)), ("act", nn.ReLU()), ("norm", nn.LayerNorm(8)), ("fc2", nn.Linear(8, 3))]))
    return m.state_dict()


class TiedLM(nn.Module):
    def __init__(self, vocab=16, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.embed.weight  # tied: same Parameter, same storage

    def forward(self, ids):
        return self.lm_head(self.norm(self.embed(ids)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def make_pytorch(out):
    d = out / "pytorch"
    d.mkdir(parents=True, exist_ok=True)
    notes = {}

    # all_dtypes.pth
    seed(0)
    sd = all_dtypes_dict()
    torch.save(sd, d / "all_dtypes.pth")
    notes["all_dtypes"] = {"unsigned_saved": [k for k in ("uint16", "uint32", "uint64") if k in sd]}

    # views.pth
    m = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    w = torch.arange(10, dtype=torch.float32) * 10
    iv = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    views = collections.OrderedDict()
    views["matrix"] = m                                  # the base itself (shares storage below)
    views["transposed"] = m.t()                          # stride (1, 4)
    views["rows_2_5"] = m[2:5]                           # storage_offset 8
    views["cols_step2"] = m[:, ::2]                      # stride (4, 2)
    views["only_view_offset"] = w[3:7]                   # base not saved; storage (10 elems) is
    views["expanded"] = torch.arange(4, dtype=torch.float32).reshape(1, 4).expand(3, 4)  # stride 0
    views["int_block"] = iv[1:, 1:]                      # offset 5, non-contiguous
    views["scalar"] = torch.tensor(3.5)                  # 0-dim
    views["empty"] = torch.empty(0, 3)                   # numel 0
    torch.save(views, d / "views.pth")

    # tied.pth
    seed(2)
    lm = TiedLM()
    assert lm.lm_head.weight is lm.embed.weight
    torch.save(lm.state_dict(), d / "tied.pth")

    # nested.pth: a training checkpoint
    seed(3)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.001)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    ckpt = {
        "epoch": 3,
        "step": 1200,
        "lr": 0.001,
        "name": "run-a",
        "model": collections.OrderedDict(net.state_dict()),
        "optimizer": opt.state_dict(),
        "history": [0.9, 0.7],
        "flag": True,
        "none": None,
    }
    torch.save(ckpt, d / "nested.pth")

    # proto2 / proto4 (torch's default pickle protocol is 2)
    sd = small_state_dict()
    torch.save(sd, d / "proto2.pth", pickle_protocol=2)
    torch.save(sd, d / "proto4.pth", pickle_protocol=4)

    # legacy (pre-1.6, non-zip) with a view with storage offset and two tensors sharing storage
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    legacy = collections.OrderedDict()
    legacy["weight"] = base
    legacy["weight_rows_1_3"] = base[1:3]       # offset 4, shares base's storage
    legacy["weight_t"] = base.t()               # shares base's storage, transposed
    legacy["bias"] = torch.tensor([0.5, -0.5, 2.0], dtype=torch.float64)
    legacy["tail_view"] = torch.arange(8, dtype=torch.int32)[5:]   # only the view; offset 5
    torch.save(legacy, d / "legacy.pth", _use_new_zipfile_serialization=False)

    # deflated.pth: a torch zip re-packed with DEFLATE (same entry names and order)
    tmp = d / "deflated.pth"
    torch.save(small_state_dict(), tmp)
    with zipfile.ZipFile(tmp) as zin:
        entries = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(tmp, "w") as zout:
        for name, data in entries:
            zi = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            zout.writestr(zi, data, compresslevel=9)

    return notes


# --------------------------------------------------------------------------------------------
# hostile pickles (never loaded with plain pickle here)
# --------------------------------------------------------------------------------------------


def _binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def hostile_payload_proto2_dict():
    """{'weight': os.system(PWN_CMD)} as protocol-2 opcodes (GLOBAL 'os system' + REDUCE)."""
    return (b"\x80\x02" + b"}" + _binunicode("weight") + b"cos\nsystem\n" + _binunicode(PWN_CMD)
            + b"\x85" + b"R" + b"s" + b".")


def hostile_payload_proto2():
    return b"\x80\x02" + b"cos\nsystem\n" + _binunicode(PWN_CMD) + b"\x85" + b"R" + b"."


def hostile_payload_proto0():
    return b"cos\nsystem\n(S'" + PWN_CMD.encode() + b"'\ntR."


def hostile_payload_proto4():
    cmd = PWN_CMD.encode()
    return (b"\x80\x04" + b"\x8c\x02os" + b"\x8c\x06system" + b"\x93"
            + b"\x8c" + bytes([len(cmd)]) + cmd + b"\x85" + b"R" + b".")


def legacy_header():
    """The three pickles that open a legacy (non-zip) torch.save file."""
    magic = 0x1950A86A20F9469CFC6C
    sys_info = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    return pickle.dumps(magic, protocol=2) + pickle.dumps(1001, protocol=2) + pickle.dumps(sys_info, protocol=2)


class _RecordingUnpickler(pickle.Unpickler):
    """Resolves every global to a harmless recorder: proves what a plain load would call."""

    def __init__(self, f):
        super().__init__(f)
        self.calls = []

    def find_class(self, module, name):
        def rec(*args):
            self.calls.append((f"{module}.{name}", args))
            return f"<{module}.{name} not called>"

        return rec


def what_would_run(payload):
    import io

    u = _RecordingUnpickler(io.BytesIO(payload))
    u.load()
    return u.calls


def make_hostile(out):
    h = out / "hostile"
    h.mkdir(parents=True, exist_ok=True)
    (h / "os_system.pkl").write_bytes(hostile_payload_proto2())
    (h / "os_system_proto0.pkl").write_bytes(hostile_payload_proto0())
    (h / "os_system_proto4.pkl").write_bytes(hostile_payload_proto4())
    (h / "legacy_os_system.pth").write_bytes(legacy_header() + hostile_payload_proto2_dict())

    # A real torch zip whose data.pkl is replaced by the payload (other records kept).
    p = out / "pytorch" / "hostile_os_system.pth"
    torch.save({"weight": torch.zeros(2)}, p)
    with zipfile.ZipFile(p) as zin:
        entries = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(p, "w") as zout:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                data = hostile_payload_proto2_dict()
            zi = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            zi.external_attr = 0o644 << 16
            zout.writestr(zi, data)  # ZIP_STORED, like torch


# --------------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x + self.body(x))


class ScriptMLP(nn.Module):
    def __init__(self, d_in=6, d=8, d_out=3):
        super().__init__()
        self.register_buffer("scale", torch.linspace(0.5, 1.5, d_in))
        self.proj = nn.Linear(d_in, d)
        self.blocks = nn.Sequential(Block(d), Block(d))
        self.head = nn.Linear(d, d_out)

    def forward(self, x):
        return self.head(self.blocks(self.proj(x * self.scale)))


# mlp.pt's debug records hold this file's path and the line numbers of the two forward methods
# above: an edit that moves them (any line added or removed above) changes mlp.pt's bytes.
def make_torchscript(out):
    d = out / "torchscript"
    d.mkdir(parents=True, exist_ok=True)
    seed(4)
    model = ScriptMLP().eval()
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(d / "mlp.pt"))
    loaded = torch.jit.load(str(d / "mlp.pt"))
    sd = collections.OrderedDict((k, v.detach().contiguous().clone()) for k, v in loaded.state_dict().items())
    safetensors.torch.save_file(sd, str(d / "mlp_reference.safetensors"), metadata={"format": "pt"})
    seed(5)
    x = torch.randn(2, 6)
    with torch.no_grad():
        y = loaded(x)
    np.savez(str(d / "mlp_io.npz"), input=x.numpy(), output=y.numpy())


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def make_safetensors(out):
    d = out / "safetensors"
    (d / "sharded").mkdir(parents=True, exist_ok=True)
    seed(6)
    single = collections.OrderedDict()
    single["embed.weight"] = torch.randn(10, 4)
    single["layer.weight_f16"] = torch.randn(3, 4).half()
    single["layer.weight_bf16"] = torch.randn(3, 4).bfloat16()
    single["layer.weight_f64"] = torch.randn(2, 2, dtype=torch.float64)
    single["positions"] = torch.arange(5, dtype=torch.int64)
    single["mask_i32"] = torch.tensor([1, 0, -7], dtype=torch.int32)
    single["bytes_u8"] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    single["flags"] = torch.tensor([True, False])
    single["scalar"] = torch.tensor(2.5)
    single["empty"] = torch.empty(0, 4)
    safetensors.torch.save_file(single, str(d / "single.safetensors"),
                                metadata={"format": "pt", "source": "ferry fixtures"})

    # HF-style sharded checkpoint: 3 shards + model.safetensors.index.json
    seed(7)
    layers = collections.OrderedDict()
    layers["model.embed_tokens.weight"] = torch.randn(32, 8)
    for i in range(2):
        layers[f"model.layers.{i}.attn.q_proj.weight"] = torch.randn(8, 8)
        layers[f"model.layers.{i}.attn.k_proj.weight"] = torch.randn(8, 8)
        layers[f"model.layers.{i}.mlp.up.weight"] = torch.randn(16, 8)
        layers[f"model.layers.{i}.mlp.down.weight"] = torch.randn(8, 16)
        layers[f"model.layers.{i}.norm.weight"] = torch.ones(8)
    layers["model.norm.weight"] = torch.ones(8)
    layers["lm_head.weight"] = torch.randn(32, 8)
    names = list(layers)
    groups = [names[:1] + names[1:6], names[6:11], names[11:]]
    n = len(groups)
    weight_map = collections.OrderedDict()
    total = 0
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = collections.OrderedDict((k, layers[k]) for k in g)
        safetensors.torch.save_file(part, str(d / "sharded" / fname), metadata={"format": "pt"})
        for k in g:
            weight_map[k] = fname
            total += layers[k].numel() * layers[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (d / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------


def gguf_tensors():
    rng = np.random.default_rng(8)
    t = collections.OrderedDict()
    t["f32.weight"] = ("F32", rng.standard_normal((4, 32)).astype(np.float32))
    t["f32.bias"] = ("F32", rng.standard_normal(32).astype(np.float32))
    t["f32.cube"] = ("F32", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    t["f16.weight"] = ("F16", rng.standard_normal((4, 32)).astype(np.float32))
    t["bf16.weight"] = ("BF16", rng.standard_normal((4, 32)).astype(np.float32))
    for q in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        t[f"{q.lower()}.weight"] = (q, rng.standard_normal((4, 64)).astype(np.float32))
    t["i32.ids"] = ("I32", np.array([0, -1, 2**31 - 1, -(2**31), 7], dtype=np.int32))
    return t


GGUF_KV = [
    ("ferry.u8", 255, VT.UINT8), ("ferry.i8", -128, VT.INT8),
    ("ferry.u16", 65535, VT.UINT16), ("ferry.i16", -32768, VT.INT16),
    ("ferry.u32", 4294967295, VT.UINT32), ("ferry.i32", -2147483648, VT.INT32),
    ("ferry.u64", 18446744073709551615, VT.UINT64), ("ferry.i64", -9223372036854775808, VT.INT64),
    ("ferry.f32", 0.5, VT.FLOAT32), ("ferry.f64", 1 / 3, VT.FLOAT64),
    ("ferry.bool_true", True, VT.BOOL), ("ferry.bool_false", False, VT.BOOL),
    ("ferry.string", "héllo, ferry ✓", VT.STRING),
]
GGUF_ARRAYS = [
    ("ferry.array_i32", [1, -2, 3], VT.INT32),
    ("ferry.array_u8", [0, 1, 255], VT.UINT8),
    ("ferry.array_u64", [0, 2**64 - 1], VT.UINT64),
    ("ferry.array_f32", [0.5, -1.25], VT.FLOAT32),
    ("ferry.array_bool", [True, False, True], VT.BOOL),
    ("ferry.array_str", ["a", "bc", "", "ünï"], VT.STRING),
]


def make_gguf(out):
    d = out / "gguf"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), arch="ferrytest")
    w.add_name("ferry tiny fixture")
    for key, val, vt in GGUF_KV:
        w.add_key_value(key, val, vt)
    for key, val, vt in GGUF_ARRAYS:
        w.add_key_value(key, val, VT.ARRAY, sub_type=vt)
    ref = {}
    for name, (kind, src) in gguf_tensors().items():
        if kind == "F32":
            w.add_tensor(name, src)
        elif kind == "F16":
            w.add_tensor(name, src.astype(np.float16))
        elif kind == "I32":
            w.add_tensor(name, src)
        else:
            qt = QT[kind]
            w.add_tensor(name, gguf.quants.quantize(src, qt), raw_dtype=qt)
        ref[name + ".source"] = src
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # dequantized values, read back through gguf-py's own reader
    r = gguf.GGUFReader(str(path))
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF ne order -> row-major
        if t.tensor_type in (QT.F32, QT.F16, QT.I32):
            ref[t.name + ".dequant"] = np.array(t.data).reshape(shape).astype(
                np.int32 if t.tensor_type == QT.I32 else np.float32)
        else:
            ref[t.name + ".dequant"] = gguf.quants.dequantize(np.array(t.data), t.tensor_type).reshape(shape)
    np.savez(str(d / "tiny_reference.npz"), **ref)

    # v2: the v2 and v3 layouts are identical; patch the version field (bytes 4..8).
    raw = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", raw, 4)[0] == 3
    struct.pack_into("<I", raw, 4, 2)
    (d / "tiny_v2.gguf").write_bytes(bytes(raw))

    # v1: hand-encoded (u32 tensor/kv counts, string lengths, array lengths and dims).
    (d / "tiny_v1.gguf").write_bytes(encode_gguf_v1())


def encode_gguf_v1():
    def s(x):
        b = x.encode()
        return struct.pack("<I", len(b)) + b

    kv = [
        s("general.architecture") + struct.pack("<I", VT.STRING) + s("ferrytest"),
        s("ferry.u32") + struct.pack("<I", VT.UINT32) + struct.pack("<I", 7),
        s("ferry.array_str") + struct.pack("<I", VT.ARRAY) + struct.pack("<II", VT.STRING, 2) + s("a") + s("bc"),
    ]
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    ti = s("f32.weight") + struct.pack("<I", 2) + struct.pack("<II", 4, 2) + struct.pack("<I", QT.F32) + struct.pack("<Q", 0)
    head = b"GGUF" + struct.pack("<III", 1, 1, len(kv)) + b"".join(kv) + ti
    pad = (-len(head)) % 32
    return head + b"\x00" * pad + data.tobytes()


# --------------------------------------------------------------------------------------------
# NumPy
# --------------------------------------------------------------------------------------------


def make_numpy(out):
    d = out / "numpy"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(9)
    arrays = collections.OrderedDict()
    arrays["weight"] = rng.standard_normal((3, 4)).astype(np.float32)
    arrays["bias_f64"] = rng.standard_normal(4)
    arrays["half"] = rng.standard_normal((2, 3)).astype(np.float16)
    arrays["ids"] = np.array([0, -1, 2**62], dtype=np.int64)
    arrays["bytes"] = np.array([0, 7, 255], dtype=np.uint8)
    arrays["mask"] = np.array([True, False, True])
    arrays["big_endian_i32"] = np.array([1, -2, 65536], dtype=">i4")
    arrays["scalar"] = np.array(1.5, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 2), dtype=np.float32)
    np.savez(str(d / "arrays.npz"), **arrays)
    np.savez_compressed(str(d / "compressed.npz"), **arrays)
    f = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(str(d / "fortran.npy"), f)
    np.save(str(d / "plain.npy"), rng.standard_normal((5, 3)).astype(np.float32))


# --------------------------------------------------------------------------------------------
# The embedded default model: a small real language-ID model
# --------------------------------------------------------------------------------------------

LANGS = ["en", "fr", "de", "es", "it", "nl", "pl", "ru"]

TRAIN = {
    "en": ["The weather is nice today and the children are playing outside.",
           "I would like a cup of tea with milk, please.",
           "She has been reading the same book for three weeks.",
           "Where is the nearest train station?",
           "We walked along the river until the sun went down.",
           "My brother works in a small shop near the old church.",
           "They thought the meeting would be shorter than that.",
           "Could you tell me what time the museum opens?"],
    "fr": ["Il fait beau aujourd'hui et les enfants jouent dehors.",
           "Je voudrais une tasse de thé avec du lait, s'il vous plaît.",
           "Elle lit le même livre depuis trois semaines.",
           "Où se trouve la gare la plus proche ?",
           "Nous avons marché le long de la rivière jusqu'au coucher du soleil.",
           "Mon frère travaille dans une petite boutique près de la vieille église.",
           "Ils pensaient que la réunion serait plus courte que ça.",
           "Pourriez-vous me dire à quelle heure ouvre le musée ?"],
    "de": ["Das Wetter ist heute schön und die Kinder spielen draußen.",
           "Ich hätte gern eine Tasse Tee mit Milch, bitte.",
           "Sie liest seit drei Wochen dasselbe Buch.",
           "Wo ist der nächste Bahnhof?",
           "Wir gingen am Fluss entlang, bis die Sonne unterging.",
           "Mein Bruder arbeitet in einem kleinen Laden neben der alten Kirche.",
           "Sie dachten, die Besprechung wäre kürzer als das.",
           "Können Sie mir sagen, wann das Museum öffnet?"],
    "es": ["Hoy hace buen tiempo y los niños están jugando fuera.",
           "Quisiera una taza de té con leche, por favor.",
           "Ella lleva tres semanas leyendo el mismo libro.",
           "¿Dónde está la estación de tren más cercana?",
           "Caminamos junto al río hasta que se puso el sol.",
           "Mi hermano trabaja en una pequeña tienda cerca de la iglesia vieja.",
           "Pensaban que la reunión sería más corta que eso.",
           "¿Podría decirme a qué hora abre el museo?"],
    "it": ["Oggi il tempo è bello e i bambini giocano fuori.",
           "Vorrei una tazza di tè con il latte, per favore.",
           "Sta leggendo lo stesso libro da tre settimane.",
           "Dov'è la stazione ferroviaria più vicina?",
           "Abbiamo camminato lungo il fiume finché il sole è tramontato.",
           "Mio fratello lavora in un piccolo negozio vicino alla chiesa vecchia.",
           "Pensavano che la riunione sarebbe stata più breve di così.",
           "Mi può dire a che ora apre il museo?"],
    "nl": ["Het weer is vandaag mooi en de kinderen spelen buiten.",
           "Ik wil graag een kopje thee met melk, alstublieft.",
           "Ze leest al drie weken hetzelfde boek.",
           "Waar is het dichtstbijzijnde treinstation?",
           "We liepen langs de rivier tot de zon onderging.",
           "Mijn broer werkt in een kleine winkel bij de oude kerk.",
           "Ze dachten dat de vergadering korter zou zijn dan dat.",
           "Kunt u mij zeggen hoe laat het museum opengaat?"],
    "pl": ["Dzisiaj jest ładna pogoda i dzieci bawią się na dworze.",
           "Poproszę filiżankę herbaty z mlekiem.",
           "Ona czyta tę samą książkę od trzech tygodni.",
           "Gdzie jest najbliższa stacja kolejowa?",
           "Szliśmy wzdłuż rzeki, aż zaszło słońce.",
           "Mój brat pracuje w małym sklepie obok starego kościoła.",
           "Myśleli, że spotkanie będzie krótsze.",
           "Czy może mi pan powiedzieć, o której otwierają muzeum?"],
    "ru": ["Сегодня хорошая погода, и дети играют на улице.",
           "Я бы хотел чашку чая с молоком, пожалуйста.",
           "Она читает одну и ту же книгу уже три недели.",
           "Где находится ближайший вокзал?",
           "Мы шли вдоль реки, пока не село солнце.",
           "Мой брат работает в маленьком магазине возле старой церкви.",
           "Они думали, что встреча будет короче.",
           "Не подскажете, во сколько открывается музей?"],
}

PROBES = {
    "en": ["The cat is sleeping on the warm windowsill.", "Please close the door when you leave.",
           "How much does this bread cost?"],
    "fr": ["Le chat dort sur le rebord de la fenêtre.", "Fermez la porte en partant, s'il vous plaît.",
           "Combien coûte ce pain ?"],
    "de": ["Die Katze schläft auf der warmen Fensterbank.", "Bitte schließen Sie die Tür, wenn Sie gehen.",
           "Wie viel kostet dieses Brot?"],
    "es": ["El gato está durmiendo en la ventana.", "Por favor, cierra la puerta cuando te vayas.",
           "¿Cuánto cuesta este pan?"],
    "it": ["Il gatto dorme sul davanzale caldo.", "Per favore, chiudi la porta quando esci.",
           "Quanto costa questo pane?"],
    "nl": ["De kat slaapt op de warme vensterbank.", "Doe alsjeblieft de deur dicht als je weggaat.",
           "Hoeveel kost dit brood?"],
    "pl": ["Kot śpi na ciepłym parapecie.", "Proszę zamknąć drzwi, kiedy pan wychodzi.",
           "Ile kosztuje ten chleb?"],
    "ru": ["Кошка спит на тёплом подоконнике.", "Пожалуйста, закройте дверь, когда будете уходить.",
           "Сколько стоит этот хлеб?"],
}

VOCAB = 256  # token ids are the UTF-8 bytes of the text, unchanged (no lowercasing, no BOS/EOS)
DIM = 32


def tokenize(text):
    return list(text.encode("utf-8"))


class MultiLanguageModel(nn.Module):
    """nn.Embedding(vocab, 32) -> mean over the tokens -> nn.Linear(32, num_languages)."""

    def __init__(self, vocab=VOCAB, dim=DIM, num_languages=len(LANGS)):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.classifier = nn.Linear(dim, num_languages)

    def forward(self, ids, mask=None):
        e = self.embedding(ids)  # [B, T, dim]
        if mask is None:
            pooled = e.mean(dim=1)
        else:
            m = mask.unsqueeze(-1).to(e.dtype)
            pooled = (e * m).sum(dim=1) / m.sum(dim=1)
        return self.classifier(pooled)


def batch(texts):
    toks = [tokenize(t) for t in texts]
    n = max(len(t) for t in toks)
    ids = torch.zeros(len(toks), n, dtype=torch.long)
    mask = torch.zeros(len(toks), n, dtype=torch.bool)
    for i, t in enumerate(toks):
        ids[i, : len(t)] = torch.tensor(t)
        mask[i, : len(t)] = True
    return ids, mask


def make_default(out):
    d = out / "default"
    d.mkdir(parents=True, exist_ok=True)
    seed(10)
    torch.set_num_threads(1)
    texts, labels = [], []
    for li, lang in enumerate(LANGS):
        for t in TRAIN[lang]:
            texts.append(t)
            labels.append(li)
    ids, mask = batch(texts)
    y = torch.tensor(labels)
    model = MultiLanguageModel()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    steps = 400
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(ids, mask), y)
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        train_acc = (model(ids, mask).argmax(-1) == y).float().mean().item()
    torch.save(model.state_dict(), d / "model.pth")

    # probe logits are computed from the saved file, one sentence at a time (no padding)
    sd = torch.load(d / "model.pth", weights_only=True)
    m2 = MultiLanguageModel()
    m2.load_state_dict(sd)
    m2.eval()
    probes, correct = [], 0
    with torch.no_grad():
        for lang in LANGS:
            for text in PROBES[lang]:
                tok = tokenize(text)
                logits = m2(torch.tensor([tok]))[0]
                pred = LANGS[int(logits.argmax())]
                correct += pred == lang
                probes.append({"lang": lang, "text": text, "token_ids": tok,
                               "logits": [float(v) for v in logits.tolist()], "predicted": pred})
    probe = {
        "model": "model.pth",
        "architecture": "MultiLanguageModel: embedding = nn.Embedding(256, 32); logits = classifier(mean_t(embedding[ids[t]])), classifier = nn.Linear(32, 8)",
        "tensors": {k: {"dtype": torch_dtype_name(v.dtype), "shape": list(v.shape)} for k, v in sd.items()},
        "labels": LANGS,
        "tokenization": "token ids = the UTF-8 bytes of the text exactly as given (vocab 256; no normalisation, no lowercasing, no special tokens); one sentence per forward pass, logits = Linear(mean over all tokens of Embedding(ids))",
        "logits_dtype": "float32 (JSON numbers are the exact float32 values printed as float64)",
        "training": {"sentences_per_language": len(TRAIN["en"]), "steps": steps, "optimizer": "Adam(lr=0.03), full batch, cross-entropy",
                     "seed": 10, "threads": 1, "train_accuracy": train_acc},
        "probe_accuracy": correct / len(probes),
        "probes": probes,
    }
    (d / "probe.json").write_text(json.dumps(probe, indent=1, ensure_ascii=False) + "\n")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return probe


# --------------------------------------------------------------------------------------------
# references + verification with the real tools
# --------------------------------------------------------------------------------------------


def load_trusted(path):
    """torch.load with weights_only=True; our own files only fall back to weights_only=False
    (torch 2.15's weights_only unpickler rejects protocol-4 pickles: FRAME, opcode 149)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True), "torch.load(path, map_location='cpu', weights_only=True)"
    except pickle.UnpicklingError as e:
        first = [l for l in str(e).splitlines() if "WeightsUnpickler error" in l or "Unsupported" in l]
        return (torch.load(path, map_location="cpu", weights_only=False),
                "torch.load(path, map_location='cpu', weights_only=False)  # weights_only=True refused: " + " ".join(first).strip())


def make_references(out):
    p = out / "pytorch"
    loader = "torch.load(path, map_location='cpu', weights_only=True)"
    for name in ["all_dtypes", "views", "tied", "nested", "proto2", "proto4", "legacy", "deflated"]:
        obj, how = load_trusted(p / f"{name}.pth")
        extra = {}
        if name == "tied":
            extra["tied_note"] = "shared_storage groups names whose untyped_storage().data_ptr() is equal after torch.load"
        if name == "all_dtypes":
            extra["unsigned_dtypes_saved"] = [k for k in ("uint16", "uint32", "uint64") if k in obj]
        write_reference(obj, p / name, f"{name}.pth", how, extra)
    obj = torch.load(out / "default" / "model.pth", map_location="cpu", weights_only=True)
    write_reference(obj, out / "default" / "model", "model.pth", loader)
    ts = torch.jit.load(str(out / "torchscript" / "mlp.pt"))
    write_reference(ts.state_dict(), out / "torchscript" / "mlp", "mlp.pt", "torch.jit.load(path).state_dict()")


def _eq(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f":
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return a.shape == b.shape and np.array_equal(a, b)


def verify(out):
    """Load every output with its own tool; return a list of findings for the README."""
    findings = []
    p = out / "pytorch"
    # every .pth/.pt against its reference
    for ref_json in sorted(out.rglob("*.reference.json")):
        ref = json.loads(ref_json.read_text())
        src = ref_json.parent / ref["source"]
        if src.suffix == ".pt":
            obj = torch.jit.load(str(src)).state_dict()
        else:
            obj, how = load_trusted(src)
            if "weights_only=False" in how:
                findings.append(f"{src.relative_to(out)}: {how.split('# ')[1]}")
        npz_path = Path(str(ref_json)[: -len(".json")] + ".npz")
        npz = np.load(npz_path) if npz_path.exists() else {}
        leaves = dict(flatten(obj))
        for name, info in ref["tensors"].items():
            a, _ = to_numpy(leaves[name])
            assert _eq(a, npz[name]), (src, name)
            assert torch_dtype_name(leaves[name].dtype) == info["dtype"]
    findings.append("every .pth/.pt reloads (weights_only=True / jit.load) equal to its reference npz")

    # mlp reference safetensors == state_dict of the TorchScript module; forward reproduces
    ts = torch.jit.load(str(out / "torchscript" / "mlp.pt"))
    st = safetensors.torch.load_file(str(out / "torchscript" / "mlp_reference.safetensors"))
    assert list(st) == sorted(ts.state_dict()) or set(st) == set(ts.state_dict())
    for k, v in ts.state_dict().items():
        assert torch.equal(st[k], v), k
    io_ = np.load(out / "torchscript" / "mlp_io.npz")
    with torch.no_grad():
        assert torch.equal(ts(torch.from_numpy(io_["input"])), torch.from_numpy(io_["output"]))

    # tied really is tied after load
    tied = torch.load(p / "tied.pth", weights_only=True)
    assert tied["embed.weight"].untyped_storage().data_ptr() == tied["lm_head.weight"].untyped_storage().data_ptr()

    # deflated: entries really are deflated; torch.load accepts it (checked above); mmap?
    with zipfile.ZipFile(p / "deflated.pth") as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    try:
        torch.load(p / "deflated.pth", weights_only=True, mmap=True)
        findings.append("deflated.pth: torch.load(mmap=True) also loads it")
    except Exception as e:
        findings.append(f"deflated.pth: torch.load(mmap=True) refuses it: {type(e).__name__}: {str(e).splitlines()[0][:160]}")

    # hostile: what a plain unpickler would call (resolved to recorders, nothing runs), and
    # torch's weights_only loader refuses them.
    marker = Path("/tmp/ferry_pwned")
    existed = marker.exists()
    h = out / "hostile"
    for f in ["os_system.pkl", "os_system_proto0.pkl", "os_system_proto4.pkl"]:
        calls = what_would_run((h / f).read_bytes())
        assert calls == [("os.system", (PWN_CMD,))], (f, calls)
        pickletools.dis((h / f).read_bytes(), out=open(os.devnull, "w"))
    with zipfile.ZipFile(p / "hostile_os_system.pth") as z:
        (pkl,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        assert what_would_run(z.read(pkl)) == [("os.system", (PWN_CMD,))]
    for f in [p / "hostile_os_system.pth", h / "legacy_os_system.pth", h / "os_system.pkl"]:
        try:
            torch.load(f, weights_only=True)
            raise AssertionError(f"torch loaded {f}")
        except pickle.UnpicklingError as e:
            why = [l for l in str(e).splitlines() if "WeightsUnpickler" in l or "global" in l.lower()]
            findings.append(f"{f.relative_to(out)}: torch.load(weights_only=True) refuses: {' '.join(why)[:240]}")
    assert marker.exists() == existed, "a payload ran"

    # safetensors
    from safetensors import safe_open

    with safe_open(str(out / "safetensors" / "single.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt", "source": "ferry fixtures"}
        assert len(list(f.keys())) == 10
    idx = json.loads((out / "safetensors" / "sharded" / "model.safetensors.index.json").read_text())
    total = 0
    for k, fname in idx["weight_map"].items():
        with safe_open(str(out / "safetensors" / "sharded" / fname), "pt") as f:
            t = f.get_tensor(k)
            total += t.numel() * t.element_size()
    assert total == idx["metadata"]["total_size"]

    # gguf
    ref = np.load(out / "gguf" / "tiny_reference.npz")
    for fname in ["tiny.gguf", "tiny_v2.gguf"]:
        r = gguf.GGUFReader(str(out / "gguf" / fname))
        kv = {f.name: f for f in r.fields.values()}
        for key, val, vt in GGUF_KV:
            got = kv[key].contents()
            assert (got == val) if vt != VT.FLOAT32 else abs(got - val) < 1e-7, (key, got, val)
        for key, val, vt in GGUF_ARRAYS:
            assert kv[key].contents() == val, (key, kv[key].contents())
        for t in r.tensors:
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))
            data = np.array(t.data)
            if t.tensor_type in (QT.F32, QT.F16, QT.I32):
                got = data.reshape(shape).astype(np.int32 if t.tensor_type == QT.I32 else np.float32)
            else:
                got = gguf.quants.dequantize(data, t.tensor_type).reshape(shape)
            assert _eq(got, ref[t.name + ".dequant"]), (fname, t.name)
    try:
        gguf.GGUFReader(str(out / "gguf" / "tiny_v1.gguf"))
        findings.append("tiny_v1.gguf: gguf-py reads it")
    except Exception as e:
        findings.append(f"tiny_v1.gguf: gguf-py refuses it: {type(e).__name__}: {str(e)[:120]}")

    # numpy
    a = np.load(out / "numpy" / "arrays.npz")
    c = np.load(out / "numpy" / "compressed.npz")
    for k in a.files:
        assert _eq(a[k], c[k]) and a[k].dtype == c[k].dtype
    with zipfile.ZipFile(out / "numpy" / "arrays.npz") as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    with zipfile.ZipFile(out / "numpy" / "compressed.npz") as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    assert np.isfortran(np.load(out / "numpy" / "fortran.npy"))
    np.load(out / "numpy" / "plain.npy")

    # default model: reproduces its probe logits
    probe = json.loads((out / "default" / "probe.json").read_text())
    m = MultiLanguageModel()
    m.load_state_dict(torch.load(out / "default" / "model.pth", weights_only=True))
    with torch.no_grad():
        for pr in probe["probes"]:
            lg = m(torch.tensor([pr["token_ids"]]))[0]
            assert lg.tolist() == pr["logits"], pr["text"]
    assert (out / "default" / "model.pth").stat().st_size < 200_000
    return findings


def manifest(out):
    files = {}
    for f in sorted(out.rglob("*")):
        # fixtures/data/, train/, bert/ and graph/ belong to make_data_fixtures.py,
        # make_train_fixtures.py, make_bert_reference.py and make_graph_fixtures.py (each with
        # its own checksums).
        if f.relative_to(out).parts[0] in ("data", "train", "bert", "graph"):
            continue
        if f.is_file() and f.name not in ("README.md", "MANIFEST.json"):
            rel = f.relative_to(out).as_posix()
            files[rel] = {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    m = {"made_by": tool_versions(), "command": ".venv/bin/python scripts/make_fixtures.py",
         "not_byte_reproducible": NOT_REPRODUCIBLE,
         "files": files}
    (out / "MANIFEST.json").write_text(json.dumps(m, indent=1) + "\n")
    return files


def main():
    # TorchScript writes a module's Final constants in Python set order, which follows string
    # hashing: pin the hash seed so mlp.pt is byte-identical across runs.
    pin_hash_seed()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "fixtures")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare with --out")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), quiet=True)
            old = json.loads((args.out / "MANIFEST.json").read_text())["files"]
            new = json.loads((Path(tmp) / "MANIFEST.json").read_text())["files"]
            diff = sorted(k for k in set(old) | set(new) if old.get(k, {}).get("sha256") != new.get(k, {}).get("sha256"))
            allowed = set(NOT_REPRODUCIBLE)
            print("differing files:", diff or "none")
            bad = [k for k in diff if k not in allowed]
            if bad:
                print("UNEXPECTED differences:", bad)
                sys.exit(1)
            print("fixtures reproduce (allowed to differ: %s)" % ", ".join(NOT_REPRODUCIBLE))
        return
    build(args.out)


def build(out, quiet=False):
    out.mkdir(parents=True, exist_ok=True)
    print(f"writing fixtures to {out} with {tool_versions()}")
    make_pytorch(out)
    make_hostile(out)
    make_torchscript(out)
    make_safetensors(out)
    make_gguf(out)
    make_numpy(out)
    probe = make_default(out)
    print(f"  default model: train acc {probe['training']['train_accuracy']:.3f}, probe acc {probe['probe_accuracy']:.3f}")
    for pr in probe["probes"]:
        if pr["predicted"] != pr["lang"]:
            print(f"    probe miss: {pr['lang']} -> {pr['predicted']}: {pr['text']}")
    make_references(out)
    findings = verify(out)
    files = manifest(out)
    if not quiet:
        for f in findings:
            print("  " + f)
        total = sum(v["bytes"] for v in files.values())
        for k, v in files.items():
            print(f"  {v['bytes']:>8}  {k}")
        print(f"  total {total} bytes in {len(files)} files")


if __name__ == "__main__":
    main()
