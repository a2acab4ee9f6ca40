#!/usr/bin/env python3
"""The LAQ of lapa-model (model/src/laq.rs) re-written in PyTorch, layer for layer, to compare
training throughput with burn on the same machine, config and batch.

Usage: python bench/laq_torch.py --config small --batch 32 --steps 30 [--device cpu|cuda] [--threads N]
Prints one JSON line: {"framework": "pytorch", "samples_per_s": ..., ...}. Inputs are random
frames (throughput does not depend on pixel values); same Adam settings and grad clipping.
"""
import argparse, json, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # image, patch, dim, heads, dim_head, spatial, temporal, decoder (ff_mult 4, code 32, K 8, T 4)
    "tiny": (32, 8, 64, 4, 16, 1, 1, 1),
    "small": (64, 8, 128, 4, 32, 2, 2, 2),
    "base": (64, 8, 512, 8, 64, 4, 4, 4),
    "paper": (256, 32, 1024, 16, 64, 8, 8, 8),
}

def l2norm(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)

class Attention(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim=None):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(context_dim) if context_dim else None
        ctx = context_dim or dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(ctx, inner, bias=False)
        self.to_v = nn.Linear(ctx, inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.h, self.dh = heads, dim_head

    def forward(self, x, context=None, causal=False):
        b, n, _ = x.shape
        x = self.norm(x)
        kv = self.norm_ctx(context) if (context is not None and self.norm_ctx is not None) else x
        sp = lambda t: t.view(b, t.shape[1], self.h, self.dh).transpose(1, 2)
        q = l2norm(sp(self.to_q(x))) * self.q_scale
        k = l2norm(sp(self.to_k(kv))) * self.k_scale
        v = sp(self.to_v(kv))
        sim = q @ k.transpose(-1, -2) * 8.0
        if causal:
            m = k.shape[2]
            mask = torch.ones(n, m, dtype=torch.bool, device=x.device).triu(1)
            sim = sim.masked_fill(mask, -1e4)
        out = sim.softmax(-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.h * self.dh))

class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        inner = -(-mult * dim * 2 // 3)
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, inner * 2, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x):
        a, g = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(a * F.gelu(g))

class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, context_dim=None, causal=False, peg=False):
        super().__init__()
        self.peg = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if peg else None
        self.layers = nn.ModuleList([
            nn.ModuleList([Attention(dim, heads, dim_head),
                           Attention(dim, heads, dim_head, context_dim) if context_dim else None,
                           FeedForward(dim)]) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.causal = causal

    def forward(self, x, grid=None, context=None):
        if self.peg is not None:
            b, n, d = x.shape
            img = x.transpose(1, 2).reshape(b, d, grid, grid)
            x = x + self.peg(img).reshape(b, d, n).transpose(1, 2)
        for attn, cross, ff in self.layers:
            x = x + attn(x, causal=self.causal)
            if cross is not None:
                x = x + cross(x, context)
            x = x + ff(x)
        return self.norm(x)

class Laq(nn.Module):
    def __init__(self, image, patch, dim, heads, dim_head, sd, td, dd, code=32, K=8, T=4):
        super().__init__()
        pd = patch * patch * 3
        self.grid, self.T, self.code, self.dim = image // patch, T, code, dim
        self.embed = nn.Sequential(nn.LayerNorm(pd), nn.Linear(pd, dim), nn.LayerNorm(dim))
        self.spatial = Transformer(dim, sd, heads, dim_head, peg=True)
        self.temporal = Transformer(dim, td, heads, dim_head, causal=True)
        self.frame_pos = nn.Parameter(torch.zeros(2, dim))
        self.to_code = nn.Linear(dim, code)
        self.reduce1 = nn.Conv2d(code, code, 3, stride=2, padding=1)
        self.reduce2 = nn.Conv2d(code, code, 3, padding=1)
        s = int(round(math.sqrt(T)))
        self.pool = nn.AdaptiveAvgPool2d((s, s))
        self.codebook = nn.Parameter(torch.randn(K, code))
        self.from_code = nn.Linear(code, dim)
        self.decoder = Transformer(dim, dd, heads, dim_head, context_dim=dim, peg=True)
        self.to_pixels = nn.Linear(dim, pd)

    def forward(self, first, second, noise):
        b, n, _ = first.shape
        fr = self.spatial(torch.cat([self.embed(first), self.embed(second)], 0), grid=self.grid)
        seq = fr.view(2, b, n, self.dim).permute(1, 2, 0, 3).reshape(b * n, 2, self.dim) + self.frame_pos
        seq = self.temporal(seq).view(b, n, 2, self.dim)
        diff = seq[:, :, 1] - seq[:, :, 0]
        img = self.to_code(diff).transpose(1, 2).reshape(b, self.code, self.grid, self.grid)
        tok = self.pool(self.reduce2(F.relu(self.reduce1(img)))).reshape(b, self.code, self.T).transpose(1, 2)
        z = tok.reshape(b * self.T, self.code)
        with torch.no_grad():
            idx = torch.cdist(z, self.codebook).argmin(1)
        q = self.codebook[idx]
        err = (z - q).pow(2).sum(1, keepdim=True).add(1e-12).sqrt()
        zq = z + err * noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12)
        ctx = self.embed(first).detach()
        rec = self.to_pixels(self.decoder(ctx, grid=self.grid, context=self.from_code(zq.view(b, self.T, self.code))))
        return (rec - second).pow(2).mean(), idx

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small", choices=PRESETS)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    image, patch = PRESETS[a.config][:2]
    model = Laq(*PRESETS[a.config]).to(a.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-5)
    n, pd = (image // patch) ** 2, patch * patch * 3
    x0 = torch.rand(a.batch, n, pd, device=a.device)
    x1 = torch.rand(a.batch, n, pd, device=a.device)
    def step():
        noise = torch.randn(a.batch * 4, 32, device=a.device)
        loss, idx = model(x0, x1, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in model.parameters():  # per-tensor norm clipping, as burn applies it
            torch.nn.utils.clip_grad_norm_([p], 0.5)
        opt.step()
        return loss.item(), idx.tolist()  # host sync each step, as lapa's loop reads loss and codes
    for _ in range(a.warmup):
        step()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "config": a.config, "batch": a.batch,
                      "steps": a.steps, "device": a.device, "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in model.parameters()),
                      "samples_per_s": a.batch * a.steps / dt, "step_ms": 1000 * dt / a.steps}))

if __name__ == "__main__":
    main()
