"""Device set-up for training and evaluation: what is chosen per device (fused optimizers,
cudnn.benchmark, the evaluation batch size), per model (channels_last on CUDA), and the one way a
host tensor drawn once per epoch goes to the device (pinned, without waiting).

Everything here is a no-op or the plain float32 path on the CPU, so CPU results do not depend on
it; the CUDA choices are made by reading (no GPU was at hand) and are to be confirmed by
`hw2 bench train` on one.

Process set-up lives here too: the one place global seeds are set (`seed_everything`), the
device by name (`resolve_device`), what a run records about the machine (`run_info`), and the RNG
states a checkpoint needs to resume exactly (`rng_state` / `set_rng_state`, the train loader's
generator included).
"""

from __future__ import annotations

import platform
import random
from contextlib import contextmanager, nullcontext
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from torch import nn

import hw2lib
from hw2lib.core.machine import cpu_info

# channels_last on CUDA, per model (the registry's names). Off where grouped 3×3 convolutions
# have 2–4 channels a group (the ResNeXts), which cuDNN can run slower in channels_last; on for
# the rest. A model not named here is decided by `narrow_groups`. `hw2 bench train` measures
# each model in both formats on the GPU at hand: change an entry when it says otherwise.
CHANNELS_LAST_ON_CUDA = {"resnet18": True, "resnet34": True, "resnet50": True,
                         "dlresnet18_5x5": True, "dlresnet18_dilated": True,
                         "resnext18": False, "resnext50_32x4d": False}
NARROW_GROUP = 4  # channels per group at or below which a grouped conv counts as narrow
EVAL_BATCH_FACTOR = 4  # CUDA: evaluation batch = this × the training batch (see eval_batch_size)


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def optimizer_options(device) -> dict:
    """Extra keyword arguments for a torch optimizer on `device`: `fused=True` on CUDA (one
    kernel for the whole update instead of one per tensor group); none on the CPU, where the
    default (for-each) update keeps the results this code base has always had."""
    return {"fused": True} if _device(device).type == "cuda" else {}


@contextmanager
def cudnn_benchmark(device):
    """`torch.backends.cudnn.benchmark = True` for the body when `device` is CUDA (a training's
    shapes are fixed, so the autotuned kernels are reused); the previous value restored after.
    Nothing changes on other devices."""
    if _device(device).type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def narrow_groups(model: nn.Module, limit: int = NARROW_GROUP) -> bool:
    """Whether `model` has a grouped convolution with at most `limit` input channels a group."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.in_channels // m.groups <= limit
               for m in model.modules())


def channels_last_for(model: nn.Module, device, name: str | None = None) -> bool:
    """Whether to train and evaluate `model` in channels_last on `device`: never off CUDA; on
    CUDA the `CHANNELS_LAST_ON_CUDA` entry of its registry `name`, else on unless it has narrow
    grouped convolutions."""
    if _device(device).type != "cuda":
        return False
    if name in CHANNELS_LAST_ON_CUDA:
        return CHANNELS_LAST_ON_CUDA[name]
    return not narrow_groups(model)


def eval_batch_size(train_batch_size: int, device, factor: int = EVAL_BATCH_FACTOR) -> int:
    """Evaluation batch size: on CUDA `EVAL_BATCH_FACTOR` × the training batch (inference keeps
    no activations for a backward pass, so this fits in about the training's memory, and a val
    pass takes a quarter of the launches); elsewhere the training batch itself (no per-batch cost
    worth amortizing on the CPU, and the CPU's numbers stay as they were)."""
    bs = int(train_batch_size)
    return bs * int(factor) if _device(device).type == "cuda" else bs


def to_device_once(t: torch.Tensor, device) -> torch.Tensor:
    """`t` (a host tensor, e.g. an epoch's random draws) on `device`: on CUDA through pinned
    memory without blocking the host (the copy is queued behind the device's work instead of
    waiting for it); elsewhere `t.to(device)`."""
    device = _device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# --------------------------------------------------------------------------- training's device path


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's (first 4-d) weights are in channels_last."""
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def resolve_flag(value, name: str, device: torch.device) -> bool:
    """An "auto"/True/False option (`amp`, `channels_last`): "auto" is on on CUDA only."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{name} must be 'auto', True or False, got {value!r}")
        return device.type == "cuda"
    return bool(value)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on `device` when `amp`, else a no-op context."""
    if not amp:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def batch_to_device(xb, yb, device, channels_last: bool):
    """A batch (images, targets) on `device` without waiting, the images in channels_last when
    asked."""
    if channels_last and xb.dim() == 4:
        xb = xb.to(device, non_blocking=True, memory_format=torch.channels_last)
    else:
        xb = xb.to(device, non_blocking=True)
    return xb, yb.to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- process set-up


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's legacy global RNG and torch (CPU and every CUDA device).

    The one place global seeds are set: run entry points and notebooks call it once, before
    building models and loaders. Library functions use local generators instead.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def default_device() -> torch.device:
    """What "auto" means on this machine: CUDA when torch can use a device, else the CPU (the
    one place it is decided; the test suite's simulated GPU box replaces it)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device=None) -> torch.device:
    """`None`/"auto" -> `default_device()`; a string or torch.device otherwise.

    Asking for CUDA where there is none is an error (rather than a silent CPU run).
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; "
                         "use device='auto' or 'cpu'")
    return dev


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_info()[0] or dev.type  # Linux: the CPU's marketing name from /proc/cpuinfo


def _dist_version(name: str) -> str | None:
    """An installed distribution's version, read without importing it (importing torchvision
    would load its whole model zoo into every process that only records versions)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def run_info(device=None) -> dict:
    """Versions (python, torch, torchvision, numpy, hw2lib), platform and the device's name."""
    dev = resolve_device(device)
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _dist_version("torchvision"), "numpy": np.__version__,
            "hw2lib": hw2lib.__version__, "platform": platform.platform(), "device": str(dev),
            "device_name": _device_name(dev), "cuda": torch.version.cuda,
            "cpu_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- RNG states


def loader_generator(loader) -> torch.Generator | None:
    """The train loader's `generator` (a torch.Generator: the BatchLoader's), or None."""
    gen = getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


def rng_state(loader) -> dict:
    """Every RNG state a resumed run needs (torch CPU/CUDA, Python, NumPy, the loader's
    generator), as tensors and built-in types (`torch.load(weights_only=True)` reads them)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    gen = loader_generator(loader)
    if gen is not None:
        state["loader"] = gen.get_state()
    return state


def set_rng_state(state: dict, loader) -> None:
    """Restore what `rng_state` recorded (CUDA only where the device count matches)."""
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    gen = loader_generator(loader)
    if gen is not None and "loader" in state:
        gen.set_state(state["loader"])
