"""ONNX Runtime as the serving path: the model exported once to a cache folder, kept only if it matches PyTorch.

On two CPU cores ONNX Runtime runs the four backbones in fp32 several times faster than eager PyTorch, with the
same logits to rounding (``benchmarks/results/app_latency.json``). Each model is exported with
``torch.onnx.export`` (batch size left free, so the four flips of a cell go as one batch) to
:data:`CACHE_DIR`, named by a hash of its weights and the exporter's version, so a restart reuses it. Before it
serves, its probabilities on real cells must match eager fp32's within :data:`serving.fast.PARITY_TOLERANCE`,
as the bf16 path's must; otherwise, or without onnxruntime, the model runs in PyTorch and the reason is given.
The PyTorch model stays loaded for the parity check and Grad-CAM.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from serving import fast

PRECISION = "ONNX Runtime fp32"
CACHE_SETTING = "CNMC_ONNX_CACHE"
CACHE_DIR = Path(
    os.environ.get(CACHE_SETTING) or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cnmc/onnx"
)


class Session(torch.nn.Module):
    """An ONNX Runtime session behind a module's call, so that it fits :class:`serving.fast.Runner`."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(logits)


def model_key(model: torch.nn.Module, input_size: tuple[int, ...]) -> str:
    """Names the export: the weights, the input size and the exporter that turned them into a graph."""
    digest = hashlib.sha256(f"{torch.__version__} {type(model).__name__} {input_size}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def export(model: torch.nn.Module, input_size: tuple[int, ...], cache_dir: Path | None = None) -> Path:
    """The model's ONNX file in ``cache_dir`` (:data:`CACHE_DIR`), exported now unless an earlier start left it."""
    path = Path(cache_dir or CACHE_DIR) / f"{model_key(model, input_size)}.onnx"
    if path.is_file():
        return path
    example = torch.zeros(2, *input_size)  # batch 2, not 1: torch.export would fix a size-1 dimension
    program = torch.onnx.export(
        model.eval(), (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_file = path.with_suffix(f".{os.getpid()}.partial")  # another process may be exporting the same model
    program.save(partial_file, external_data=False)
    partial_file.replace(path)
    return path


def session(path: Path, threads: int | None = None) -> Session:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()  # the cores PyTorch was given
    options.inter_op_num_threads = 1
    # Idle threads must not spin: PyTorch (Grad-CAM, the fallback) and other requests share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return Session(onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))


def onnx_runner(
    model: torch.nn.Module,
    x: torch.Tensor,
    probabilities: Callable[[torch.Tensor], torch.Tensor],
    cache_dir: Path | None = None,
) -> tuple[fast.Runner | None, str | None]:
    """An ONNX Runtime runner whose ``probabilities(logits)`` on the real cells ``x`` match eager fp32's.

    Returns the runner, or None and why not: onnxruntime missing, the export failing, or the outputs differing.
    """
    try:
        import onnxruntime  # noqa: F401  (optional: without it the app serves PyTorch)
    except ImportError:
        return None, "onnxruntime is not installed, so PyTorch is used"
    try:
        runner = fast.Runner(PRECISION, session(export(model, tuple(x.shape[1:]), cache_dir)))
        candidate = probabilities(runner(x))
    except Exception as error:  # the exporter and the runtime raise their own types; PyTorch still serves
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        return None, f"ONNX export or run failed ({first_line}), so PyTorch is used"
    check = fast.parity(probabilities(fast.fp32_runner(model)(x)), candidate)
    if not check.ok:
        labels = "" if check.same_labels else " and changes a label"
        return None, (
            f"ONNX Runtime differs from PyTorch by {check.max_difference:.3f}{labels} on real cells, so PyTorch is used"
        )
    return runner, None
