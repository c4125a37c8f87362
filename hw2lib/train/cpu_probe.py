"""The CPU lever chosen by measurement: train in bf16 autocast on the CPU only where it is faster.

bf16 autocast is ~1.6× float32 for a ResNet-18 step on a CPU with AVX-512 BF16 / AMX and ~28×
slower on one without. So the choice is measured, once per machine: `measure` times a few training
steps of a small network in both precisions (in rounds, the two side by side in each), and `cpu_precision`
caches the outcome under the machine's key (CPU model, its bf16 instruction flags, torch version,
threads) in `$HW2_CACHE_DIR` (default `$XDG_CACHE_HOME/hw2` or `~/.cache/hw2`), file
`cpu_probe.json`. bf16 is chosen only when it is at least `MIN_GAIN` times faster: it changes the
numbers (a run's identity records the precision it trained in, see `experiment.run_identity`).

With bf16 chosen, the same rounds time bf16 in channels_last beside the plain layout (oneDNN's
bf16 convolutions prefer it on some CPUs): it is used where at least `CL_GAIN` times faster, and
recorded in the run's identity too (`layout`).

`$HW2_CPU_PRECISION` overrides the probe: `fp32`, `bf16` (both in the plain layout), or `auto`
(the default: probe).
On CUDA the precision is bf16 always (what `engine.fit` does there); this module is CPU only.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from hw2lib.core.machine import cpu_info

ENV = "HW2_CPU_PRECISION"
CACHE_ENV = "HW2_CACHE_DIR"
CHOICES = ("auto", "fp32", "bf16")
MIN_GAIN = 1.15  # bf16 must beat float32 by this factor to be used
CL_GAIN = 1.05  # channels_last must beat the plain layout (both bf16) by this factor
CACHE_FILE = "cpu_probe.json"
PROBE_VERSION = 4  # part of the cache key: a changed probe or rule measures again


def cache_dir() -> Path:
    """Where the probe's outcome is kept: $HW2_CACHE_DIR, else $XDG_CACHE_HOME/hw2 or ~/.cache/hw2."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hw2"


def machine_key(cpuinfo: str | None = None) -> dict:
    """What the measurement depends on: the CPU, its bf16 flags, torch, the thread count."""
    import torch

    name, flags = cpu_info(cpuinfo)
    return {"cpu": name, "bf16_flags": flags, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "probe": PROBE_VERSION}


def _step_rate(prec: str, *, model: str, stem: str, size: int, batch_size: int, steps: int,
               budget_s: float) -> float:
    """Training images/s of a fresh `model` in `prec` ("fp32", "bf16" autocast, or "bf16_cl":
    bf16 with the model and batches in channels_last) on the CPU: one untimed step (first-call
    costs), then up to `steps` timed ones within `budget_s`."""
    import torch

    from hw2lib.nets.models import build_model
    from hw2lib.train.engine import train_step

    dev = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=gen)
    y = torch.randint(0, 10, (batch_size,), generator=gen)
    crit = torch.nn.CrossEntropyLoss()
    torch.manual_seed(0)
    net = build_model(model, 10, stem=stem)
    cl = prec == "bf16_cl"
    if cl:
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    amp = prec in ("bf16", "bf16_cl")
    train_step(net, crit, opt, x, y, dev, amp=amp, channels_last=cl)
    t0, n = time.perf_counter(), 0
    while n < steps and (n == 0 or time.perf_counter() - t0 < budget_s):
        train_step(net, crit, opt, x, y, dev, amp=amp, channels_last=cl)
        n += 1
    return n * batch_size / (time.perf_counter() - t0)


def measure(*, model: str = "resnet18", stem: str = "imagenet", size: int = 64,
            batch_size: int = 32, steps: int = 3, rounds: int = 3, budget_s: float = 2.0,
            rate=_step_rate) -> dict:
    """Training images/s of `model` in float32 and in bf16 autocast on the CPU, in `rounds`
    rounds; each round times both precisions back to back (`rate`), the order swapped each
    round. Returns the best round of each (`fp32_img_s`, `bf16_img_s`, `speedup`), each round's
    bf16/fp32 ratio (`ratios`: the two of a round ran under the same load) and their median
    (`speedup_median`), which is what `choose` uses: another process that slows one round (a pip
    install, a second training) moves one ratio, not the choice. A bf16 that is 3× slower in the
    first round is not timed again."""
    seen: dict[str, list[float]] = {"fp32": [], "bf16": [], "bf16_cl": []}
    t_start = time.perf_counter()
    for r in range(rounds):
        if r and seen["bf16"][-1] * 3 < seen["fp32"][-1]:
            break  # clearly slower: no second look (nor at its layout)
        arms = ("fp32", "bf16", "bf16_cl")
        for prec in arms if r % 2 == 0 else arms[::-1]:
            seen[prec].append(rate(prec, model=model, stem=stem, size=size,
                                   batch_size=batch_size, steps=steps, budget_s=budget_s))
    fp32, bf16 = max(seen["fp32"]), max(seen["bf16"])
    ratios = [b / f for f, b in zip(seen["fp32"], seen["bf16"], strict=True)]
    cl = [c / b for b, c in zip(seen["bf16"], seen["bf16_cl"], strict=True)]
    return {"fp32_img_s": fp32, "bf16_img_s": bf16, "speedup": bf16 / fp32,
            "ratios": ratios, "speedup_median": statistics.median(ratios),
            "bf16_cl_img_s": max(seen["bf16_cl"]), "cl_ratios": cl,
            "cl_median": statistics.median(cl) if cl else None, "rounds": seen,
            "model": model, "stem": stem, "size": size, "batch_size": batch_size,
            "probe_seconds": time.perf_counter() - t_start}


def choose(result: dict, min_gain: float = MIN_GAIN) -> str:
    """'bf16' when the probe found it at least `min_gain` times faster than float32 in the
    median of its rounds (`speedup_median`, each round's two precisions side by side; else
    `speedup`), else 'fp32'."""
    speedup = result.get("speedup_median", result.get("speedup"))
    return "bf16" if speedup is not None and speedup >= min_gain else "fp32"


def choose_layout(result: dict, precision: str, min_gain: float = CL_GAIN) -> bool:
    """channels_last on the CPU: only with bf16, where the probe's rounds found it at least
    `min_gain` times the plain layout (the median of each round's two, side by side)."""
    gain = result.get("cl_median")
    return precision == "bf16" and gain is not None and gain >= min_gain


def cpu_precision(*, refresh: bool = False, probe=measure, cpuinfo: str | None = None,
                  progress=None) -> dict:
    """This CPU's training precision: {"precision": "fp32"|"bf16", "source": "env"|"cache"|"probe",
    and the probe's numbers (fp32_img_s, bf16_img_s, speedup) when there are any}. `$HW2_CPU_PRECISION`
    (fp32/bf16) decides without a probe; otherwise the cached outcome for this machine's key, or a
    new probe (`refresh` forces one) whose outcome is cached."""
    from hw2lib.core import io

    forced = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if forced not in CHOICES:
        raise ValueError(f"${ENV}={os.environ[ENV]!r}: use one of {', '.join(CHOICES)} "
                         "(auto = measure once on this machine)")
    if forced != "auto":
        return {"precision": forced, "channels_last": False, "source": "env", "env": ENV}
    key = machine_key(cpuinfo)
    digest = io.sha256_text(io.canonical(key))[:16]
    path = cache_dir() / CACHE_FILE
    cached: dict = {}
    if path.exists():
        try:
            cached = io.read_json(path, what="CPU probe cache")
        except (io.CorruptFileError, ValueError, OSError):
            cached = {}  # a broken cache is measured again and rewritten
    entry = cached.get(digest) if isinstance(cached, dict) else None
    if entry and not refresh:
        return {**entry, "source": "cache", "cache": str(path)}
    if progress:
        progress("measuring float32 vs bf16 training steps on this CPU (once per machine) …")
    result = probe()
    precision = choose(result)
    entry = {**result, "precision": precision,
             "channels_last": choose_layout(result, precision), "min_gain": MIN_GAIN,
             "cl_gain": CL_GAIN, "machine": key,
             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        io.write_json(path, {**(cached if isinstance(cached, dict) else {}), digest: entry})
    except OSError:
        pass  # a read-only home: the choice still holds for this process
    return {**entry, "source": "probe", "cache": str(path)}


def channels_last_for(device) -> bool | None:
    """The CPU's measured layout lever (True: channels_last, with bf16), None off the CPU (where
    `runtime.channels_last_for` decides by model)."""
    import torch

    return bool(cpu_precision().get("channels_last")) if torch.device(device).type == "cpu" \
        else None


def precision_for(device) -> str:
    """The precision a training on `device` runs in: 'bf16' on CUDA (fit's autocast), the
    measured (or $HW2_CPU_PRECISION's) choice on the CPU, 'fp32' elsewhere."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16"
    if dev.type == "cpu":
        return cpu_precision()["precision"]
    return "fp32"
