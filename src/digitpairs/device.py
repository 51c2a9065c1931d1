"""Where training runs: the CPU or a CUDA GPU, chosen by the Config field `device` ("auto", "cpu", "cuda", "cuda:N").

On CUDA the tool asks PyTorch for its deterministic algorithms, so that the same command twice on one GPU gives the
same numbers; cuBLAS needs CUBLAS_WORKSPACE_CONFIG for that, which resolve() sets before the device's first use
(importing this module changes nothing).
"""

import functools
import os
import warnings

import torch

from digitpairs.base.errors import UserError
from digitpairs.base.procfs import cpu_model
from digitpairs.spec.config import DEVICE_FORM


def resolve(name: str | torch.device | None) -> torch.device:
    """The torch.device for a Config.device value; "auto" is the GPU when PyTorch sees one. A GPU that is not there
    is a UserError (one line), raised before any training."""
    if isinstance(name, torch.device):
        if name.type == "cuda":
            deterministic()
        return name
    name = name or "auto"
    if not DEVICE_FORM.fullmatch(name):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N, not {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: PyTorch sees no CUDA GPU here (torch {torch.__version__}); use "
                            "--device cpu, or install a CUDA build of torch (README)")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                            f"numbered from 0")
        device = torch.device("cuda", index)
        deterministic()
    return device


def check(name: str | torch.device, cuda_graphs: bool = False) -> torch.device:
    """resolve(name), and a UserError when CUDA graphs are asked for where training runs on the CPU."""
    device = resolve(name)
    if cuda_graphs and device.type != "cuda":
        raise UserError(f"--cuda-graphs captures the training step on a CUDA GPU, and training here runs on the CPU "
                        f"(device {name}): drop --cuda-graphs (or cuda_graphs in the study file), or use --device cuda on a "
                        "machine with a GPU")
    return device


def graphs_by_default(name: str, cluster: bool = False) -> bool:
    """Whether a run that asks neither for --cuda-graphs nor for --no-cuda-graphs captures its steps: where training
    runs on a CUDA GPU (the faster GPU path, docs/benchmarks.md). On a Ray cluster (cluster=True) only a device
    that names cuda: with "auto" a task declares no GPU (runner/ray.py) and trains on the CPU."""
    return name.startswith("cuda") or (name == "auto" and not cluster and torch.cuda.is_available())


@functools.cache
def deterministic() -> None:
    """PyTorch's deterministic algorithms on CUDA. max_pool2d's backward is flagged nondeterministic because it adds
    with atomics; with 2x2 windows of stride 2 every input element receives at most one term, so the order of the
    additions cannot change a result: its warning is silenced, not the check."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode, read at its start
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    warnings.filterwarnings("ignore", message=".*max_pool2d_with_indices_backward.*")


@functools.cache
def name(device: torch.device) -> str:
    """What the store records: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def autocast(precision: str, device: torch.device):
    """bf16: convolutions and matmuls in bfloat16; weights, Adam, softmax and losses stay fp32. No cast cache (each
    weight is cast once per forward anyway, and a CUDA graph may not capture one)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor (random draws from the members' CPU streams) onto the device without stalling: a copy from
    pageable memory waits for the GPU to finish its queue, one from pinned memory does not."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def fill(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy a CPU tensor into an existing tensor on the device without stalling (from pinned memory, as upload)."""
    dst.copy_(src if dst.device.type == "cpu" else src.pin_memory(), non_blocking=True)
