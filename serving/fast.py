"""The PyTorch inference paths: bf16 in channels-last layout, with eager fp32 as the fallback.

Under the default settings the app serves through ONNX Runtime instead (``serving.onnx_runtime``), checked against
:func:`fp32_runner` with the same :func:`parity`; these paths serve where that is off, missing or differs.

On a CPU with AVX-512 BF16/AMX, oneDNN runs bf16 convolutions several times faster than fp32, which is what
brings the four models under the issue's latency targets. int8 dynamic quantisation only covers Linear layers
(nearly nothing in a CNN) and torch.compile takes minutes per model on two cores, so neither is used here.

bf16's error comes mostly from the first layers: all-bf16 moves the shipped model's probabilities by up to 0.040
on the fixture cells, and keeping its first 2 of 105 parametrised layers in fp32 brings that to 0.013
(``benchmarks/results/app_latency.json`` as of commit 615112f, measured on a CPU with bf16). So a model may keep
its first few layers in fp32 and run the rest in bf16. :func:`choose_runner` picks the fewest fp32 layers whose
outputs match fp32 on real cells within :data:`PARITY_TOLERANCE`, and keeps that runner if it is faster than fp32
on this machine; otherwise the model runs in fp32 throughout.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch

PARITY_TOLERANCE = 0.02  # the largest allowed difference in any class probability


class Runner(NamedTuple):
    """A model at one precision; ``__call__`` maps an fp32 batch to fp32 logits."""

    precision: str  # "fp32", "bf16", or "bf16 after N fp32 layers"
    module: torch.nn.Module

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last)).float()


def bf16_supported() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def fp32_runner(model: torch.nn.Module) -> Runner:
    """The reference path; channels-last alone already helps oneDNN, without touching the numbers."""
    return Runner("fp32", model.to(memory_format=torch.channels_last))


def parametrised_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules holding their own weights (convolutions, norms, linears), in definition order."""
    return [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]


def _cast_inputs(dtype: torch.dtype) -> Callable:
    def hook(module, args):
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    return hook


def bf16_runner(model: torch.nn.Module, fp32_layers: int = 0) -> Runner:
    """A copy whose first ``fp32_layers`` parametrised layers stay fp32 and the rest run in bf16.

    Each such layer casts its input to its own dtype, so the copy is correct whatever the order of execution;
    parameter-free operations (activations, pooling, residual adds) follow their inputs' dtype. The fp32
    model stays intact for the fallback, the parity check and Grad-CAM.
    """
    fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    for index, module in enumerate(parametrised_layers(fast)):
        dtype = torch.float32 if index < fp32_layers else torch.bfloat16
        module.to(dtype)
        module.register_forward_pre_hook(_cast_inputs(dtype))
    return Runner(f"bf16 after {fp32_layers} fp32 layers" if fp32_layers else "bf16", fast)


class Parity(NamedTuple):
    same_labels: bool
    max_difference: float  # largest absolute difference of any class probability

    @property
    def ok(self) -> bool:
        return self.same_labels and self.max_difference <= PARITY_TOLERANCE


def parity(reference: torch.Tensor, candidate: torch.Tensor) -> Parity:
    """Compare two (n, classes) probability tensors for the same inputs."""
    same = bool((reference.argmax(-1) == candidate.argmax(-1)).all())
    return Parity(same, float((reference - candidate).abs().max()))


def latency_ms(runner: Runner, x: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of ``runner(x)`` after two warm-up calls."""
    times = []
    for _ in range(2 + repeats):
        start = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[2:])


def choose_runner(
    model: torch.nn.Module,
    x: torch.Tensor,
    probabilities: Callable[[torch.Tensor], torch.Tensor],
    *,
    require_speedup: bool = True,
) -> tuple[Runner, str | None]:
    """The bf16 runner with the fewest fp32 layers whose ``probabilities(logits)`` on ``x`` match fp32's, or fp32.

    Returns the runner, and when it is fp32, why.

    Tries all-bf16, then 1, 2, 4, ... leading fp32 layers up to a quarter of them (beyond that, little speed is
    left to gain). With ``require_speedup``, a matching bf16 runner is kept only if it beats fp32 on one of
    ``x`` at batch 1: small inputs can be faster in fp32 than through the extra casts.
    """
    reference = fp32_runner(model)
    expected = probabilities(reference(x))
    total = len(parametrised_layers(model))
    for fp32_layers in [0, *(2**i for i in range(total.bit_length()) if 2**i <= total // 4)]:
        candidate = bf16_runner(model, fp32_layers)
        check = parity(expected, probabilities(candidate(x)))
        if check.ok:
            break
    else:
        return reference, f"bf16 differs from fp32 by {check.max_difference:.3f} on real cells, so fp32 is used"
    if require_speedup:
        fp32_ms, candidate_ms = latency_ms(reference, x[:1]), latency_ms(candidate, x[:1])
        if candidate_ms >= fp32_ms:
            return reference, (
                f"{candidate.precision} matches fp32 but is not faster here "
                f"({candidate_ms:.1f} against {fp32_ms:.1f} ms), so fp32 is used"
            )
    return candidate, None
