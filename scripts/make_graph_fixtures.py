#!/usr/bin/env python3
"""Write small ONNX graphs made by the real torch exporters under fixtures/graph/ for ferry-graph.

Every model is float32, built after torch.manual_seed(0), in eval mode, and exported by
torch.onnx.export itself (no hand-written protobuf). Beside each FILE.onnx the script writes
FILE.onnx.io.npz: `input.<graph input name>` (what the model was run on) and
`output.<graph output name>` (what torch computed), the names being the ONNX graph's own.

    linear.onnx           nn.Linear(10, 2) (the seed model); input x [batch, 10]; output y.
                          Legacy exporter, opset 13
    bag.onnx              nn.Embedding(100, 16) -> mean over tokens (dim 1) -> nn.Linear(16, 5)
                          (the seed's embedding classifier); input input_ids int64 [batch, seq];
                          output logits. Legacy exporter, opset 13
    cnn.onnx              Conv(3,8,3,p1) BN ReLU MaxPool2 Conv(8,16,3,p1,no bias) BN ReLU AvgPool2
                          Conv(16,16,1) ReLU AdaptiveAvgPool2d(1) Flatten Linear(16,10)
                          BatchNorm1d(10); BN running stats, weights and biases randomized; input
                          x [batch,3,16,16]; output logits. Legacy exporter, opset 13,
                          do_constant_folding=False, TrainingMode.EVAL: the BatchNormalization
                          nodes stay (the exporter only folds Conv+BN in its constant-folding
                          pass), so Conv+BN and Gemm+BN folding both have a case
    encoder.onnx          transformers BertModel, 2 layers, hidden 64, 4 heads, FFN 128, vocab
                          200, 64 positions, erf GELU ("gelu"), eager attention; inputs
                          input_ids, attention_mask, token_type_ids int64 [batch, seq]; outputs
                          last_hidden_state [batch, seq, 64], pooler_output [batch, 64]. Legacy
                          exporter, opset 14 (LayerNorm decomposed into ReduceMean/Sub/Pow/
                          ReduceMean/Add/Sqrt/Div/Mul/Add, GELU as Div/Erf/Add/Mul/Mul)
    encoder_tanh.onnx     the same with 1 layer and hidden_act "gelu_new" (tanh GELU:
                          Pow 3, Mul 0.044715, Add, Mul sqrt(2/pi), Tanh, Add 1, Mul, Mul 0.5)
    encoder_opset18.onnx  encoder.onnx's model exported by the dynamo exporter (torch.export +
    (+ .onnx.data)        onnxscript), opset 18: LayerNormalization nodes, initializers in the
                          exporter's own external data file encoder_opset18.onnx.data
    linear_external.onnx  linear.onnx re-saved by onnx.save_model(save_as_external_data=True,
    (+ .onnx.data)        all_tensors_to_one_file=True, location="linear_external.onnx.data",
                          size_threshold=0)
    REFERENCE.json        per file: ir_version, opsets, producer, inputs/outputs with their
                          dims, initializer count, external data files, op-type histogram and
                          the export settings; plus the tool versions
    SHA256SUMS            every other file's SHA-256 (`sha256sum -c SHA256SUMS`)

The BERT weights are transformers' own init with initializer_range 0.2 (not 0.02), and the
biases and LayerNorm weights/biases are then drawn at random (seeded): with the default init
(small weights, zero biases, unit LayerNorm) the GELU inputs stay near 0, where the erf and tanh
forms agree to 1e-6, and a swapped or missing bias would go unnoticed. The script checks that
the erf and tanh GELU models differ by far more than the test tolerance. The encoders are run on
batch 2 x seq 7 with the second row padded (attention_mask 0 on its last 3 positions,
input_ids 0 = [PAD] there) and token_type_ids 1 on the first row's last 3 tokens.

Checks before writing: onnx.checker.check_model(full_check=True) on every file; onnxruntime
(CPUExecutionProvider, ORT_DISABLE_ALL and ORT_ENABLE_ALL) matches torch within 1e-4 on the
saved inputs and on a second batch/sequence size (the axes really are dynamic); cnn.onnx has
BatchNormalization nodes; encoder.onnx has Erf and no Tanh, encoder_tanh.onnx Tanh and no Erf;
the total size stays under 1.5 MB.

Real exports, fixtures/graph/exports/ (its own REFERENCE.json and SHA256SUMS; build_exports):
four models, each exported by both exporters, TorchScript (`dynamo=False`) and dynamo
(`dynamo=True`, external_data=False, then the nodes' metadata_props -- stack traces with
absolute paths -- removed), at opsets 17 and 21, as MODEL_EXPORTER_opsetN.onnx where N is the
opset the file really has:

    gpt2_*                transformers GPT2LMHeadModel (GPT2_CONFIG: vocab 128, hidden 32,
                          2 layers, 4 heads, FFN 48, 32 positions, tanh GELU)
    llama_*               transformers LlamaForCausalLM (LLAMA_CONFIG: vocab 128, hidden 32,
                          2 layers, 4 query / 2 key-value heads, FFN 48, RoPE, RMSNorm)
                          both: eager attention, random init (initializer_range 0.2, seed 0),
                          biases and norm weights randomized; inputs input_ids, attention_mask
                          int64 [batch, seq] (right padding); output logits; no cache
    resnet_*              hand-written ResNet-style CNN: basic blocks with BatchNorm (random
                          statistics), a strided block, ConvTranspose2d (one grouped, with
                          output_padding), Resize nearest x2, bilinear x0.5, bilinear
                          align_corners to 20x20; outputs seg [batch,4,20,20], logits [batch,10]
    lstm_tagger_*         Embedding -> 2-layer bidirectional nn.LSTM -> Linear per token
    encoder_qdq_int8.onnx the encoder.onnx BERT (2 layers, hidden 64) exported at opset 17,
                          quantized by onnxruntime.quantization.quantize_static (QuantFormat.QDQ,
                          QInt8 activations and weights, per-channel weights, MinMax over 8
                          random calibration batches; MatMul, Gemm and Gather only -- see
                          QDQ_OP_TYPES)

Each FILE.onnx.io.npz holds the inputs and onnxruntime's outputs (ORT_DISABLE_ALL) at two sizes
(`input.*`/`output.*` and `alt.input.*`/`alt.output.*`); the script checks onnxruntime against
torch (ORT_TOL; the QDQ model against the float model within QDQ_VS_FLOAT_REL, and
ORT_ENABLE_ALL's int8 kernels against ORT_DISABLE_ALL within QDQ_LEVELS_REL) and fails if they
differ. An export that fails, that the checker or onnxruntime refuses, or that comes out at
another opset than asked is listed in REFERENCE.json's export_failures with the error and the
exporter's log (the dynamo exporter builds opset 18 and converts down: for GPT-2 the converted
opset-17 file is invalid, for Llama and the CNN conversion fails and the file stays at 18).
crates/ferry-graph/tests/real_graphs.rs runs ferry on every file, plain and optimized.
Together under 2 MB, each file under 400 KB; about 30 s to generate (most of it the dynamo
exporter).

Usage (needs torch, transformers, onnx, onnxruntime, onnxscript; see
scripts/requirements-fixtures.txt):
    .venv/bin/python scripts/make_graph_fixtures.py           # (re)write fixtures/graph/ and
                                                              # fixtures/graph/exports/
    .venv/bin/python scripts/make_graph_fixtures.py --exports-only   # only exports/
    .venv/bin/python scripts/make_graph_fixtures.py --check   # regenerate into a temp dir and
                                                              # compare with both SHA256SUMS
                                                              # (--exports-only: exports/ only)
    .venv/bin/python scripts/make_graph_fixtures.py --minilm  # also (only) export the real
                      all-MiniLM-L6-v2 (not committed) to target/models/all-MiniLM-L6-v2/model.onnx
Options:
    --out DIR          write somewhere other than fixtures/graph/
    --minilm           export all-MiniLM-L6-v2 instead of writing fixtures/graph/
    --model DIR        the MiniLM folder (default $FERRY_MINILM or target/models/all-MiniLM-L6-v2;
                       scripts/fetch_minilm.py makes it)
    --minilm-out PATH  where the MiniLM ONNX goes (default MODEL_DIR/model.onnx); its inputs and
                       transformers' last_hidden_state go to PATH.io.npz
    --describe ONNX [--prefix P]   print ONNX's op histogram and the wiring (op, name, inputs
                       with constant values and initializer shapes, outputs) of the nodes whose
                       name starts with P, e.g. --prefix /encoder/layer.0/

Reproducibility: same machine, same versions -> byte-identical files (checked: two runs into
different folders give the same SHA256SUMS, for exports/ too; the script re-executes itself with
PYTHONHASHSEED=0 and runs torch on one thread). But the dynamo exporter stores, per node,
metadata_props with the Python stack trace (absolute paths of this script and of
site-packages), so encoder_opset18.onnx is byte-identical only when regenerated from the same
paths (exports/ removes them); and another CPU may round float32 outputs differently. So
--check compares hashes and tolerates two kinds of difference (reported; --strict fails on them
too): an npz whose arrays agree (integers exactly, floats within 1e-5; the QDQ model's within
QDQ_LEVELS_REL x max |output|: one int8 step), and a .onnx/.onnx.data file, provided
REFERENCE.json (versions, op histograms, inputs/outputs, external data layout) is identical.
Every committed .onnx must also reproduce its committed npz outputs under onnxruntime (1e-4;
exports/ at ORT_DISABLE_ALL, as recorded).

The MiniLM export (--minilm) uses the legacy exporter at opset 14 with eager attention, inputs
input_ids / attention_mask / token_type_ids [batch, seq] (dynamic) and the single output
last_hidden_state; PATH.io.npz holds the five sentences of
fixtures/bert/minilm_reference.safetensors (its input_ids and attention_mask, token_type_ids 0)
and what transformers' AutoModel computes for them (checked against that file at real tokens).
"""
import collections
import json
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

from ferry_scripts import (fixture_parser, json_bytes, pin_hash_seed, read_sums, sha256,
                           write_sums)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never ask the Hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "fixtures" / "graph"
DEFAULT_MINILM = Path(os.environ.get("FERRY_MINILM")
                      or REPO / "target" / "models" / "all-MiniLM-L6-v2")
MINILM_REFERENCE = REPO / "fixtures" / "bert" / "minilm_reference.safetensors"
REGEN_COMMAND = ".venv/bin/python scripts/make_graph_fixtures.py"
ORT_TOL = 1e-4
CHECK_TOL = 1e-5
MAX_TOTAL_BYTES = 1_500_000

BERT_CONFIG = dict(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=64, hidden_act="gelu",
                   initializer_range=0.2, attn_implementation="eager")
ENCODER_AXES = ("input_ids", "attention_mask", "token_type_ids")


def quiet_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        from torch.jit import TracerWarning
        warnings.filterwarnings("ignore", category=TracerWarning)
    except ImportError:
        pass
    import logging
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- models


def models():
    import torch
    from torch import nn

    class Bag(nn.Module):
        """The seed's MultiLanguageModel without a mask: mean of the token embeddings."""

        def __init__(s):
            super().__init__()
            s.embedding = nn.Embedding(100, 16)
            s.classifier = nn.Linear(16, 5)

        def forward(s, input_ids):
            return s.classifier(s.embedding(input_ids).mean(dim=1))

    class Cnn(nn.Module):
        def __init__(s):
            super().__init__()
            s.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                nn.AvgPool2d(2),
                nn.Conv2d(16, 16, 1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            s.head = nn.Linear(16, 10)
            s.head_norm = nn.BatchNorm1d(10)

        def forward(s, x):
            return s.head_norm(s.head(s.features(x)))

    return Bag, Cnn


def bert_export_class():
    """BertModel with a positional forward returning a tuple: the legacy exporter's tracer
    cannot pass keyword inputs to transformers 5's decorated forward ("got multiple values for
    argument 'use_cache'"), and a subclass (not a wrapper module) keeps the node and
    initializer names the same as BertModel's own (`/encoder/layer.0/...`,
    `embeddings.word_embeddings.weight`)."""
    from transformers import BertModel

    class BertExport(BertModel):
        outputs = ("last_hidden_state", "pooler_output")

        def forward(self, input_ids, attention_mask, token_type_ids):
            o = super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids, return_dict=True)
            return tuple(getattr(o, k) for k in self.outputs)

    return BertExport


def randomize_bn(model, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)


def randomize_bert(model, seed):
    """Random biases and LayerNorm affine parameters (the init makes them 0 and 1)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "LayerNorm" in name and name.endswith(".weight"):
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)


def build_bert(act, layers):
    import torch
    from transformers import BertConfig
    cfg = BertConfig(**{**BERT_CONFIG, "hidden_act": act, "num_hidden_layers": layers})
    torch.manual_seed(0)
    model = bert_export_class()(cfg).eval()
    randomize_bert(model, 1)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    return model


def encoder_inputs(B=2, T=7, pad=3, seed=2, vocab=200):
    """input_ids, attention_mask, token_type_ids; row 1 padded on its last `pad` positions."""
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g, dtype=torch.int64)
    mask = torch.ones(B, T, dtype=torch.int64)
    if B > 1 and pad:
        mask[1, T - pad:] = 0
    ids = ids * mask
    tt = torch.zeros(B, T, dtype=torch.int64)
    tt[0, T - min(3, T - 1):] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


# ----------------------------------------------------------------------------- export


def export_legacy(model, inputs, path, output_names, dynamic_axes, opset, **kw):
    import torch
    torch.onnx.export(model, tuple(inputs.values()), str(path), dynamo=False,
                      opset_version=opset, input_names=list(inputs), output_names=output_names,
                      dynamic_axes=dynamic_axes, **kw)


def export_dynamo(model, inputs, path, output_names, dyn, opset, **kw):
    import torch
    dims = {}
    shapes = {}
    for name, axes in dyn.items():
        shapes[name] = {}
        for axis, (dim_name, kwargs) in axes.items():
            if dim_name not in dims:
                dims[dim_name] = torch.export.Dim(dim_name, **kwargs)
            shapes[name][axis] = dims[dim_name]
    torch.onnx.export(model, tuple(inputs.values()), str(path), dynamo=True,
                      opset_version=opset, input_names=list(inputs), output_names=output_names,
                      dynamic_shapes=shapes, verbose=False, **kw)


def torch_outputs(model, inputs):
    import torch
    with torch.no_grad():
        out = model(*inputs.values())
    if isinstance(out, torch.Tensor):
        out = (out,)
    return [o.detach().contiguous().numpy() for o in out]


def save_io(path, inputs, outputs, alt=None):
    """np.savez (STORED, fixed times): input.<name>, output.<name>, and with ALT = (inputs,
    outputs) of a second batch/sequence size alt.input.<name>, alt.output.<name>, in sorted key
    order."""
    import numpy as np
    arrays = {}
    for prefix, (ins, outs) in (("", (inputs, outputs)),) + ((("alt.", alt),) if alt else ()):
        arrays.update({f"{prefix}input.{k}": v.numpy() if hasattr(v, "numpy") else v
                       for k, v in ins.items()})
        arrays.update({f"{prefix}output.{k}": v for k, v in outs.items()})
    with open(path, "wb") as f:
        np.savez(f, **{k: np.ascontiguousarray(arrays[k]) for k in sorted(arrays)})


def graph_info(path):
    import onnx
    m = onnx.load(str(path), load_external_data=False)

    def dims(vi):
        return [d.dim_param if d.HasField("dim_param") else d.dim_value
                for d in vi.type.tensor_type.shape.dim]

    def elem(vi):
        return onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()

    ext = sorted({e.value for t in m.graph.initializer for e in t.external_data
                  if e.key == "location"})
    hist = collections.Counter(n.op_type for n in m.graph.node)
    return {
        "ir_version": m.ir_version,
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "producer": f"{m.producer_name} {m.producer_version}",
        "inputs": [{"name": i.name, "dtype": elem(i), "dims": dims(i)} for i in m.graph.input],
        "outputs": [{"name": o.name, "dtype": elem(o), "dims": dims(o)} for o in m.graph.output],
        "nodes": len(m.graph.node),
        "initializers": len(m.graph.initializer),
        "initializers_external": sum(1 for t in m.graph.initializer
                                     if t.data_location == onnx.TensorProto.EXTERNAL),
        "external_data_files": ext,
        "functions": len(m.functions),
        "op_types": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def ort_run(path, inputs, level):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    feed = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in inputs.items()}
    return dict(zip(names, s.run(None, feed)))


def verify(path, model, inputs, expected, alt_inputs):
    """onnx checker + onnxruntime vs torch on the saved inputs and on another shape."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(str(path), full_check=True)
    diffs = {}
    cases = [("saved", inputs, expected)]
    if alt_inputs is not None:
        alt = dict(zip(expected, torch_outputs(model, alt_inputs)))
        cases.append(("alt", alt_inputs, alt))
    for level_name, level in (("noopt", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                              ("opt", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        for case, inp, exp in cases:
            got = ort_run(path, inp, level)
            assert list(got) == list(exp), (path.name, list(got), list(exp))
            for k in exp:
                assert got[k].shape == exp[k].shape, (path.name, k, got[k].shape, exp[k].shape)
                d = float(np.abs(got[k].astype(np.float64) - exp[k]).max())
                assert d <= ORT_TOL, f"{path.name} {case} {level_name} {k}: max abs diff {d}"
                diffs[f"{case}/{level_name}/{k}"] = d
    return diffs


# ----------------------------------------------------------------------------- build


def build(out, quiet=False):
    import numpy as np
    import onnx
    import onnxruntime
    import onnxscript
    import torch
    import transformers
    quiet_warnings()
    torch.set_num_threads(1)
    Bag, Cnn = models()

    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(out.iterdir()):
        if p.is_file() and (p.suffix in (".onnx", ".npz", ".data") or
                            p.name in ("REFERENCE.json", "SHA256SUMS")):
            p.unlink()

    reference = {
        "made_by": {"script": REGEN_COMMAND, "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
                    "numpy": np.__version__,
                    "checked_with": "onnx.checker.check_model(full_check=True); onnxruntime "
                                    "CPUExecutionProvider (ORT_DISABLE_ALL and ORT_ENABLE_ALL) "
                                    f"within {ORT_TOL} of torch on the saved inputs and on a "
                                    "second batch/sequence size"},
        "io_files": "FILE.onnx.io.npz: input.<graph input name>, output.<graph output name> "
                    "(torch's outputs, float32)",
        "files": {},
    }
    diffs = {}

    def record(name, model, inputs, output_names, export, settings, alt_inputs):
        path = out / f"{name}.onnx"
        if export is not None:
            export(path)
        outputs = dict(zip(output_names, torch_outputs(model, inputs)))
        save_io(out / f"{name}.onnx.io.npz", inputs, outputs)
        diffs[name] = verify(path, model, inputs, outputs, alt_inputs)
        info = graph_info(path)
        assert [i["name"] for i in info["inputs"]] == list(inputs), info["inputs"]
        assert [o["name"] for o in info["outputs"]] == output_names, info["outputs"]
        info["export"] = settings
        info["io"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape)}
                      for k, v in [(f"input.{k}", v.numpy()) for k, v in inputs.items()] +
                      [(f"output.{k}", v) for k, v in outputs.items()]}
        reference["files"][f"{name}.onnx"] = info
        return info

    # linear: the seed model
    torch.manual_seed(0)
    linear = torch.nn.Linear(10, 2).eval()
    g = torch.Generator().manual_seed(1)
    x = {"x": torch.randn(3, 10, generator=g)}
    record("linear", linear, x, ["y"],
           lambda p: export_legacy(linear, x, p, ["y"], {"x": {0: "batch"}, "y": {0: "batch"}},
                                   13),
           "torch.onnx.export(dynamo=False, opset_version=13), defaults otherwise "
           "(do_constant_folding=True, TrainingMode.EVAL)",
           {"x": torch.randn(5, 10, generator=g)})

    # bag: embedding -> mean -> linear
    torch.manual_seed(0)
    bag = Bag().eval()
    g = torch.Generator().manual_seed(1)
    ids = {"input_ids": torch.randint(0, 100, (3, 6), generator=g, dtype=torch.int64)}
    record("bag", bag, ids, ["logits"],
           lambda p: export_legacy(bag, ids, p, ["logits"],
                                   {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}},
                                   13),
           "torch.onnx.export(dynamo=False, opset_version=13), defaults otherwise",
           {"input_ids": torch.randint(0, 100, (2, 9), generator=g, dtype=torch.int64)})

    # cnn with BatchNormalization kept
    torch.manual_seed(0)
    cnn = Cnn()
    randomize_bn(cnn, 1)
    cnn.eval()
    g = torch.Generator().manual_seed(2)
    xi = {"x": torch.randn(2, 3, 16, 16, generator=g)}
    info = record(
        "cnn", cnn, xi, ["logits"],
        lambda p: export_legacy(cnn, xi, p, ["logits"], {"x": {0: "batch"},
                                                         "logits": {0: "batch"}}, 13,
                                do_constant_folding=False,
                                training=torch.onnx.TrainingMode.EVAL),
        "torch.onnx.export(dynamo=False, opset_version=13, do_constant_folding=False, "
        "training=TrainingMode.EVAL)",
        {"x": torch.randn(3, 3, 16, 16, generator=g)})
    assert info["op_types"].get("BatchNormalization", 0) == 3, info["op_types"]

    # BERT encoders
    enc_in = encoder_inputs()
    enc_alt = encoder_inputs(B=3, T=11, pad=5, seed=3)
    bert_axes = {k: {0: "batch", 1: "seq"} for k in ENCODER_AXES + ("last_hidden_state",)}
    bert_axes["pooler_output"] = {0: "batch"}
    bert_outs = ["last_hidden_state", "pooler_output"]
    encoder = build_bert("gelu", 2)
    info = record("encoder", encoder, enc_in, bert_outs,
                  lambda p: export_legacy(encoder, enc_in, p, bert_outs, bert_axes, 14),
                  "torch.onnx.export(dynamo=False, opset_version=14), defaults otherwise "
                  "(do_constant_folding=True, TrainingMode.EVAL)", enc_alt)
    # 2 erf GELUs; the one Tanh is the pooler's
    assert info["op_types"].get("Erf") == 2 and info["op_types"].get("Tanh") == 1, \
        info["op_types"]
    tanh = build_bert("gelu_new", 1)
    info = record("encoder_tanh", tanh, enc_in, bert_outs,
                  lambda p: export_legacy(tanh, enc_in, p, bert_outs, bert_axes, 14),
                  "torch.onnx.export(dynamo=False, opset_version=14), defaults otherwise",
                  enc_alt)
    # the tanh GELU's Tanh and the pooler's
    assert "Erf" not in info["op_types"] and info["op_types"].get("Tanh") == 2, info["op_types"]
    # the GELU forms must matter: same weights, other activation
    other = build_bert("gelu_new", 2)
    other.load_state_dict(encoder.state_dict())
    gelu_gap = float(abs(torch_outputs(other, enc_in)[0] -
                         torch_outputs(encoder, enc_in)[0]).max())
    assert gelu_gap > 5 * ORT_TOL, f"erf vs tanh GELU differ by only {gelu_gap}"
    reference["gelu_erf_vs_tanh_max_abs"] = (
        f"{gelu_gap:.3g} (encoder.onnx's weights run with hidden_act gelu_new instead of gelu; "
        "10x the 1e-4 tolerance: GELU erf and tanh differ by at most ~3e-4 per element)")
    dyn = {k: {0: ("batch", {}), 1: ("seq", {"max": 64})} for k in ENCODER_AXES}
    try:
        record("encoder_opset18", encoder, enc_in, bert_outs,
               lambda p: export_dynamo(encoder, enc_in, p, bert_outs, dyn, 18),
               "torch.onnx.export(dynamo=True, opset_version=18, dynamic_shapes: batch, "
               "seq <= 64), defaults otherwise (optimize=True, external_data=True)", enc_alt)
        reference["encoder_opset18"] = "exported"
    except Exception as e:  # recorded, not fatal: the dynamo exporter is the moving part
        reference["encoder_opset18"] = f"skipped: {type(e).__name__}: {e}"
        print(f"WARNING: dynamo export failed, encoder_opset18 skipped: {e}", file=sys.stderr)
        for p in out.glob("encoder_opset18*"):
            p.unlink()

    # linear with external data
    m = onnx.load(str(out / "linear.onnx"))
    onnx.save_model(m, str(out / "linear_external.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="linear_external.onnx.data",
                    size_threshold=0)
    info = record("linear_external", linear, x, ["y"], None,
                  "linear.onnx re-saved by onnx.save_model(save_as_external_data=True, "
                  "all_tensors_to_one_file=True, location='linear_external.onnx.data', "
                  "size_threshold=0)", None)
    assert info["initializers_external"] == info["initializers"] == 2, info

    (out / "REFERENCE.json").write_bytes(json_bytes(reference))
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())
             if p.is_file() and p.name not in ("SHA256SUMS", "README.md")}
    sums = write_sums(out, files)
    total = sum(len(d) for d in files.values()) + len(sums)
    assert total < MAX_TOTAL_BYTES, f"fixtures/graph is {total} bytes"
    return files, reference, diffs


# ----------------------------------------------------------------------------- real exports


EXPORTS_SUBDIR = "exports"
EXPORTERS = ("legacy", "dynamo")
EXPORT_OPSETS = (17, 21)
MAX_EXPORT_FILE_BYTES = 400_000
MAX_EXPORTS_BYTES = 2_000_000
# The QDQ int8 encoder against torch's float32 model (onnxruntime, both optimization levels):
# the int8 error allowed, relative to max |torch output|. Measured 0.2 (pooler_output's tanh
# amplifies it); a wrongly quantized model is far off (the default op set, which also quantizes
# the attention-mask Add of finfo.min, is off by ~1.3).
QDQ_VS_FLOAT_REL = 0.35
# onnxruntime's fused int8 kernels (ORT_ENABLE_ALL: QLinearMatMul, QGemm) against the same graph
# evaluated as written (ORT_DISABLE_ALL: Q/DQ in float), relative to max |output|. They agree
# to 1e-6 here, but where two roundings put one activation on different sides of a quantization
# step, that step travels on: one such step moves pooler_output (a tanh) by ~8% of its range.
QDQ_LEVELS_REL = 0.1
QDQ_OP_TYPES = ("MatMul", "Gemm", "Gather")

DECODER_VOCAB = 128
GPT2_CONFIG = dict(vocab_size=DECODER_VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                   n_inner=48, activation_function="gelu_new", initializer_range=0.2,
                   attn_implementation="eager")
LLAMA_CONFIG = dict(vocab_size=DECODER_VOCAB, hidden_size=32, intermediate_size=48,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=32, initializer_range=0.2, rms_norm_eps=1e-5,
                    tie_word_embeddings=False, attn_implementation="eager")


def decoder_export_class(base):
    """A causal LM with the positional forward (input_ids, attention_mask) -> logits, no cache
    (as bert_export_class: the legacy tracer cannot pass keywords, and a subclass keeps the
    transformers node and initializer names)."""

    class DecoderExport(base):
        def forward(self, input_ids, attention_mask):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False, return_dict=True).logits

    DecoderExport.__name__ = base.__name__ + "Export"
    return DecoderExport


def randomize_affine(model, seed):
    """Biases ~ N(0, 0.1), norm weights (1-D `weight`s: LayerNorm, RMSNorm) ~ 1 + N(0, 0.1): the
    inits make them 0 and 1, and a lost bias or norm weight would go unnoticed."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith(".weight") and p.dim() == 1:
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)


def decoder_inputs(B=2, T=7, pad=3, seed=2):
    """input_ids, attention_mask [B, T]; the last row right-padded on its last `pad` positions
    (ids 0 there), so no query attends to nothing (left padding would leave fully masked rows,
    whose softmax over finfo.min scores is arbitrary)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, DECODER_VOCAB, (B, T), generator=g, dtype=torch.int64)
    mask = torch.ones(B, T, dtype=torch.int64)
    if pad:
        mask[B - 1, T - pad:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def export_cases():
    """The models exported by both exporters at EXPORT_OPSETS, as dicts: name, what, model,
    inputs, alt (inputs of another batch/sequence size), outputs, axes (legacy dynamic_axes),
    dyn (dynamo dynamic_shapes, as export_dynamo takes them)."""
    import torch
    from torch import nn
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    class Block(nn.Module):
        """ResNet basic block: conv3x3 BN ReLU conv3x3 BN + shortcut (1x1 conv BN when the
        shape changes), ReLU."""

        def __init__(s, cin, cout, stride=1):
            super().__init__()
            s.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            s.b1 = nn.BatchNorm2d(cout)
            s.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            s.b2 = nn.BatchNorm2d(cout)
            s.down = None
            if stride != 1 or cin != cout:
                s.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

        def forward(s, x):
            y = s.b2(s.c2(F.relu(s.b1(s.c1(x)))))
            return F.relu(y + (x if s.down is None else s.down(x)))

    class ResNetUp(nn.Module):
        """x [B,3,16,16] -> seg [B,4,20,20] (decoder with ConvTranspose and Resize),
        logits [B,10] (global pool + Linear)."""

        def __init__(s):
            super().__init__()
            s.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                   nn.ReLU())
            s.layer1 = Block(8, 8)
            s.layer2 = Block(8, 16, 2)
            s.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)  # 8x8 -> 16x16
            s.up2 = nn.ConvTranspose2d(8, 8, 3, 2, 1, output_padding=1, groups=2)  # 16 -> 32
            s.seg = nn.Conv2d(16, 4, 1)
            s.fc = nn.Linear(16, 10)

        def forward(s, x):
            a = s.layer1(s.stem(x))  # 16x16
            b = s.layer2(a)  # 8x8
            near = F.interpolate(b, scale_factor=2.0, mode="nearest")[:, :8]  # 16x16
            down = F.interpolate(s.up2(a), scale_factor=0.5, mode="bilinear",
                                 align_corners=False)  # 32x32 -> 16x16
            seg = s.seg(torch.cat([s.up(b) + near, down], 1))
            seg = F.interpolate(seg, size=(20, 20), mode="bilinear", align_corners=True)
            return seg, s.fc(torch.flatten(F.adaptive_avg_pool2d(b, 1), 1))

    class Tagger(nn.Module):
        """Embedding(128, 16) -> 2-layer bidirectional LSTM(16, hidden 16, batch_first) ->
        Linear(32, 8) per token."""

        def __init__(s):
            super().__init__()
            s.embedding = nn.Embedding(DECODER_VOCAB, 16)
            s.lstm = nn.LSTM(16, 16, num_layers=2, batch_first=True, bidirectional=True)
            s.tags = nn.Linear(32, 8)

        def forward(s, input_ids):
            h, _ = s.lstm(s.embedding(input_ids))
            return s.tags(h)

    cases = []
    dec_axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "logits": {0: "batch", 1: "seq"}}
    dec_dyn = {k: {0: ("batch", {}), 1: ("seq", {"max": 32})}
               for k in ("input_ids", "attention_mask")}
    for name, base, cfg_cls, cfg, what in (
            ("gpt2", GPT2LMHeadModel, GPT2Config, GPT2_CONFIG,
             "transformers GPT2LMHeadModel (tied lm_head), " + json.dumps(GPT2_CONFIG)),
            ("llama", LlamaForCausalLM, LlamaConfig, LLAMA_CONFIG,
             "transformers LlamaForCausalLM (GQA: 4 query, 2 key/value heads; RoPE; RMSNorm; "
             "SiLU MLP), " + json.dumps(LLAMA_CONFIG))):
        torch.manual_seed(0)
        model = decoder_export_class(base)(cfg_cls(**cfg)).eval()
        randomize_affine(model, 1)
        assert model.config._attn_implementation == "eager", model.config._attn_implementation
        cases.append(dict(
            name=name, model=model, outputs=["logits"], axes=dec_axes, dyn=dec_dyn,
            inputs=decoder_inputs(), alt=decoder_inputs(B=3, T=5, pad=2, seed=3),
            what=what + "; random init (seed 0) with biases and norm weights randomized; "
                 "inputs input_ids, attention_mask int64 [batch, seq] (right padding); "
                 "output logits [batch, seq, 128]; use_cache=False"))

    torch.manual_seed(0)
    cnn = ResNetUp()
    randomize_bn(cnn, 1)
    cnn.eval()
    g = torch.Generator().manual_seed(2)
    cases.append(dict(
        name="resnet", model=cnn, outputs=["seg", "logits"],
        axes={"x": {0: "batch"}, "seg": {0: "batch"}, "logits": {0: "batch"}},
        dyn={"x": {0: ("batch", {})}},
        inputs={"x": torch.randn(2, 3, 16, 16, generator=g)},
        alt={"x": torch.randn(1, 3, 16, 16, generator=g)},
        what="hand-written ResNet-style CNN: stem Conv-BN-ReLU, two basic blocks (the second "
             "strided, 1x1 conv shortcut), ConvTranspose2d(16,8,4,s2,p1), grouped "
             "ConvTranspose2d(8,8,3,s2,p1,output_padding 1,groups 2), interpolate nearest x2, "
             "bilinear x0.5 (align_corners False), bilinear to 20x20 (align_corners True), "
             "1x1 Conv head; global average pool + Linear; BN statistics randomized; input x "
             "[batch,3,16,16]; outputs seg [batch,4,20,20], logits [batch,10]"))

    torch.manual_seed(0)
    tagger = Tagger().eval()
    g = torch.Generator().manual_seed(2)
    cases.append(dict(
        name="lstm_tagger", model=tagger, outputs=["logits"],
        axes={"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
        dyn={"input_ids": {0: ("batch", {}), 1: ("seq", {})}},
        inputs={"input_ids": torch.randint(0, DECODER_VOCAB, (2, 7), generator=g)},
        alt={"input_ids": torch.randint(0, DECODER_VOCAB, (3, 11), generator=g)},
        what="Embedding(128,16) -> nn.LSTM(16, 16, num_layers=2, bidirectional=True, "
             "batch_first=True) -> Linear(32, 8); input input_ids int64 [batch, seq]; output "
             "logits [batch, seq, 8]"))
    return cases


class LogCapture:
    """Collects the exporters' log records (torch.onnx, onnxscript: the opset conversion's
    warnings) while exporting, without printing them."""

    NAMES = ("torch.onnx", "onnxscript")

    def __enter__(self):
        import logging
        self.records = []
        capture = self

        class Handler(logging.Handler):
            def emit(self, record):
                capture.records.append(record)

        self.handler = Handler(logging.WARNING)
        self.saved = []
        for n in self.NAMES:
            lg = logging.getLogger(n)
            self.saved.append((lg, lg.level, lg.propagate))
            lg.setLevel(logging.WARNING)
            lg.propagate = False
            lg.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        for lg, level, propagate in self.saved:
            lg.removeHandler(self.handler)
            lg.setLevel(level)
            lg.propagate = propagate

    def messages(self, tmp):
        out = []
        for r in self.records:
            msg = r.getMessage()
            if "torchvision" in msg:
                continue
            if r.exc_info and r.exc_info[1] is not None:
                msg += f" ({type(r.exc_info[1]).__name__}: {r.exc_info[1]})"
            out.append(scrub(msg, tmp))
        return out


def scrub(msg, tmp):
    """An error message without this run's temporary folder, ANSI colours or trailing space."""
    import re
    msg = re.sub(r"\x1b\[[0-9;]*m", "", str(msg)).replace(str(tmp) + os.sep, "")
    return "\n".join(line.rstrip() for line in msg.strip().splitlines())


def exception_summary(e, tmp):
    """The part of an exporter exception that says why (torch's messages are pages long)."""
    text = scrub(e, tmp)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].strip()
        text = text.split("\n\n", 1)[0]
    return f"{type(e).__name__}: {text[:1500]}"


def strip_node_metadata(path):
    """The dynamo exporter's per-node metadata_props (Python stack traces with absolute paths,
    class hierarchies: ~60% of a small graph's bytes) removed; the graph is unchanged."""
    import onnx
    m = onnx.load(str(path))
    for node in m.graph.node:
        del node.metadata_props[:]
    onnx.save_model(m, str(path))


def check_runnable(path, inputs):
    """The checker and onnxruntime accept the file (an exported file that they refuse is an
    exporter failure, not a fixture)."""
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(str(path), full_check=True)
    ort_run(path, inputs, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)


def qdq_reader():
    """quantize_static's calibration data: 8 random padded encoder batches (2 x 9, seeds
    10-17)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{k: v.numpy() for k, v in
                                  encoder_inputs(B=2, T=9, pad=2, seed=10 + i).items()}
                                 for i in range(8)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def io_shapes(inputs, outputs, alt_inputs, alt_outputs):
    """REFERENCE.json's `io`: dtype and shape of every array in FILE.onnx.io.npz."""
    arrays = {}
    for prefix, ins, outs in (("", inputs, outputs), ("alt.", alt_inputs, alt_outputs)):
        arrays.update({f"{prefix}input.{k}": v.numpy() for k, v in ins.items()})
        arrays.update({f"{prefix}output.{k}": v for k, v in outs.items()})
    return {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()}


def build_exports(out, quiet=False):
    """Write fixtures/graph/exports/: every export_cases() model by both exporters at both
    EXPORT_OPSETS, and the QDQ int8 encoder; each FILE.onnx.io.npz holds the inputs and
    onnxruntime's outputs (ORT_DISABLE_ALL); REFERENCE.json records the files and every
    export that failed, and why."""
    import time
    import numpy as np
    import onnx
    import onnxruntime as ort
    import onnxscript
    import torch
    import transformers
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quiet_warnings()
    torch.set_num_threads(1)
    DISABLE_ALL = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(out.iterdir()):
        if p.is_file() and (p.suffix in (".onnx", ".npz", ".data") or
                            p.name in ("REFERENCE.json", "SHA256SUMS")):
            p.unlink()
    reference = {
        "made_by": {"script": REGEN_COMMAND + " --exports-only",
                    "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "onnx": onnx.__version__,
                    "onnxscript": onnxscript.__version__, "onnxruntime": ort.__version__,
                    "numpy": np.__version__,
                    "checked_with": "onnx.checker.check_model(full_check=True); onnxruntime "
                                    "CPUExecutionProvider (ORT_DISABLE_ALL and ORT_ENABLE_ALL) "
                                    f"within {ORT_TOL} of torch on the saved inputs and on a "
                                    "second batch/sequence size (the QDQ encoder: within "
                                    f"{QDQ_VS_FLOAT_REL} x max |output| of the float model, "
                                    "see its entry)"},
        "io_files": "FILE.onnx.io.npz: input.<graph input name>, output.<graph output name> = "
                    "onnxruntime's outputs (CPUExecutionProvider, ORT_DISABLE_ALL, 1 thread); "
                    "alt.input.<name>, alt.output.<name>: the same at a second batch/sequence "
                    "size",
        "exporters": {"legacy": "torch.onnx.export(dynamo=False, opset_version=N, "
                                "dynamic_axes), defaults otherwise (do_constant_folding=True, "
                                "TrainingMode.EVAL)",
                      "dynamo": "torch.onnx.export(dynamo=True, opset_version=N, "
                                "dynamic_shapes, external_data=False), defaults otherwise "
                                "(optimize=True); the nodes' metadata_props (stack traces) "
                                "then removed"},
        "files": {},
        "export_failures": [],
    }
    diffs, timings = {}, {}

    def record(name, path, case, exporter, requested, export_log, settings):
        started = time.time()
        ort_out, ort_alt = ({k: v for k, v in ort_run(path, inp, DISABLE_ALL).items()
                             if k in case["outputs"]} for inp in (case["inputs"], case["alt"]))
        torch_out = dict(zip(case["outputs"], torch_outputs(case["model"], case["inputs"])))
        # onnxruntime matches torch (both levels, two shapes): fails loudly otherwise
        diffs[name] = verify(path, case["model"], case["inputs"], torch_out, case["alt"])
        save_io(out / f"{name}.onnx.io.npz", case["inputs"], ort_out, (case["alt"], ort_alt))
        info = graph_info(path)
        assert [i["name"] for i in info["inputs"]] == list(case["inputs"]), info["inputs"]
        assert [o["name"] for o in info["outputs"]] == case["outputs"], info["outputs"]
        info.update(model=case["name"], exporter=exporter, requested_opset=requested,
                    opset=info["opset_import"]["ai.onnx"], kind="float32",
                    export=settings, exporter_log=export_log, description=case["what"],
                    reference_outputs="onnxruntime ORT_DISABLE_ALL")
        info["io"] = io_shapes(case["inputs"], ort_out, case["alt"], ort_alt)
        reference["files"][f"{name}.onnx"] = info
        timings[name] = timings.get(name, 0.0) + time.time() - started

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for case in export_cases():
            for exporter in EXPORTERS:
                for opset in EXPORT_OPSETS:
                    started = time.time()
                    what = f"{case['name']} {exporter} opset {opset}"
                    raw = tmp / f"{case['name']}_{exporter}{opset}.onnx"
                    failure = {"model": case["name"], "exporter": exporter,
                               "requested_opset": opset}
                    try:
                        with LogCapture() as logs:
                            if exporter == "legacy":
                                export_legacy(case["model"], case["inputs"], raw,
                                              case["outputs"], case["axes"], opset)
                            else:
                                export_dynamo(case["model"], case["inputs"], raw,
                                              case["outputs"], case["dyn"], opset,
                                              external_data=False)
                    except Exception as e:  # recorded: the reason is the fixture
                        failure.update(stage="export", error=exception_summary(e, tmp),
                                       exporter_log=logs.messages(tmp))
                        reference["export_failures"].append(failure)
                        print(f"EXPORT FAILED: {what}: {failure['error']}", file=sys.stderr)
                        continue
                    log = logs.messages(tmp)
                    if exporter == "dynamo":
                        strip_node_metadata(raw)
                    got = {(o.domain or "ai.onnx"): o.version
                           for o in onnx.load(str(raw), load_external_data=False).opset_import}
                    try:
                        check_runnable(raw, case["inputs"])
                    except Exception as e:
                        failure.update(stage="exported file refused by onnx.checker / "
                                             "onnxruntime",
                                       opset_import=got, error=exception_summary(e, tmp),
                                       exporter_log=log)
                        reference["export_failures"].append(failure)
                        print(f"EXPORTED FILE INVALID: {what}: {failure['error']}",
                              file=sys.stderr)
                        continue
                    name = f"{case['name']}_{exporter}_opset{got['ai.onnx']}"
                    assert f"{name}.onnx" not in reference["files"], name
                    path = out / f"{name}.onnx"
                    raw.replace(path)
                    settings = reference["exporters"][exporter].replace("N", str(opset))
                    if got["ai.onnx"] != opset:
                        settings += (f"; asked for opset {opset}, the exporter kept opset "
                                     f"{got['ai.onnx']} (see exporter_log)")
                        reference["export_failures"].append(dict(
                            failure, stage="opset conversion", opset_import=got,
                            error=f"the exported file is opset {got['ai.onnx']}, not {opset}; "
                                  f"kept as {name}.onnx", exporter_log=log))
                    timings[name] = time.time() - started
                    record(name, path, case, exporter, opset, log, settings)
                    if not quiet:
                        print(f"{name}.onnx: {path.stat().st_size} bytes, "
                              f"{timings[name]:.1f} s", flush=True)

        # QDQ int8 encoder: quantize_static over the legacy opset-17 float export
        started = time.time()
        encoder = build_bert("gelu", 2)
        enc_in = encoder_inputs()
        enc_alt = encoder_inputs(B=3, T=11, pad=5, seed=3)
        outs = ["last_hidden_state", "pooler_output"]
        axes = {k: {0: "batch", 1: "seq"} for k in ENCODER_AXES + ("last_hidden_state",)}
        axes["pooler_output"] = {0: "batch"}
        f32 = tmp / "encoder_f32.onnx"
        export_legacy(encoder, enc_in, f32, outs, axes, 17)
        torch_out = dict(zip(outs, torch_outputs(encoder, enc_in)))
        verify(f32, encoder, enc_in, torch_out, enc_alt)  # the float model first
        pre = tmp / "encoder_f32_pre.onnx"
        # symbolic shape inference gives up on transformers 5's mask computation
        # ("Incomplete symbolic shape inference"): ONNX shape inference + ORT's basic
        # optimizations only
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
        name = "encoder_qdq_int8"
        path = out / f"{name}.onnx"
        quantize_static(str(pre), str(path), qdq_reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=list(QDQ_OP_TYPES))
        onnx.checker.check_model(str(path), full_check=True)
        m = onnx.load(str(path))
        inits = {t.name: t for t in m.graph.initializer}
        zero_points = collections.Counter(
            onnx.TensorProto.DataType.Name(inits[n.input[2]].data_type)
            for n in m.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2)
        # int8 activations and weights; int32 only for the Gemm bias (quantized with the
        # product of its input's and its weight's scales, as QDQ specifies)
        assert zero_points["INT8"] > 0 and set(zero_points) <= {"INT8", "INT32"}, zero_points
        per_axis = sum(1 for n in m.graph.node if n.op_type == "DequantizeLinear"
                       and len(n.input) > 1 and n.input[1] in inits
                       and len(inits[n.input[1]].dims) == 1)
        assert per_axis > 0, "no per-channel DequantizeLinear"
        ort_out, ort_alt = ({k: v for k, v in ort_run(path, inp, DISABLE_ALL).items()
                             if k in outs} for inp in (enc_in, enc_alt))
        qdiffs = {}
        for case_name, inp in (("saved", enc_in), ("alt", enc_alt)):
            want = dict(zip(outs, torch_outputs(encoder, inp)))
            plain = ort_run(path, inp, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            fused = ort_run(path, inp, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            for k in outs:
                scale = float(np.abs(want[k]).max())
                for level, got in (("noopt", plain), ("opt", fused)):
                    d = float(np.abs(got[k].astype(np.float64) - want[k]).max()) / scale
                    assert d <= QDQ_VS_FLOAT_REL, \
                        f"{name} {case_name} {level} {k}: int8 vs float relative error {d}"
                    qdiffs[f"{case_name}/{level}/{k} vs float (rel)"] = d
                d = float(np.abs(fused[k].astype(np.float64) - plain[k]).max()) / scale
                assert d <= QDQ_LEVELS_REL, f"{name} {case_name} {k}: ORT levels differ by {d}"
                qdiffs[f"{case_name}/opt vs noopt/{k} (rel)"] = d
        diffs[name] = qdiffs
        save_io(out / f"{name}.onnx.io.npz", enc_in, ort_out, (enc_alt, ort_alt))
        info = graph_info(path)
        info.update(
            model="encoder_qdq", exporter="legacy + onnxruntime.quantization.quantize_static",
            requested_opset=17, opset=info["opset_import"]["ai.onnx"], kind="qdq-int8",
            export="BertModel as encoder.onnx (2 layers, hidden 64, 4 heads, FFN 128, vocab 200, "
                   "erf GELU, random biases/LayerNorm) exported by torch.onnx.export("
                   "dynamo=False, opset_version=17); quant_pre_process(skip_symbolic_shape=True: "
                   "symbolic shape inference is incomplete on the mask subgraph); "
                   "quantize_static(quant_format=QuantFormat.QDQ, activation_type=QInt8, "
                   "weight_type=QInt8, per_channel=True, calibrate_method=MinMax, "
                   f"op_types_to_quantize={list(QDQ_OP_TYPES)}) with 8 calibration batches "
                   "(encoder_inputs(B=2, T=9, pad=2, seed=10..17)). Only those op types: with "
                   "the default set the attention-mask Add (finfo.min) is quantized too, its "
                   "range (~-3.4e38) sets the scale and every score rounds to the same value",
            zero_point_types=dict(zero_points), per_channel_dequantize_nodes=per_axis,
            description="QDQ int8 BERT-shaped encoder (static quantization, int8 activations "
                        "and weights, asymmetric activations, symmetric per-channel weights)",
            reference_outputs="onnxruntime ORT_DISABLE_ALL (Q/DQ evaluated as written, in "
                              "float). ORT_ENABLE_ALL fuses them into QLinearMatMul/QGemm int8 "
                              f"kernels, within {QDQ_LEVELS_REL} x max |output| of that")
        info["io"] = io_shapes(enc_in, ort_out, enc_alt, ort_alt)
        reference["files"][f"{name}.onnx"] = info
        timings[name] = time.time() - started
        if not quiet:
            print(f"{name}.onnx: {path.stat().st_size} bytes, {timings[name]:.1f} s", flush=True)

    (out / "REFERENCE.json").write_bytes(json_bytes(reference))
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())
             if p.is_file() and p.name not in ("SHA256SUMS", "README.md")}
    sums = write_sums(out, files)
    for rel, data in files.items():
        assert len(data) < MAX_EXPORT_FILE_BYTES, f"{rel} is {len(data)} bytes"
    total = sum(len(d) for d in files.values()) + len(sums)
    assert total < MAX_EXPORTS_BYTES, f"{out} is {total} bytes"
    return files, reference, diffs, timings


# ----------------------------------------------------------------------------- report


def describe(path, layer_prefix=None):
    """Op histogram, and (for an encoder) every node of one layer with its wiring."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path), load_external_data=False)
    consts = {}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute:
            a = n.attribute[0]
            if a.name == "value" and a.t.dims in ([], [1]) and a.t.data_location == 0:
                consts[n.output[0]] = numpy_helper.to_array(a.t).reshape(-1)[0].item()
    inits = {t.name: (list(t.dims) or "scalar") for t in m.graph.initializer}

    def label(v):
        if v in consts:
            return f"{v}(={consts[v]!r})"
        if v in inits:
            return f"{v}[init {inits[v]}]"
        return v

    lines = []
    if layer_prefix:
        for n in m.graph.node:
            if n.name.startswith(layer_prefix) and n.op_type != "Constant":
                attrs = ",".join(f"{a.name}={onnx.helper.get_attribute_value(a)}"
                                 for a in n.attribute)
                lines.append(f"  {n.op_type:10s} {n.name}"
                             + (f" <{attrs}>" if attrs else "")
                             + f"\n      in: {', '.join(label(i) for i in n.input)}"
                             + f"\n      out: {', '.join(n.output)}")
    return lines


def compare_npz(a, b, tol=CHECK_TOL):
    import numpy as np
    x, y = np.load(a), np.load(b)
    if sorted(x.files) != sorted(y.files):
        return [f"keys {sorted(x.files)} != {sorted(y.files)}"], 0.0
    bad, worst = [], 0.0
    for k in x.files:
        p, q = x[k], y[k]
        if p.dtype != q.dtype or p.shape != q.shape:
            bad.append(f"{k}: {p.dtype}{list(p.shape)} != {q.dtype}{list(q.shape)}")
        elif p.dtype.kind == "f":
            d = float(np.abs(p.astype(np.float64) - q).max()) if p.size else 0.0
            worst = max(worst, d)
            if not d <= tol:
                bad.append(f"{k}: max abs diff {d:.3g} > {tol}")
        elif not np.array_equal(p, q):
            bad.append(f"{k}: values differ")
    return bad, worst


def is_qdq(rel):
    return "qdq" in rel


def npz_tolerance(rel, path):
    """CHECK_TOL; for a QDQ model's outputs, QDQ_LEVELS_REL x max |output| (another CPU may
    round a value to the other side of a quantization step)."""
    import numpy as np
    if not is_qdq(rel):
        return CHECK_TOL
    io = np.load(path)
    return QDQ_LEVELS_REL * max(float(np.abs(io[k]).max()) for k in io.files
                                if k.startswith(("output.", "alt.output.")))


def run_committed(path, exports=False):
    """onnxruntime on PATH with the inputs of PATH.io.npz must give its outputs: within ORT_TOL
    (fixtures/graph: torch's outputs, run at ORT_ENABLE_ALL; exports/: onnxruntime's own at
    ORT_DISABLE_ALL, a QDQ model within QDQ_LEVELS_REL x max |output|)."""
    import numpy as np
    import onnxruntime as ort
    io = np.load(str(path) + ".io.npz")
    level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if exports
             else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    for prefix in ("", "alt."):
        inputs = {k[len(prefix + "input."):]: io[k] for k in io.files
                  if k.startswith(prefix + "input.")}
        if not inputs:
            continue
        got = ort_run(path, inputs, level)
        for k in io.files:
            if k.startswith(prefix + "output."):
                tol = (QDQ_LEVELS_REL * float(np.abs(io[k]).max()) if is_qdq(path.name)
                       else ORT_TOL)
                d = float(np.abs(got[k[len(prefix + "output."):]].astype(np.float64)
                                 - io[k]).max())
                assert d <= tol, f"{k}: max abs diff {d} > {tol}"


def check_folder(out, regen, strict, bad, notes, exports):
    """Compare folder OUT (its SHA256SUMS, its files) with the regenerated folder REGEN."""
    sums_path = out / "SHA256SUMS"
    if not sums_path.is_file():
        bad.append(f"missing {sums_path}")
        return
    expected = read_sums(sums_path)
    got = read_sums(regen / "SHA256SUMS")
    where = f"{out.name}/" if exports else ""
    for rel in sorted(set(expected) | set(got)):
        path = out / rel
        actual = sha256(path.read_bytes()) if path.is_file() else None
        if actual != expected.get(rel):
            bad.append(f"committed {where}{rel}: {actual} != recorded {expected.get(rel)}")
        if expected.get(rel) == got.get(rel):
            continue
        msg = f"regenerated {where}{rel}: {got.get(rel)} != recorded {expected.get(rel)}"
        if strict or rel not in expected or rel not in got:
            bad.append(msg)
        elif rel.endswith(".npz") and path.is_file():
            problems, worst = compare_npz(path, regen / rel, npz_tolerance(rel, path))
            if problems:
                bad += [msg] + [f"  {p}" for p in problems]
            else:
                notes.append(f"{msg}\n    but its numbers agree (max abs diff {worst:.3g})")
        elif rel.endswith((".onnx", ".onnx.data")):
            notes.append(f"{msg}\n    (REFERENCE.json, i.e. its structure, still matches, and "
                         "onnxruntime runs the committed file to its npz outputs)")
        else:
            bad.append(msg)
    present = {p.name for p in out.iterdir() if p.is_file()}
    extra = sorted(present - set(expected) - {"SHA256SUMS", "README.md"})
    if extra:
        bad.append(f"files in {out} not in SHA256SUMS: {extra}")
    for rel in sorted(expected):  # the committed graphs still compute their committed outputs
        if rel.endswith(".onnx") and (out / rel).is_file() and (out / (rel + ".io.npz")).is_file():
            try:
                run_committed(out / rel, exports)
            except Exception as e:
                bad.append(f"committed {where}{rel} vs {rel}.io.npz under onnxruntime: {e}")


def check(out, strict, exports_only=False):
    """Regenerate fixtures/graph/ (unless EXPORTS_ONLY) and fixtures/graph/exports/ into a
    temporary folder and compare them with the committed ones."""
    bad, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        regen = Path(tmp) / "graph"
        if not exports_only:
            build(regen, quiet=True)
            check_folder(out, regen, strict, bad, notes, False)
        build_exports(regen / EXPORTS_SUBDIR, quiet=True)
        check_folder(out / EXPORTS_SUBDIR, regen / EXPORTS_SUBDIR, strict, bad, notes, True)
    if notes:
        print("differences tolerated (use --strict to fail on them):", *notes, sep="\n  ")
    if bad:
        import onnx
        import torch
        import transformers
        print(f"CHECK FAILED (torch {torch.__version__}, transformers "
              f"{transformers.__version__}, onnx {onnx.__version__}; the exporters' output "
              "depends on these versions):", *bad, sep="\n  ", file=sys.stderr)
        return 1
    what = (f"{out / EXPORTS_SUBDIR}" if exports_only
            else f"{out} and {out / EXPORTS_SUBDIR}")
    print(f"check OK: {what} match the regenerated fixtures"
          + (" (see the tolerated differences above)" if notes else ""))
    return 0


# ----------------------------------------------------------------------------- MiniLM


def export_minilm(model_dir, onnx_path):
    """all-MiniLM-L6-v2 -> ONNX (legacy exporter, opset 14) + ONNX_PATH.io.npz."""
    import numpy as np
    import onnx
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModel
    quiet_warnings()
    torch.set_num_threads(1)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        sys.exit(f"error: {model_dir} has no config.json (run .venv/bin/python "
                 "scripts/fetch_minilm.py first)")
    BertExport = bert_export_class()
    BertExport.outputs = ("last_hidden_state",)
    model = BertExport.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    plain = AutoModel.from_pretrained(str(model_dir)).eval()  # what make_bert_reference runs
    ref = load_file(str(MINILM_REFERENCE))
    inputs = {"input_ids": torch.from_numpy(ref["input_ids"]),
              "attention_mask": torch.from_numpy(ref["attention_mask"]),
              "token_type_ids": torch.zeros_like(torch.from_numpy(ref["input_ids"]))}
    with torch.no_grad():
        hidden = plain(**inputs).last_hidden_state.contiguous().numpy()
    real = ref["attention_mask"].astype(bool)
    d_ref = float(np.abs(hidden - ref["last_hidden_state"])[real].max())
    assert d_ref <= CHECK_TOL, f"transformers vs {MINILM_REFERENCE.name}: {d_ref}"
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    axes = {k: {0: "batch", 1: "seq"} for k in ENCODER_AXES + ("last_hidden_state",)}
    export_legacy(model, inputs, onnx_path, ["last_hidden_state"], axes, 14)
    io_path = Path(str(onnx_path) + ".io.npz")
    save_io(io_path, inputs, {"last_hidden_state": hidden})
    g = torch.Generator().manual_seed(7)
    alt = {"input_ids": torch.randint(1000, 30000, (3, 20), generator=g, dtype=torch.int64),
           "attention_mask": torch.ones(3, 20, dtype=torch.int64),
           "token_type_ids": torch.zeros(3, 20, dtype=torch.int64)}
    alt["attention_mask"][2, 12:] = 0
    diffs = verify(onnx_path, model, inputs, {"last_hidden_state": hidden}, alt)
    info = graph_info(onnx_path)
    print(f"{onnx_path}: {onnx_path.stat().st_size} bytes, ir_version {info['ir_version']}, "
          f"opsets {info['opset_import']}, {info['nodes']} nodes, "
          f"{info['initializers']} initializers")
    print(f"{io_path}: {io_path.stat().st_size} bytes; transformers vs "
          f"{MINILM_REFERENCE.name} (real tokens) max abs {d_ref:.3g}")
    print("onnxruntime vs torch max abs: "
          + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    print("op types:", json.dumps(info["op_types"]))
    return 0


# ----------------------------------------------------------------------------- main


def main():
    pin_hash_seed()
    ap = fixture_parser(__doc__, DEFAULT_OUT)
    ap.add_argument("--strict", action="store_true",
                    help="with --check: fail on any byte difference, not only on numbers")
    ap.add_argument("--minilm", action="store_true",
                    help="export all-MiniLM-L6-v2 (not committed) instead of the fixtures")
    ap.add_argument("--model", type=Path, default=DEFAULT_MINILM,
                    help="the all-MiniLM-L6-v2 folder (scripts/fetch_minilm.py)")
    ap.add_argument("--minilm-out", type=Path,
                    help="MiniLM ONNX path (default MODEL/model.onnx)")
    ap.add_argument("--describe", type=Path, metavar="ONNX",
                    help="print the op histogram of ONNX and, with --prefix, the wiring of "
                         "every non-Constant node whose name starts with it; writes nothing")
    ap.add_argument("--prefix", default=None, help="with --describe, e.g. /encoder/layer.0/")
    ap.add_argument("--exports-only", action="store_true",
                    help=f"(re)write or --check only OUT/{EXPORTS_SUBDIR}/ (the real exports), "
                         "leaving the other fixtures alone")
    args = ap.parse_args()
    if args.describe:
        info = graph_info(args.describe)
        print(f"{args.describe}: ir_version {info['ir_version']}, opsets "
              f"{info['opset_import']}, {info['nodes']} nodes")
        print("op types: " + ", ".join(f"{k} {v}" for k, v in info["op_types"].items()))
        print("\n".join(describe(args.describe, args.prefix)))
        return 0
    if args.minilm:
        return export_minilm(args.model, args.minilm_out or args.model / "model.onnx")
    if args.check:
        return check(args.out, args.strict, args.exports_only)
    if not args.exports_only:
        report_build(args.out)
    report_exports(args.out / EXPORTS_SUBDIR)
    return 0


def report_exports(out):
    import time
    started = time.time()
    files, reference, diffs, timings = build_exports(out)
    total = sum(len(d) for d in files.values()) + (out / "SHA256SUMS").stat().st_size
    print(f"\ntotal: {total} bytes in {len(files) + 1} files in {out}, "
          f"{time.time() - started:.0f} s")
    for name, info in reference["files"].items():
        stem = name[:-len(".onnx")]
        worst = max(diffs[stem].values())
        print(f"{name}: {info['kind']}, opsets {info['opset_import']}, {info['nodes']} nodes; "
              f"onnxruntime vs torch max {'rel' if info['kind'] != 'float32' else 'abs'} "
              f"{worst:.3g}; {timings[stem]:.1f} s")
        print("  op types: " + ", ".join(f"{k} {v}" for k, v in info["op_types"].items()))
    for f in reference["export_failures"]:
        print(f"\nnot as asked: {f['model']} {f['exporter']} opset {f['requested_opset']} "
              f"({f['stage']}): {f['error']}")
        for line in f.get("exporter_log", []):
            print(f"  log: {line[:400]}")


def report_build(out):
    files, reference, diffs = build(out)
    for rel in sorted(files):
        print(f"{len(files[rel]):8d}  {rel}")
    total = sum(len(d) for d in files.values()) + (out / "SHA256SUMS").stat().st_size
    print(f"total: {total} bytes in {len(files) + 1} files in {out}")
    print(f"erf vs tanh GELU on the encoder: {reference['gelu_erf_vs_tanh_max_abs']}")
    for name, info in reference["files"].items():
        stem = name[:-len(".onnx")]
        worst = max(diffs[stem].values())
        print(f"\n{name}: ir_version {info['ir_version']}, opsets {info['opset_import']}, "
              f"{info['nodes']} nodes, {info['initializers']} initializers "
              f"({info['initializers_external']} external {info['external_data_files']}); "
              f"onnxruntime vs torch max abs {worst:.3g}")
        print("  op types: " + ", ".join(f"{k} {v}" for k, v in info["op_types"].items()))
    if reference.get("encoder_opset18") != "exported":
        print(f"\nencoder_opset18: {reference['encoder_opset18']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
