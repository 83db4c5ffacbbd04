"""The lower-precision inference path: bf16 weights in channels-last layout, with eager fp32 as the fallback.

On a CPU with AVX-512 BF16/AMX, oneDNN runs bf16 convolutions several times faster than fp32, which is what
brings the four models under the issue's latency targets. int8 dynamic quantisation only covers Linear layers
(nearly nothing in a CNN) and torch.compile takes minutes per model on two cores, so neither is used here.
A model keeps its bf16 path only if :func:`parity` against fp32 holds on real cells (see ``serving.predict``).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch

PARITY_TOLERANCE = 0.02  # the largest allowed difference in any class probability


class Runner(NamedTuple):
    """A model at one precision; ``__call__`` maps an fp32 batch to fp32 logits."""

    precision: str  # "bf16" or "fp32"
    module: torch.nn.Module
    dtype: torch.dtype

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(dtype=self.dtype, memory_format=torch.channels_last)).float()


def bf16_supported() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def fp32_runner(model: torch.nn.Module) -> Runner:
    """The reference path; channels-last alone already helps oneDNN, without touching the numbers."""
    return Runner("fp32", model.to(memory_format=torch.channels_last), torch.float32)


def bf16_runner(model: torch.nn.Module) -> Runner:
    """A bf16 copy: the fp32 model stays intact for the fallback, the parity check and Grad-CAM."""
    fast = copy.deepcopy(model).to(dtype=torch.bfloat16, memory_format=torch.channels_last).eval()
    return Runner("bf16", fast, torch.bfloat16)


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
