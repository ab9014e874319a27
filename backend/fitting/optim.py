"""A minimal Adam with cosine decay for the small fitting problems here.

Why not torch.optim.Adam: its first construction imports torch._dynamo, measured at 2.6 s on
this 2-core machine, which alone would break the 3-second photo-to-bundle target. The update rule
is the standard one (Kingma & Ba), without weight decay or amsgrad.
"""

from __future__ import annotations

import math

import torch


class Adam:
    """Adam over ``params`` with learning rate cosine-decayed from ``lr`` to ``lr * final_ratio``.

    ``lr`` is one rate or one per parameter: Adam moves each value by about ``lr`` per step, so
    weights that must travel far in few steps (a blink: 0 to 1) need their own, larger rate."""

    def __init__(self, params: list[torch.Tensor], lr: float | list[float], steps: int, final_ratio: float = 0.05,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.rates = list(lr) if isinstance(lr, (list, tuple)) else [lr] * len(params)
        self.steps, self.final_ratio = max(steps, 1), final_ratio
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        progress = min(self.t / self.steps, 1.0)
        decay = self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for p, m, v, rate in zip(self.params, self.m, self.v, self.rates):
            if p.grad is None:
                continue
            m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
            p.addcdiv_(m / c1, (v / c2).sqrt_().add_(self.eps), value=-rate * decay)
