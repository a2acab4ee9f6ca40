#!/usr/bin/env python3
"""The latent VLA policy of lapa-model (model/src/vla.rs, model/src/blocks.rs) re-written in
PyTorch, layer for layer, running the exact weights `lapa bench policy --twin DIR` wrote.

It first checks that it computes what burn computes (the logits of the bench frame, and the
chosen bins), then times one policy step as `lapa bench policy` times it: the 64x64 camera frame
(uint8) -> patches -> transformer -> action head -> argmax -> bin midpoints, with the
instruction's MiniLM embedding cached (as both runtimes do after the first step).

With --int8-dynamic the linear layers are first replaced by PyTorch's dynamic int8 ones
(`torch.ao.quantization.quantize_dynamic`, weights per output channel as lapa-compress's, activations
quantized per step), the comparison row of results/compress/. Its logits are then only reported
against burn's f32 ones (quantization moves them), not checked.

Usage: python bench/policy_torch.py --twin DIR [--steps 200] [--rounds 1] [--threads 1] [--int8-dynamic] [--json FILE]
Prints one JSON line: {"framework": "pytorch", "p50_ms": ..., "max_abs_logit_diff": ...}.
Exits non-zero if the f32 logits differ from burn's by more than --tolerance.
"""
import argparse, json, math, struct, sys, time

import numpy as np
import torch
import torch.nn.functional as F

QK_TEMPERATURE = 8.0  # overridden by twin.json
LN_EPS = 1e-5


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {e['dtype']}, F32 expected")
        a, b = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype="<f4").copy()).reshape(e["shape"])
    return out


class Twin(torch.nn.Module):
    """Vla with an action head and the frozen text projection (no state token)."""

    def __init__(self, cfg, w):
        super().__init__()
        self.cfg = cfg
        # The linear layers as torch.nn.Linear modules (so quantize_dynamic finds them); burn's
        # Linear stores its weight [in, out], torch's [out, in].
        names = ["patch_proj", "text.Frozen", "head.Action.out"]
        for i in range(cfg["depth"]):
            names += [f"trunk.layers.{i}.attn.{n}" for n in ("to_q", "to_k", "to_v", "to_out")]
            names += [f"trunk.layers.{i}.ff.{n}" for n in ("proj_in", "proj_out")]
        w = dict(w)
        self.lins = torch.nn.ModuleDict()
        for name in names:
            weight = w.pop(f"{name}.weight")
            bias = w.pop(f"{name}.bias", None)
            lin = torch.nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
            with torch.no_grad():
                lin.weight.copy_(weight.t())
                if bias is not None:
                    lin.bias.copy_(bias)
            self.lins[name.replace(".", "__")] = lin
        self.w = {k: torch.nn.Parameter(v, requires_grad=False) for k, v in w.items()}
        for i, (k, v) in enumerate(self.w.items()):
            self.register_parameter(f"p{i}", v)

    def p(self, name):
        return self.w[name]

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.p(f"{name}.gamma"), self.p(f"{name}.beta"), LN_EPS)

    def linear(self, x, name):
        return self.lins[name.replace(".", "__")](x)

    def attention(self, x, name):
        c = self.cfg
        b, n, _ = x.shape
        h, dh = c["heads"], c["dim_head"]
        x = self.ln(x, f"{name}.norm")
        split = lambda t: t.reshape(b, -1, h, dh).transpose(1, 2)
        l2 = lambda t: t / t.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        q = l2(split(self.linear(x, f"{name}.to_q"))) * self.p(f"{name}.q_scale")
        k = l2(split(self.linear(x, f"{name}.to_k"))) * self.p(f"{name}.k_scale")
        v = split(self.linear(x, f"{name}.to_v"))
        attn = torch.softmax(q @ k.transpose(2, 3) * QK_TEMPERATURE, dim=3)
        out = (attn @ v).transpose(1, 2).reshape(b, n, h * dh)
        return self.linear(out, f"{name}.to_out")

    def feed_forward(self, x, name):
        hdn = self.linear(self.ln(x, f"{name}.norm"), f"{name}.proj_in")
        a, g = hdn.chunk(2, dim=-1)
        return self.linear(a * F.gelu(g), f"{name}.proj_out")

    def forward(self, patches, text_embedding):
        # patches [b, N, patch_dim] in [0, 1]; text_embedding [b, text_dim]
        b = patches.shape[0]
        kinds = self.p("kinds")
        img = self.ln(self.linear(self.ln(patches, "patch_norm"), "patch_proj"), "embed_norm") + self.p("pos")
        text = self.linear(text_embedding, "text.Frozen").unsqueeze(1) + kinds[0]
        queries = self.p("head.Action.queries").unsqueeze(0).expand(b, -1, -1) + kinds[2]
        x = torch.cat([text, img, queries], dim=1)
        for i in range(self.cfg["depth"]):
            x = x + self.attention(x, f"trunk.layers.{i}.attn")
            x = x + self.feed_forward(x, f"trunk.layers.{i}.ff")
        x = self.ln(x, "trunk.norm_out")
        q = queries.shape[1]
        out = self.linear(x[:, -q:], "head.Action.out")  # [b, chunk, dims*bins]
        return out.reshape(b, q * self.cfg["dims"], self.cfg["bins"])


def patchify(frame, side, patch):
    # frame [side, side, 3] uint8 -> [1, patches, patch*patch*3], patch-major as lapa_model::patchify
    g = side // patch
    x = frame.reshape(g, patch, g, patch, 3).permute(0, 2, 1, 3, 4).reshape(1, g * g, patch * patch * 3)
    return x.to(torch.float32) / 255.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--twin", required=True, help="the folder `lapa bench policy --twin` wrote")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; p50 is the median of the rounds' medians")
    ap.add_argument("--int8-dynamic", action="store_true", help="time PyTorch's dynamic int8 linear layers instead of f32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=1e-3, help="largest |logit difference| accepted")
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = json.load(open(f"{a.twin}/twin.json"))
    global QK_TEMPERATURE, LN_EPS
    QK_TEMPERATURE, LN_EPS = cfg["qk_temperature"], cfg["layer_norm_eps"]
    w = read_safetensors(f"{a.twin}/weights.safetensors")
    ref = read_safetensors(f"{a.twin}/reference.safetensors")
    n_params = sum(v.numel() for k, v in w.items() if not k.startswith("text.Hashed"))
    model = Twin(cfg, w).eval()
    if a.int8_dynamic:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        if not any("Quantized" in type(m).__name__ or "quantized" in type(m).__module__ for m in model.modules()):
            sys.exit("quantize_dynamic replaced no linear layer")
    side, patch = cfg["image_size"], cfg["patch_size"]
    frame = ref["frame"].to(torch.uint8)
    emb = ref["text_embedding"]
    midpoints = torch.tensor(cfg["midpoints"], dtype=torch.float32)  # [dims, bins]
    dims, chunk = cfg["dims"], cfg["chunk"]
    dim_index = torch.arange(dims).repeat(chunk)  # [chunk*dims]

    def step():
        logits = model(patchify(frame, side, patch), emb)
        best = logits.argmax(dim=2)[0]  # [chunk*dims]
        return midpoints[dim_index, best].reshape(chunk, dims), logits

    with torch.inference_mode():
        _, logits = step()
        diff = (logits - ref["logits"]).abs().max().item()
        same_bins = (logits.argmax(2) == ref["logits"].argmax(2)).float().mean().item()
        ms, p50s = [], []
        for _ in range(max(a.rounds, 1)):
            for _ in range(5):
                step()
            rnd = []
            for _ in range(max(a.steps, 1)):
                t = time.perf_counter()
                step()
                rnd.append((time.perf_counter() - t) * 1e3)
            rnd.sort()
            p50s.append(rnd[(len(rnd) - 1) // 2])
            ms += rnd
    ms.sort()
    p50s.sort()
    q = lambda p: ms[round((len(ms) - 1) * p)]
    out = {
        "framework": "pytorch", "torch": torch.__version__, "variant": "int8 dynamic" if a.int8_dynamic else "f32",
        "parameters": n_params, "threads": a.threads, "steps": len(ms), "rounds": len(p50s),
        "p50_ms": p50s[(len(p50s) - 1) // 2], "p50_ms_per_round": p50s, "p99_ms": q(0.99), "max_ms": ms[-1],
        "max_abs_logit_diff": diff, "same_bins": same_bins,
    }
    print(json.dumps(out))
    if a.json:
        json.dump(out, open(a.json, "w"), indent=2)
    if not a.int8_dynamic and not diff <= a.tolerance:
        sys.exit(f"the twin's logits differ from burn's by {diff:.2e} (> {a.tolerance}): it does not compute the same policy")


if __name__ == "__main__":
    main()
