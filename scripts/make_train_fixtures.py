#!/usr/bin/env python3
"""Write the training reference runs and metric references under fixtures/train/ for ferry-train.

Four short training runs made by real PyTorch (CPU, float32, torch.use_deterministic_algorithms,
one intra-op thread, fixed seeds), each saved as
    <case>.init.safetensors     state_dict before the first step (names as in torch)
    <case>.batches.safetensors  ids.{k} int64 [B,T], mask.{k} uint8 [B,T] (1 = token, 0 = pad),
                                labels.{k} int64 [B] for micro-batch k = 0, 1, ... in the order
                                they were used (step s uses micro-batches s*A .. s*A+A-1 with A
                                the accumulation count), plus logits0 float32 [B,C] (the
                                initial model's logits on micro-batch 0) for bag_adamw and
                                transformer_adamw
    <case>.final.safetensors    state_dict after the last step
and REFERENCE.json: per case the model, the hyperparameters, the description, and per optimizer
step `loss` (mean of the micro-batch losses of the step, undivided), `micro_losses`,
`grad_norm` (total L2 norm of the accumulated gradient before clipping, as returned by
clip_grad_norm_; torch.nn.utils.get_total_norm where there is no clipping) and `lr` (the
learning rate the step ran with).

metrics.json holds sacrebleu's chrF, chrF++ and BLEU (corpus and per sentence, with the
statistics behind them) for twelve hypothesis/reference pairs in English, German, French,
Russian, Greek and Turkish, one of them an empty hypothesis and one identical to its reference.

Usage (needs torch, safetensors, sacrebleu; see scripts/requirements-fixtures.txt):
    .venv/bin/python scripts/make_train_fixtures.py           # (re)write fixtures/train/
    .venv/bin/python scripts/make_train_fixtures.py --check   # regenerate into a temp dir and
                                                              # compare with fixtures/train/SHA256SUMS
Options:
    --out DIR      write somewhere other than fixtures/train/

Every file is a pure function of this script and of the torch, safetensors and sacrebleu
versions (recorded in REFERENCE.json and metrics.json): safetensors files carry no metadata
(whose key order would not be stable), JSON keys are in a fixed order and floats in
Python's shortest float repr. Before writing, every run is replayed from the saved init and
batches files and must end bit-identical to the saved final state, and the initial logits are
checked against an independent NumPy forward pass (float64) of each model.
"""
import math
import platform
import shutil
import sys
from pathlib import Path

from ferry_scripts import check_against_sums, fixture_parser, json_bytes, write_sums

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "fixtures" / "train"
REGEN_COMMAND = ".venv/bin/python scripts/make_train_fixtures.py"

CASES = {
    "bag_adamw": {
        "description": "bag-of-embeddings classifier (the seed MultiLanguageModel), AdamW, "
                       "linear warmup 3 then linear decay to 0 at step 10 (LambdaLR, factor 0 "
                       "at step 0), clip_grad_norm_ 1.0, cross entropy with label smoothing "
                       "0.1, one micro-batch per step",
        "model": "bag", "V": 64, "D": 16, "C": 5, "B": 8, "T": 12,
        "optimizer": {"name": "AdamW", "lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8,
                      "weight_decay": 0.01, "amsgrad": False, "foreach": False},
        "schedule": {"name": "linear_with_warmup", "warmup": 3, "total": 10},
        "clip": 1.0, "label_smoothing": 0.1, "accum": 1, "steps": 10,
        "seed": 1001, "logits0": True,
    },
    "bag_sgd_accum": {
        "description": "bag-of-embeddings classifier, SGD with momentum 0.9 (not Nesterov) and "
                       "weight decay 1e-4, constant LR, no clipping, plain cross entropy "
                       "(nll_loss(log_softmax(logits))), gradient accumulation over 2 "
                       "micro-batches (each micro loss divided by 2 before backward)",
        "model": "bag", "V": 64, "D": 16, "C": 5, "B": 8, "T": 12,
        "optimizer": {"name": "SGD", "lr": 0.5, "momentum": 0.9, "dampening": 0.0,
                      "weight_decay": 1e-4, "nesterov": False, "foreach": False},
        "schedule": {"name": "constant"},
        "clip": None, "label_smoothing": 0.0, "accum": 2, "steps": 6,
        "seed": 1002, "logits0": False,
    },
    "transformer_adamw": {
        "description": "transformer encoder classifier (post-norm, relu, dropout 0, key "
                       "padding mask, masked mean pooling), AdamW, cosine schedule with warmup "
                       "2 over 8 steps (factor 0 at step 0), clip_grad_norm_ 0.5, no label "
                       "smoothing",
        "model": "transformer", "V": 50, "P": 16, "D": 16, "H": 2, "F": 32, "L": 2, "C": 4,
        "norm_first": False, "activation": "relu", "B": 6, "T": 10,
        "optimizer": {"name": "AdamW", "lr": 3e-3, "betas": [0.9, 0.999], "eps": 1e-8,
                      "weight_decay": 0.01, "amsgrad": False, "foreach": False},
        "schedule": {"name": "cosine_with_warmup", "warmup": 2, "total": 8},
        "clip": 0.5, "label_smoothing": 0.0, "accum": 1, "steps": 8,
        "seed": 1003, "logits0": True,
    },
    "transformer_prenorm_gelu": {
        "description": "transformer encoder classifier as transformer_adamw but pre-norm "
                       "(norm_first=True) with exact (erf) GELU, AdamW at constant LR 3e-3, "
                       "no clipping",
        "model": "transformer", "V": 50, "P": 16, "D": 16, "H": 2, "F": 32, "L": 2, "C": 4,
        "norm_first": True, "activation": "gelu", "B": 6, "T": 10,
        "optimizer": {"name": "AdamW", "lr": 3e-3, "betas": [0.9, 0.999], "eps": 1e-8,
                      "weight_decay": 0.01, "amsgrad": False, "foreach": False},
        "schedule": {"name": "constant"},
        "clip": None, "label_smoothing": 0.0, "accum": 1, "steps": 5,
        "seed": 1004, "logits0": False,
    },
}

MATH_NOTES = {
    "bag_forward": "e = embedding(ids) [B,T,D]; m = mask[...,None].float(); "
                   "x = (e*m).sum(1) / m.sum(1).clamp(min=1); logits = fc(x) = x @ W.T + b",
    "transformer_forward": "x = tok_embed(ids) + pos_embed(arange(T))[None]; for each layer "
                           "(post-norm): x = norm1(x + sa(x)); x = norm2(x + ff(x)); (pre-norm): "
                           "x = x + sa(norm1(x)); x = x + ff(norm2(x)); no final norm; "
                           "sa = nn.MultiheadAttention: [q|k|v] = x @ in_proj_weight.T + "
                           "in_proj_bias (rows 0:D q, D:2D k, 2D:3D v), heads of D/H, "
                           "softmax(q k^T / sqrt(D/H) with -inf at keys where mask == 0) v, "
                           "concat heads, out_proj; ff = linear2(act(linear1(x))); LayerNorm "
                           "eps 1e-5 (biased variance); then masked mean pooling as in bag "
                           "and head. Padded query positions are computed but pooled out",
    "cross_entropy": "mean over the batch of (1-ls) * -log p[label] + ls * mean_c(-log p[c]) "
                     "(torch CrossEntropyLoss(label_smoothing=ls), p = softmax(logits))",
    "adamw": "torch.optim.AdamW, per step t = 1, 2, ...: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; "
             "v = b2*v + (1-b2)*g*g; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)",
    "sgd": "torch.optim.SGD: g += wd*p; buf = g at the first step, else buf = momentum*buf + g "
           "(dampening 0); p -= lr*buf",
    "clip": "total = sqrt(sum of squared L2 norms of all grads); if clipping, every grad *= "
            "min(1, max_norm / (total + 1e-6)); grad_norm records total",
    "linear_with_warmup": "LambdaLR factor(s) = s/warmup if s < warmup else "
                          "max(0, (total-s)/max(1, total-warmup)); step s runs with lr*factor(s); "
                          "scheduler.step() after each optimizer step",
    "cosine_with_warmup": "LambdaLR factor(s) = s/warmup if s < warmup else "
                          "max(0, 0.5*(1 + cos(pi*(s-warmup)/(total-warmup))))",
    "warmup_step0": "with factor 0 at step 0 the weights do not change at step 0 (AdamW's decay "
                    "p *= 1 - 0*wd and its update are both 0), but AdamW's m, v and step count "
                    "do advance: step 1 uses t = 2 in the bias corrections and m, v already hold "
                    "step 0's gradient",
    "accumulation": "step s runs micro-batches s*A .. s*A+A-1; each micro loss / A is "
                    "backpropagated (grads add up); `loss` is the mean of the undivided micro "
                    "losses, `grad_norm` the norm of the summed gradient",
    "batches": "ids uniform in [1, V) for tokens, 0 for pad; each row has its own length in "
               "[2, T] (one row of each micro-batch has length T), right-padded; labels uniform "
               "in [0, C)",
}

METRIC_PAIRS = [
    # (lang, hypothesis, reference); NFC strings
    ("en", "The cat sat on the mat.", "The cat is sitting on the mat."),
    ("en", "He paid $1,000 for a 3.5-inch e-mail client, didn't he?",
     "He paid $1,000 for a 3.5-inch email client, did he not?"),
    ("de", "Die Würde des Menschen ist unantastbar.", "Die Würde des Menschen ist unverletzlich."),
    ("de", "Straßenbahnhaltestelle am Fluss: „Hier aussteigen!“",
     "Die Straßenbahnhaltestelle liegt am Fluss."),
    ("fr", "L'homme est né libre, et partout il est dans les fers.",
     "L’homme est né libre, et partout il est dans les fers."),
    ("fr", "Où est la bibliothèque ? Elle est fermée.", "Où se trouve la bibliothèque ? Elle est close."),
    ("ru", "Все люди рождаются свободными и равными в своём достоинстве и правах.",
     "Все люди рождаются свободными и равными в своем достоинстве и правах."),
    ("ru", "Быстрая коричневая лиса прыгает через ленивую собаку.",
     "Быстрая бурая лиса перепрыгивает через ленивого пса."),
    ("el", "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια.",
     "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα."),
    ("tr", "İstanbul'da ılık bir sonbahar günüydü; çocuklar ağaçların altında oynuyordu.",
     "İstanbul'da ılıman bir sonbahar günüydü, çocuklar ağaçların altında oynadılar."),
    ("en", "", "This reference has no matching hypothesis at all."),
    ("de", "Guten Morgen, wie geht es Ihnen heute?", "Guten Morgen, wie geht es Ihnen heute?"),
]


# ----------------------------------------------------------------------------- models


def make_models():
    import torch
    from torch import nn

    class Bag(nn.Module):
        def __init__(s, V, D, C):
            super().__init__()
            s.embedding = nn.Embedding(V, D)
            s.fc = nn.Linear(D, C)

        def forward(s, ids, mask):
            e = s.embedding(ids)
            m = mask.unsqueeze(-1).float()
            x = (e * m).sum(1) / m.sum(1).clamp(min=1)
            return s.fc(x)

    class Classifier(nn.Module):
        def __init__(s, V, P, D, H, F, L, C, norm_first=False, activation="relu"):
            super().__init__()
            s.tok_embed = nn.Embedding(V, D)
            s.pos_embed = nn.Embedding(P, D)
            layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation=activation,
                                               batch_first=True, norm_first=norm_first)
            s.encoder = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
            s.head = nn.Linear(D, C)

        def forward(s, ids, mask):
            x = s.tok_embed(ids) + s.pos_embed(torch.arange(ids.shape[1]))[None]
            x = s.encoder(x, src_key_padding_mask=(mask == 0))
            m = mask.unsqueeze(-1).float()
            x = (x * m).sum(1) / m.sum(1).clamp(min=1)
            return s.head(x)

    return Bag, Classifier


def build_model(case):
    import torch
    Bag, Classifier = make_models()
    torch.manual_seed(case["seed"])
    if case["model"] == "bag":
        return Bag(case["V"], case["D"], case["C"])
    return Classifier(case["V"], case["P"], case["D"], case["H"], case["F"], case["L"],
                      case["C"], norm_first=case["norm_first"], activation=case["activation"])


def expected_keys(case):
    if case["model"] == "bag":
        return ["embedding.weight", "fc.weight", "fc.bias"]
    keys = ["tok_embed.weight", "pos_embed.weight"]
    for i in range(case["L"]):
        p = f"encoder.layers.{i}."
        keys += [p + "self_attn.in_proj_weight", p + "self_attn.in_proj_bias",
                 p + "self_attn.out_proj.weight", p + "self_attn.out_proj.bias",
                 p + "linear1.weight", p + "linear1.bias", p + "linear2.weight",
                 p + "linear2.bias", p + "norm1.weight", p + "norm1.bias",
                 p + "norm2.weight", p + "norm2.bias"]
    return keys + ["head.weight", "head.bias"]


def make_batches(case):
    """Micro-batches [(ids, mask, labels)], from a generator seeded with the case seed + 1."""
    import torch
    g = torch.Generator().manual_seed(case["seed"] + 1)
    B, T, V, C = case["B"], case["T"], case["V"], case["C"]
    out = []
    for _ in range(case["steps"] * case["accum"]):
        # distinct lengths: T for one row, B-1 distinct others from [2, T), rows shuffled
        others = (torch.randperm(T - 2, generator=g)[:B - 1] + 2).tolist()
        assert len(others) == B - 1, "need T - 2 >= B - 1 for distinct lengths"
        lens = [T] + others
        lens = [lens[i] for i in torch.randperm(B, generator=g).tolist()]
        ids = torch.randint(1, V, (B, T), generator=g, dtype=torch.int64)
        mask = (torch.arange(T)[None, :] < torch.tensor(lens)[:, None]).to(torch.uint8)
        ids = ids * mask.to(torch.int64)
        labels = torch.randint(0, C, (B,), generator=g, dtype=torch.int64)
        out.append((ids, mask, labels))
    return out


def lr_factor(sched, s):
    if sched["name"] == "constant":
        return 1.0
    w, total = sched["warmup"], sched["total"]
    if s < w:
        return float(s) / float(max(1, w))
    if sched["name"] == "linear_with_warmup":
        return max(0.0, float(total - s) / float(max(1, total - w)))
    progress = float(s - w) / float(max(1, total - w))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(case, model, batches):
    """Runs the case; returns (per-step records, logits of micro-batch 0 before any update,
    params after step 0)."""
    import torch
    import torch.nn.functional as F
    o = case["optimizer"]
    params = list(model.parameters())
    if o["name"] == "AdamW":
        opt = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                weight_decay=o["weight_decay"], amsgrad=o["amsgrad"],
                                foreach=o["foreach"])
    else:
        opt = torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"],
                              dampening=o["dampening"], weight_decay=o["weight_decay"],
                              nesterov=o["nesterov"], foreach=o["foreach"])
    sched = None
    if case["schedule"]["name"] != "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(case["schedule"], s))
    if case["label_smoothing"]:
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=case["label_smoothing"])
    else:
        loss_fn = lambda logits, y: F.nll_loss(F.log_softmax(logits, dim=-1), y)
    model.train()
    steps, logits0, after0 = [], None, None
    A = case["accum"]
    for s in range(case["steps"]):
        opt.zero_grad(set_to_none=True)
        micro = []
        for k in range(s * A, s * A + A):
            ids, mask, labels = batches[k]
            logits = model(ids, mask)
            if k == 0:
                logits0 = logits.detach().clone()
            loss = loss_fn(logits, labels)
            micro.append(loss.item())
            (loss / A if A > 1 else loss).backward()
        grads = [p.grad for p in params if p.grad is not None]
        if case["clip"] is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, case["clip"])
        else:
            norm = torch.nn.utils.get_total_norm(grads)
        lr = opt.param_groups[0]["lr"]
        assert abs(lr - o["lr"] * lr_factor(case["schedule"], s)) <= 1e-12 * o["lr"], (s, lr)
        opt.step()
        if sched is not None:
            sched.step()
        if s == 0:
            after0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
        steps.append({"step": s, "lr": lr, "loss": sum(micro) / len(micro),
                      "micro_losses": micro, "grad_norm": norm.item()})
    return steps, logits0, after0


# ------------------------------------------------------------------- NumPy forward check


def np_forward(case, sd, ids, mask):
    """Independent float64 NumPy forward pass of either model."""
    import numpy as np
    w = {k: v.double().numpy() for k, v in sd.items()}
    ids, mask = ids.numpy(), mask.numpy().astype(np.float64)
    m = mask[..., None]

    def pool_head(x, name):
        x = (x * m).sum(1) / np.maximum(m.sum(1), 1.0)
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    if case["model"] == "bag":
        return pool_head(w["embedding.weight"][ids], "fc")
    D, H = case["D"], case["H"]
    Dh = D // H
    B, T = ids.shape
    x = w["tok_embed.weight"][ids] + w["pos_embed.weight"][np.arange(T)][None]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w[p + ".weight"] + w[p + ".bias"]

    def act(x):
        if case["activation"] == "relu":
            return np.maximum(x, 0.0)
        erf = np.vectorize(math.erf)
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

    def sa(x, p):
        qkv = x @ w[p + "in_proj_weight"].T + w[p + "in_proj_bias"]
        q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(B, T, H, Dh).transpose(0, 2, 1, 3)
                   for i in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(Dh)
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        att = scores / scores.sum(-1, keepdims=True)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
        return o @ w[p + "out_proj.weight"].T + w[p + "out_proj.bias"]

    def ff(x, p):
        h = act(x @ w[p + "linear1.weight"].T + w[p + "linear1.bias"])
        return h @ w[p + "linear2.weight"].T + w[p + "linear2.bias"]

    for i in range(case["L"]):
        p = f"encoder.layers.{i}."
        if case["norm_first"]:
            x = x + sa(ln(x, p + "norm1"), p + "self_attn.")
            x = x + ff(ln(x, p + "norm2"), p)
        else:
            x = ln(x + sa(x, p + "self_attn."), p + "norm1")
            x = ln(x + ff(x, p), p + "norm2")
    return pool_head(x, "head")


# ----------------------------------------------------------------------------- build


def run_case(name, case):
    import numpy as np
    import torch
    model = build_model(case)
    keys = list(model.state_dict().keys())
    assert keys == expected_keys(case), f"{name}: unexpected state_dict keys {keys}"
    assert not list(model.named_buffers()), f"{name}: model has buffers"
    init = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    batches = make_batches(case)
    steps, logits0, after0 = train(case, model, batches)
    final = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

    ref_logits = np_forward(case, init, *batches[0][:2])
    err = float(np.abs(ref_logits - logits0.double().numpy()).max())
    assert err < 1e-5, f"{name}: torch logits0 vs NumPy forward differ by {err}"
    batch_tensors = {}
    for k, (ids, mask, labels) in enumerate(batches):
        assert (mask.sum(1) >= 2).all() and (ids[mask == 0] == 0).all()
        assert (ids[mask == 1] >= 1).all()
        batch_tensors[f"ids.{k}"] = ids.contiguous()
        batch_tensors[f"mask.{k}"] = mask.contiguous()
        batch_tensors[f"labels.{k}"] = labels.contiguous()
    if case["logits0"]:
        batch_tensors["logits0"] = logits0.contiguous()
    step0_unchanged = all(torch.equal(init[k], after0[k]) for k in init)
    if case["schedule"]["name"] != "constant":
        assert step0_unchanged, f"{name}: step 0 with lr 0 changed the weights"
    changed = {k: not torch.equal(init[k], final[k]) for k in init}
    info = {
        "description": case["description"],
        "model": {k: case[k] for k in ("model", "V", "P", "D", "H", "F", "L", "C",
                                       "norm_first", "activation") if k in case},
        "batch": {"B": case["B"], "T": case["T"], "micro_batches": len(batches),
                  "accum": case["accum"],
                  "row_lengths": [b[1].sum(1).tolist() for b in batches]},
        "optimizer": case["optimizer"],
        "schedule": case["schedule"],
        "clip_grad_norm": case["clip"],
        "loss": ({"name": "CrossEntropyLoss", "label_smoothing": case["label_smoothing"]}
                 if case["label_smoothing"] else {"name": "nll_loss(log_softmax(logits))"}),
        "steps": case["steps"],
        "seed": case["seed"],
        "param_order": keys,
        "shapes": {k: list(v.shape) for k, v in init.items()},
        "step0_params_unchanged": step0_unchanged,
        "params_changed_by_training": changed,
        "logits0_vs_numpy_float64_max_abs": err,
        "history": steps,
    }
    return init, batch_tensors, final, info


def replay(name, case, init, batch_tensors, final):
    """Train again from the saved tensors alone and require a bit-identical final state."""
    import torch
    model = build_model(case)
    model.load_state_dict(init)
    n = case["steps"] * case["accum"]
    batches = [(batch_tensors[f"ids.{k}"], batch_tensors[f"mask.{k}"],
                batch_tensors[f"labels.{k}"]) for k in range(n)]
    train(case, model, batches)
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k]), f"{name}: replay differs at {k}"


def metrics():
    import sacrebleu
    from sacrebleu.metrics import BLEU, CHRF
    hyps = [h for _, h, _ in METRIC_PAIRS]
    refs = [r for _, _, r in METRIC_PAIRS]
    chrf, chrfpp, bleu = CHRF(), CHRF(word_order=2), BLEU()
    sbleu = BLEU(effective_order=True)  # what sacrebleu.sentence_bleu uses

    def bleu_fields(s):
        return {"score": s.score, "counts": s.counts, "totals": s.totals,
                "precisions": s.precisions, "bp": s.bp, "sys_len": s.sys_len,
                "ref_len": s.ref_len}

    c_chrf = chrf.corpus_score(hyps, [refs])
    c_chrfpp = chrfpp.corpus_score(hyps, [refs])
    c_bleu = bleu.corpus_score(hyps, [refs])
    sentences = []
    for lang, h, r in METRIC_PAIRS:
        sb = sacrebleu.sentence_bleu(h, [r])
        sc = sacrebleu.sentence_chrf(h, [r])
        scpp = sacrebleu.sentence_chrf(h, [r], word_order=2)
        assert abs(sb.score - sbleu.sentence_score(h, [r]).score) < 1e-12
        sentences.append({
            "lang": lang, "hyp": h, "ref": r,
            "chrf": sc.score, "chrf_pp": scpp.score,
            "chrf_stats": chrf._extract_corpus_statistics([h], [[r]])[0],
            "chrf_pp_stats": chrfpp._extract_corpus_statistics([h], [[r]])[0],
            "bleu": bleu_fields(sb),
            "bleu_tokens": {"hyp": bleu._preprocess_segment(h).split(),
                            "ref": bleu._preprocess_segment(r).split()},
        })
    # identical pair: chrF is exactly 100; BLEU is 100 * exp(mean of log 1.0 ...) computed in
    # float64 by sacrebleu, which comes out as 100.00000000000004, not 100.0
    assert sentences[-1]["chrf"] == 100.0 and abs(sentences[-1]["bleu"]["score"] - 100) < 1e-9
    assert sentences[-2]["chrf"] == 0.0 and sentences[-2]["bleu"]["score"] == 0.0
    return {
        "made_by": {"script": REGEN_COMMAND, "python": platform.python_version(),
                    "sacrebleu": sacrebleu.__version__},
        "notes": {
            "pairs": "one reference per hypothesis; strings are NFC UTF-8",
            "chrf": "sacrebleu CHRF() defaults: chrF2, char_order 6, word_order 0, beta 2, "
                    "whitespace removed, case kept; corpus score = F-score of the statistics "
                    "summed over sentences (not the mean of sentence scores)",
            "chrf_pp": "CHRF(word_order=2); sentence scores via "
                       "sacrebleu.sentence_chrf(h, [r], word_order=2)",
            "chrf_stats": "per sentence, for char n = 1..char_order then word n = "
                          "1..word_order: [hyp n-grams, ref n-grams, matching n-grams] "
                          "flattened (sacrebleu CHRF._extract_corpus_statistics)",
            "bleu": "corpus: BLEU() defaults (tokenize 13a, smooth exp, max order 4, "
                    "effective_order False); sentence: sacrebleu.sentence_bleu(h, [r]), "
                    "which uses effective_order=True (signature eff:yes); bp and precisions "
                    "as sacrebleu reports them (score and precisions in percent)",
            "bleu_tokens": "the 13a tokenization sacrebleu applies (BLEU._preprocess_segment)",
        },
        "signatures": {
            "chrf": chrf.get_signature().format(),
            "chrf_pp": chrfpp.get_signature().format(),
            "bleu": bleu.get_signature().format(),
            "sentence_bleu": sbleu.get_signature().format(),
        },
        "corpus": {
            "chrf": c_chrf.score,
            "chrf_pp": c_chrfpp.score,
            "chrf_name": c_chrf.name, "chrf_pp_name": c_chrfpp.name,
            "bleu": bleu_fields(c_bleu),
            "bleu_string": str(c_bleu),
        },
        "sentences": sentences,
    }


def build(out):
    import numpy as np
    import safetensors
    import torch
    from safetensors.torch import load_file, save_file
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(out.glob("*.safetensors")) + [out / "REFERENCE.json", out / "metrics.json",
                                                   out / "SHA256SUMS"]:
        p.unlink(missing_ok=True)

    reference = {
        "made_by": {"script": REGEN_COMMAND, "python": platform.python_version(),
                    "torch": torch.__version__, "numpy": np.__version__,
                    "safetensors": safetensors.__version__,
                    "settings": "CPU, float32, torch.use_deterministic_algorithms(True), "
                                "torch.set_num_threads(1), model.train() (dropout 0)"},
        "math": MATH_NOTES,
        "cases": {},
    }
    for name, case in CASES.items():
        init, batch_tensors, final, info = run_case(name, case)
        for suffix, tensors in (("init", init), ("batches", batch_tensors), ("final", final)):
            save_file(tensors, str(out / f"{name}.{suffix}.safetensors"))
        loaded = {s: load_file(str(out / f"{name}.{s}.safetensors"))
                  for s in ("init", "batches", "final")}
        for s, tensors in (("init", init), ("batches", batch_tensors), ("final", final)):
            assert loaded[s].keys() == tensors.keys()
            assert all(torch.equal(loaded[s][k], tensors[k]) and
                       loaded[s][k].dtype == tensors[k].dtype for k in tensors), (name, s)
        replay(name, case, loaded["init"], loaded["batches"], loaded["final"])
        info["files"] = {s: f"{name}.{s}.safetensors" for s in ("init", "batches", "final")}
        reference["cases"][name] = info

    (out / "REFERENCE.json").write_bytes(json_bytes(reference))
    (out / "metrics.json").write_bytes(json_bytes(metrics()))

    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())
             if p.is_file() and p.name != "SHA256SUMS"}
    write_sums(out, files)
    return files, reference


def check(out):
    def regenerate(tmp):
        build(tmp / "train")
        return tmp / "train"

    def versions():
        import sacrebleu
        import torch
        return (f" (torch {torch.__version__}, sacrebleu {sacrebleu.__version__}; "
                "the training runs depend on the torch version and CPU kernels)")

    return check_against_sums(out, regenerate, versions)


def main():
    ap = fixture_parser(__doc__, DEFAULT_OUT)
    args = ap.parse_args()
    if args.check:
        return check(args.out)
    files, reference = build(args.out)
    for rel in sorted(files):
        print(f"{len(files[rel]):7d}  {rel}")
    for name, info in reference["cases"].items():
        h = info["history"]
        print(f"{name:26s} loss {h[0]['loss']:.4f} -> {h[-1]['loss']:.4f}  "
              f"grad_norm {h[0]['grad_norm']:.4f} -> {h[-1]['grad_norm']:.4f}  "
              f"step0 unchanged: {info['step0_params_unchanged']}")
    total = sum(len(d) for d in files.values()) + (args.out / "SHA256SUMS").stat().st_size
    print(f"total: {total} bytes in {len(files) + 1} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
