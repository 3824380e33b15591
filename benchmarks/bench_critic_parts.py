"""Two choices inside the training step, each measured against its alternative in one run.

1. The gradient penalty's forward. The critic step scores real, fake and interpolated geometry
   images. A joint trunk call over all three makes the penalty's input gradient and its double
   backward run over 3b samples, whereas the trainer gives the interpolates their own call
   (``train.trainer.CriticPass``): b samples. Both give the same gradients; the script checks
   this in float64.
2. Adam's kernel on the generator's parameters (the output layer 512 x 3V, V = 9,409 on the ICT
   face): the default per-tensor loops against ``fused=True`` (``train.trainer.adam``).

Usage::

    .venv/bin/python benchmarks/bench_critic_parts.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse

import torch
from common import machine, median_ms

#: Batch, geometry-image size, classes and vertex count of the measured setting (ICT, §5.1).
BATCH, IMAGE, ICT_VERTICES, HIDDEN, LATENT = 64, 64, 9409, 512, 85
CLASSES = {"identity": 300, "expression": 7}


def critic_loss(D, real, fake, eps, joint: bool) -> torch.Tensor:
    """The critic step's loss (gap, penalty, identity classes on the real rows)."""
    b = real.shape[0]
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    if joint:
        trunk = D.trunk(torch.cat([real, fake, x]))
        s = D.critic(trunk)[1].squeeze(1)
        s_real, s_fake, s_hat = s[:b], s[b:2 * b], s[2 * b:]
    else:
        trunk = D.trunk(torch.cat([real, fake]))
        s = D.critic(trunk)[1].squeeze(1)
        s_real, s_fake, s_hat = s[:b], s[b:], D.critic(D.trunk(x))[1].squeeze(1)
    (g,) = torch.autograd.grad(s_hat.sum(), x, create_graph=True)
    gp = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    cls = D.classifiers["identity"](trunk[:b])[1].logsumexp(1).mean()
    return -(s_real.mean() - s_fake.mean()) + 10 * gp + 0.1 * cls


def main() -> None:
    from fitface.models.discriminator import Discriminator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {machine()}, torch {torch.__version__}, {args.threads} threads, medians of {args.repeats}")

    torch.manual_seed(0)
    D = Discriminator(CLASSES, IMAGE)
    real, fake = torch.randn(BATCH, 3, IMAGE, IMAGE), torch.randn(BATCH, 3, IMAGE, IMAGE)
    eps = torch.rand(BATCH, 1, 1, 1)

    def step(joint):
        D.zero_grad()
        critic_loss(D, real, fake, eps, joint).backward()

    t_joint, t_split = median_ms(lambda: step(True), args.repeats), median_ms(lambda: step(False), args.repeats)
    D64 = Discriminator(CLASSES, IMAGE).double()
    grads = []
    for joint in (True, False):
        D64.zero_grad()
        critic_loss(D64, real.double(), fake.double(), eps.double(), joint).backward()
        grads.append([p.grad.clone() for p in D64.parameters() if p.grad is not None])
    diff = max(float((a - b).abs().max() / (a.abs().max() + 1e-300)) for a, b in zip(*grads))
    print(f"critic step, batch {BATCH}: joint forward {t_joint:.0f} ms, interpolates apart {t_split:.0f} ms "
          f"({t_joint / t_split:.2f}x); largest relative gradient difference (float64) {diff:.1e}")

    shapes = [(3 * ICT_VERTICES, HIDDEN), (3 * ICT_VERTICES,), (HIDDEN, LATENT), (HIDDEN,)]  # G's weights, biases
    params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    times = {}
    for name, kw in (("default", {}), ("fused", {"fused": True})):
        opt = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.9), **kw)
        times[name] = median_ms(opt.step, args.repeats)
    n = sum(p.numel() for p in params)
    print(f"Adam update of G ({n / 1e6:.1f} M parameters): default {times['default']:.1f} ms, fused "
          f"{times['fused']:.1f} ms ({times['default'] / times['fused']:.1f}x)")


if __name__ == "__main__":
    main()
