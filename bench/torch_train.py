"""PyTorch twin of `igpt bench train`: the same iGPT model (RMS norm with gain, no biases,
separate q/k/v, causal softmax attention, quick_gelu MLP of 4d, untied head), the same
step (forward, cross-entropy over all positions, backward, global-norm clip 1.0, AdamW
with betas (0.9, 0.95)) on random tokens. Prints `tokens_per_s=<number>` last.

Not part of CI. See bench/README.md for the virtual environment.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.g = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.g


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = RMSNorm(d), RMSNorm(d)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        a = self.ln_1(x)
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        o = F.scaled_dot_product_attention(split(self.q(a)), split(self.k(a)), split(self.v(a)), is_causal=True)
        x = x + self.c_proj(o.transpose(1, 2).reshape(b, t, d))
        f = self.c_fc(self.ln_2(x))
        return x + self.mlp_proj(f * torch.sigmoid(1.702 * f))


class IGPT(nn.Module):
    def __init__(self, vocab, n, d, heads, layers):
        super().__init__()
        self.wte = nn.Embedding(vocab + 1, d)
        self.wpe = nn.Parameter(torch.randn(n, d) * 0.01)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe[: ids.shape[1]]
        for blk in self.h:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--side", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n = a.side * a.side
    model = IGPT(a.vocab, n, a.width, a.heads, a.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    x = torch.randint(0, a.vocab, (a.batch, n))
    inp = torch.cat([torch.full((a.batch, 1), a.vocab), x[:, :-1]], dim=1)

    def step():
        logits = model(inp)
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up, untimed (as igpt bench train)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print(f"torch {torch.__version__}: {a.layers} layers, width {a.width}, {a.heads} heads, {a.side}x{a.side}, "
          f"k {a.vocab}, batch {a.batch}, {a.steps} steps, {torch.get_num_threads()} threads")
    mkl = torch.backends.mkl.is_available()
    print(f"cpu_capability={torch.backends.cpu.get_cpu_capability()} (mkl {mkl})")
    print(f"tokens_per_s={a.steps * a.batch * n / dt:.1f}")


if __name__ == "__main__":
    main()
