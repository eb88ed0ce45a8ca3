"""Capturing the training step once as a CUDA graph and replaying it.

A GAN step on small images is a few hundred tiny kernels, and launching them one by one from Python
costs more than their arithmetic. Captured once, a replay launches the whole step (n_critic D updates,
the G update and both optimizer steps) with one call. Capture needs fixed shapes and addresses and no
host sync inside the step: the batches are copied into static buffers the graph reads, the optimizers
are switched to `capturable` (their step counters live on the GPU), and grads are allocated by the
capture itself, so every replay writes the same memory. Random noise is drawn inside the graph from
CUDA's Philox generator, which graph replays advance exactly as eager calls would.

`trainer.cuda_graphs`: `false` runs eagerly; `auto` captures when it can and otherwise runs eagerly
(logging why); `true` captures or stops with an error that says why.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

from gan_cli.config import Switch
from gan_cli.errors import ConfigError, GanCliError

log = logging.getLogger("gan_cli")

Batch = tuple[torch.Tensor, torch.Tensor]  # (images or points, labels)
StepFn = Callable[[Iterable[Batch]], torch.Tensor]  # takes one batch per D update, in order

WARMUP_STEPS = 3  # eager steps before capture: optimizer state, cuDNN autotuning and lazy inits happen here


class GraphCaptureError(GanCliError):
    """trainer.cuda_graphs=true, but the step cannot be captured."""


def graph_blocker(
    device: torch.device, world: int, lr_decay: bool, grad_scaler: bool, lazy_reg: bool = False
) -> str | None:
    """Why a step cannot be captured as a CUDA graph here, or None when it can."""
    if device.type != "cuda":
        return f"the device is {device.type}, and CUDA graphs need a CUDA device"
    if world > 1:
        return "training runs in several processes, and DDP's gradient all-reduce is left eager"
    if lr_decay:
        return (
            "optimizer.lr_decay changes the learning rates between steps, and a graph would keep the "
            "captured ones"
        )
    if lazy_reg:
        return (
            "loss.reg_every > 1 runs the R1/R2 update on some steps only, and a graph replays one fixed step"
        )
    if grad_scaler:
        return (
            "trainer.precision=16 uses a GradScaler, whose overflow check reads a value back to the "
            "host every step"
        )
    return None


def build_step(
    step_fn: StepFn,
    mode: Switch,
    blocker: str | None,
    optimizers: list[torch.optim.Optimizer],
    device: torch.device,
) -> StepFn:
    """The step the loop calls: `step_fn` itself, or `step_fn` captured as a CUDA graph.

    `step_fn` must be capturable for the graphed path: no host syncs and no Python state that has to
    change from one step to the next (what it does in Python runs once, at capture)."""
    if mode is Switch.false:
        log.info("training step: eager (trainer.cuda_graphs=false)")
        return step_fn
    if blocker is not None:
        if mode is Switch.true:
            raise ConfigError(
                f"trainer.cuda_graphs=true but {blocker}; use trainer.cuda_graphs=auto (captures only "
                "where it can) or trainer.cuda_graphs=false"
            )
        log.info("training step: eager (no CUDA graph: %s)", blocker)
        return step_fn
    return GraphedStep(step_fn, optimizers, device, strict=mode is Switch.true)


def make_capturable(opt: torch.optim.Optimizer) -> None:
    """Switch an optimizer to capturable steps: its step counters move to the parameters' device so
    the update (bias correction included) runs without reading anything back to the host."""
    if not any("capturable" in group for group in opt.param_groups):
        return  # e.g. SGD: nothing on the host to begin with
    for group in opt.param_groups:
        group["capturable"] = True
    for param, state in opt.state.items():
        step = state.get("step") if isinstance(state, dict) else None
        if isinstance(step, torch.Tensor) and step.device != param.device:
            state["step"] = step.to(param.device)
    if hasattr(opt, "register_state_dict_post_hook") and not getattr(opt, "_gan_cli_hooked", False):
        opt.register_state_dict_post_hook(_saved_uncapturable)
        opt._gan_cli_hooked = True  # type: ignore[attr-defined]


def _saved_uncapturable(opt: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints record capturable=False: a run resumed from one (maybe on the CPU, where capturable
    steps are refused) starts eager, and its own capture switches the flag on again."""
    for group in state["param_groups"]:
        if "capturable" in group:
            group["capturable"] = False
    return state


def _root_cause(err: BaseException) -> BaseException:
    """The first exception of a chain: a failed capture often raises again when the capture ends."""
    while err.__context__ is not None:
        err = err.__context__
    return err


class GraphedStep:
    """Runs `step_fn` eagerly for the first `warmup` steps, then captures it once and replays it.

    Every call copies its batches into static buffers, which the step reads in all phases. With
    `capture=False` the step runs eagerly on those buffers after the warm-up instead of being captured:
    the same code path without a GPU, which the tests compare against the plain step. If capture
    raises (an operation that cannot be captured, such as a host sync), the step falls back to eager
    for the rest of the run, or raises GraphCaptureError when `strict`.
    """

    def __init__(
        self,
        step_fn: StepFn,
        optimizers: list[torch.optim.Optimizer],
        device: torch.device,
        *,
        warmup: int = WARMUP_STEPS,
        capture: bool = True,
        strict: bool = False,
    ):
        self.step_fn, self.optimizers, self.device = step_fn, optimizers, device
        self.warmup, self.capture, self.strict = warmup, capture, strict
        self.calls = 0
        self.eager = False  # True after a fallback: plain step_fn from then on
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.static_out: torch.Tensor | None = None
        self.stream: torch.cuda.Stream | None = None

    @property
    def path(self) -> str:
        """What the step does now: warm-up, graph, eager-buffers (capture off) or eager (fallback)."""
        if self.eager:
            return "eager"
        if self.graph is not None:
            return "graph"
        return "warm-up" if self.calls < self.warmup else "eager-buffers"

    def __call__(self, batches: Iterable[Batch]) -> torch.Tensor:
        if self.eager:
            return self.step_fn(batches)
        batches = list(batches)  # the static buffers hold every D update's batch at once
        if not self._load(batches):
            return self.step_fn(batches)
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            assert self.static_out is not None
            return self.static_out.clone()  # the next replay overwrites static_out
        if self.calls <= self.warmup or not self.capture:
            return self._eager_on_buffers()
        if self._capture():
            return self._replay_first()
        return self.step_fn(batches)

    def _load(self, batches: list[Batch]) -> bool:
        """Copy the batches into the static buffers (allocated on first use); False if shapes changed."""
        if not self.static_in:
            self.static_in = [(torch.empty_like(x), torch.empty_like(y)) for x, y in batches]
        shapes = [(x.shape, y.shape, x.dtype, y.dtype) for x, y in batches]
        if shapes != [(x.shape, y.shape, x.dtype, y.dtype) for x, y in self.static_in]:
            self._fall_back(
                f"batch shapes changed from {self.static_in[0][0].shape} to {batches[0][0].shape}"
            )
            return False
        for (sx, sy), (x, y) in zip(self.static_in, batches, strict=True):
            sx.copy_(x, non_blocking=True)
            sy.copy_(y, non_blocking=True)
        return True

    def _eager_on_buffers(self) -> torch.Tensor:
        if self.device.type != "cuda":
            return self.step_fn(self.static_in)
        # Warm up on a side stream, as capture will run there: lazy per-stream state (cuBLAS
        # workspaces, autograd's stream bookkeeping) is then set up before capture starts.
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = self.step_fn(self.static_in)
        current.wait_stream(self.stream)
        out.record_stream(current)
        return out

    def _capture(self) -> bool:
        """Capture one step into a CUDA graph (nothing runs on the GPU during capture); True on success."""
        for opt in self.optimizers:
            make_capturable(opt)
            # Grads set to None now are allocated by the capture from the graph's own memory pool,
            # so every replay writes the same addresses that the optimizer steps read.
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                with torch.cuda.graph(graph, stream=self.stream):
                    out = self.step_fn(self.static_in)
        except Exception as err:  # capture raises whatever the offending operation raises
            del graph
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)  # grads from the failed capture hold no values
            torch.cuda.synchronize(self.device)
            cause = _root_cause(err)
            reason = f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}"
            if self.strict:
                raise GraphCaptureError(
                    f"trainer.cuda_graphs=true but the training step could not be captured as a CUDA graph "
                    f"({reason}); use trainer.cuda_graphs=auto (falls back to eager) or false"
                ) from err
            self._fall_back(f"capture failed ({reason})")
            return False
        self.graph, self.static_out = graph, out
        log.info("training step: captured as one CUDA graph after %d eager warm-up steps", self.warmup)
        return True

    def _replay_first(self) -> torch.Tensor:
        """Capture only records: replay once so the batch that was loaded for capture is trained on."""
        assert self.graph is not None and self.static_out is not None
        self.graph.replay()
        return self.static_out.clone()

    def _fall_back(self, reason: str) -> None:
        log.warning("training step: eager from now on; %s", reason)
        self.eager = True
        self.graph, self.static_out = None, None
