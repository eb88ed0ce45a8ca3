"""An exponential moving average of the generator's weights, the network samples and metrics use.

Averaging G's recent weights smooths out the oscillation of adversarial training and gives visibly
cleaner samples and lower FID at no training cost (Yazıcı et al. 2019; StyleGAN, BigGAN). The decay
ramps up as min(decay, (1 + t) / (ramp + t)) after t updates (ramp 10), so early on, when G changes
fast, the average follows it closely instead of holding on to the random initial weights. While the
ramp binds, the average weighs step s about as s^(ramp - 2).

Batch norm: the average's weights are not G's, so G's running statistics do not fit them. Before
the average samples (grids, metrics, gan-sample), `recompute_norm_stats` replaces them with the
statistics of its own activations over a few seeded batches of noise ("standing statistics", as in
BigGAN and StudioGAN).

The update runs entirely on the device (the step count is a tensor, the lerp a foreach kernel), with
no host sync, so it can sit inside a captured CUDA graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

NORM_STATS_BATCHES = 8  # batches of noise the batch-norm statistics are averaged over
NORM_STATS_BATCH_SIZE = 256
RAMP = 10.0  # the decay's warm-up: min(decay, (1 + t) / (RAMP + t))


class EMA:
    def __init__(self, G: nn.Module, decay: float, ramp: float = RAMP) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if ramp <= 1:
            raise ValueError(f"EMA ramp must be above 1, got {ramp}")
        self.G = G
        self.model = copy.deepcopy(G).eval().requires_grad_(False)
        self.decay = decay
        self.ramp = ramp
        device = next(G.parameters()).device
        self.num_updates = torch.zeros((), device=device)
        self._src: list[torch.Tensor] = list(G.parameters())
        self._dst: list[torch.Tensor] = list(self.model.parameters())
        self._src_buf = [b for b in G.buffers() if b.is_floating_point()]
        self._dst_buf = [b for b in self.model.buffers() if b.is_floating_point()]
        self._stats_at: float | None = None  # num_updates when the standing statistics were computed

    @torch.no_grad()
    def update(self) -> None:
        """ema <- ema + (1 - decay_t) (G - ema); buffers (batch-norm statistics) are copied."""
        self.num_updates.add_(1)
        decay_t = torch.clamp((1 + self.num_updates) / (self.ramp + self.num_updates), max=self.decay)
        weights = [1 - decay_t] * len(self._dst)  # device tensors, never read on the host
        torch._foreach_lerp_(self._dst, self._src, weights)
        if self._dst_buf:
            torch._foreach_copy_(self._dst_buf, self._src_buf)

    def eval_model(self, z_dim: int, device: torch.device, num_classes: int = 0) -> nn.Module:
        """The average, with standing batch-norm statistics for its current weights: recomputed only
        when it changed since the last call (a big G spends a minute on them on a CPU)."""
        at = float(self.num_updates)
        if self._stats_at != at:
            recompute_norm_stats(self.model, z_dim, device, num_classes)
            self._stats_at = at
        return self.model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.model.state_dict(), "_num_updates": self.num_updates.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.num_updates.copy_(state.pop("_num_updates"))
        self.model.load_state_dict(state)
        self._stats_at = None


@torch.no_grad()
def recompute_norm_stats(
    G: nn.Module,
    z_dim: int,
    device: torch.device,
    num_classes: int = 0,
    batches: int = NORM_STATS_BATCHES,
    batch_size: int = NORM_STATS_BATCH_SIZE,
    seed: int = 0,
) -> None:
    """Set each batch norm's running mean and variance to the average of G's own batch statistics
    over `batches` batches of seeded noise (and uniform labels for a conditional G). In place, so
    tensors a CUDA graph holds stay valid; G is left in eval mode. No-op without batch norm."""
    norms = [
        m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    gen = torch.Generator().manual_seed(seed)
    G.train()
    try:
        for _ in range(batches):
            z = torch.randn(batch_size, z_dim, generator=gen).to(device)
            y = torch.randint(num_classes, (batch_size,), generator=gen).to(device) if num_classes else None
            G(z, y)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        G.eval()
