"""Launch-bound runs made fast, by measurement on the GPU at hand (the CUDA twin of `cpu_probe`).

On one H100 a ResNet-18/ResNeXt-18 step on 128 tiles of 64 px is over in less time than eager
PyTorch takes to launch its few hundred kernels: such a run is launch-bound, and the GPU idles.
Two levers, each chosen by a probe on this GPU (cached per GPU, torch version, model, stem,
input size and batch in `$HW2_CACHE_DIR/gpu_levers.json`):

- the train step compiled — `torch.compile(model, mode="reduce-overhead")`: CUDA graphs replay
  the whole forward and backward as one launch. It changes the arithmetic a little (fused
  kernels), so a run records it in its identity (`levers`), as the CPU precision is recorded;
  a run without a lever keeps the identity it always had. It is used where the probe finds the
  compiled step at least `MIN_GAIN` times faster and the run is long enough to pay for the
  compilation (`$HW2_COMPILE=off|on|auto`);
- the evaluation batch — the factor of the training batch (`runtime.eval_batch_size`) with the
  highest evaluation rate of `EVAL_FACTORS` (evaluation only: the numbers do not change);
- packing — several trainings at once on the one GPU (the Ray executor with a share of the GPU
  each), `full`'s default where `hw2 doctor` measured packing ResNeXt-18 at least `PACK_GAIN`
  times faster than one run (`record_packing`, `packing_choice`).

On the CPU neither lever is used (nothing is probed; `fit` runs eagerly as always).
"""

from __future__ import annotations

import os
import time

from hw2lib.core import io
from hw2lib.core.runtime import EVAL_BATCH_FACTOR

ENV = "HW2_COMPILE"
CHOICES = ("auto", "on", "off")
MIN_GAIN = 1.15  # the compiled step must beat the eager one by this factor
COMPILE_MODE = "reduce-overhead"
EVAL_FACTORS = (4, 8, 16)
MIN_STEPS = 500  # a run of fewer optimizer steps is not probed (nor compiled)
CACHE_FILE = "gpu_levers.json"
PROBE_VERSION = 1


def _cache_path():
    from hw2lib.train.cpu_probe import cache_dir

    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    """The lever cache, or {} where there is none yet or it cannot be read (measured again)."""
    path = _cache_path()
    try:
        return io.read_json(path, what="GPU lever cache") if path.exists() else {}
    except (io.CorruptFileError, OSError):
        return {}


def _write_cache(cached: dict) -> None:
    try:  # a read-only cache folder: measured again next time, nothing else lost
        io.write_json(_cache_path(), cached)
    except OSError:
        pass


def key(device, cfg) -> dict:
    """What a lever's measurement depends on."""
    import torch

    return {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
            "model": cfg["model"], "stem": cfg["stem"], "size": cfg.get("resize") or 64,
            "batch": int(cfg["batch_size"]), "probe": PROBE_VERSION}


def measure(cfg, device, *, steps: int = 30, warmup: int = 5, compile_fn=None) -> dict:
    """Training images/s of `cfg`'s model (bf16 autocast, as `fit` trains on CUDA) eager and
    compiled, the compilation's seconds, and the evaluation images/s at each factor of
    `EVAL_FACTORS`, on random data."""
    import torch

    from hw2lib.nets.models import build_model
    from hw2lib.train.engine import predict, train_step

    dev = torch.device(device)
    size, bs = cfg.get("resize") or 64, int(cfg["batch_size"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(bs, 3, size, size, generator=gen).to(dev)
    y = torch.randint(0, 10, (bs,), generator=gen).to(dev)
    crit = torch.nn.CrossEntropyLoss()

    def rate(net, model) -> tuple[float, float]:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        t0 = time.perf_counter()
        for _ in range(warmup):
            train_step(net, crit, opt, x, y, dev, amp=True)
        torch.cuda.synchronize(dev)
        t1 = time.perf_counter()
        for _ in range(steps):
            train_step(net, crit, opt, x, y, dev, amp=True)
        torch.cuda.synchronize(dev)
        return steps * bs / (time.perf_counter() - t1), t1 - t0

    torch.manual_seed(0)
    model = build_model(cfg["model"], 10, stem=cfg["stem"]).to(dev)
    eager, _ = rate(model, model)
    compiled = (compile_fn or (lambda m: torch.compile(m, mode=COMPILE_MODE)))(model)
    fast, compile_s = rate(compiled, model)
    evals = {}
    for f in EVAL_FACTORS:
        xv = torch.randn(bs * f * 4, 3, size, size, generator=gen)
        loader = [(xv[i:i + bs * f], torch.zeros(len(xv[i:i + bs * f]), dtype=torch.long))
                  for i in range(0, len(xv), bs * f)]
        predict(model, loader[:1], dev)
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        predict(model, loader, dev)
        evals[f] = len(xv) / (time.perf_counter() - t0)
    return {"eager_img_s": eager, "compiled_img_s": fast, "gain": fast / eager,
            "compile_seconds": compile_s, "eval_img_s": evals}


def choose(measured: dict, *, steps_total: int, batch: int) -> dict:
    """The levers a run of `steps_total` optimizer steps uses, from a measurement: the compiled
    step where it gains `MIN_GAIN` and the saving over the run repays the compilation twice; the
    fastest evaluation factor."""
    out = {}
    saved = steps_total * batch * (1 / measured["eager_img_s"] - 1 / measured["compiled_img_s"])
    if measured["gain"] >= MIN_GAIN and saved > 2 * measured["compile_seconds"]:
        out["compile"] = COMPILE_MODE
    evals = {int(k): v for k, v in measured["eval_img_s"].items()}
    out["eval_factor"] = max(evals, key=evals.get) if evals else EVAL_BATCH_FACTOR
    return out


def levers_for(cfg, device, *, steps_total: int, probe=measure) -> dict:
    """{"compile": mode} (only where it pays) and {"eval_factor": k} for a run of `cfg` on
    `device`: {} off CUDA. `$HW2_COMPILE` forces the compile lever on or off."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return {}
    if steps_total < MIN_STEPS and os.environ.get(ENV, "auto").strip().lower() != "on":
        return {}  # too short to repay a compilation: not worth a probe either (smoke runs)
    forced = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if forced not in CHOICES:
        raise ValueError(f"${ENV}={os.environ[ENV]!r}: use one of {', '.join(CHOICES)}")
    k = key(dev, cfg)
    digest = io.sha256_text(io.canonical(k))[:16]
    cached = _read_cache()
    entry = cached.get(digest)
    if entry is None:
        print(f"measuring the launch levers for {cfg['model']} ({cfg['stem']} stem) on this GPU "
              "(once per machine) …", flush=True)
        entry = {**probe(cfg, dev), "key": k}
        _write_cache({**cached, digest: entry})
    out = choose(entry, steps_total=steps_total, batch=int(cfg["batch_size"]))
    if forced == "off":
        out.pop("compile", None)
    elif forced == "on":
        out["compile"] = COMPILE_MODE
    return out


def identity_part(levers: dict) -> dict:
    """What of the levers goes into a run's identity: those that change its numbers (the
    compiled step), and nothing at all where none does."""
    return {"compile": levers["compile"]} if levers.get("compile") else {}


PACK_GAIN = 1.2  # packed runs must give this many times one run's images/s


def record_packing(gpu: str, pack: list[dict]) -> None:
    """Keep `hw2 doctor`'s packing measurement (copies → gain) for this GPU in the cache."""
    cached = _read_cache()
    packs = cached.get("packing", {})
    packs[gpu] = {str(q["copies"]): q["gain"] for q in pack}
    _write_cache({**cached, "packing": packs})


def packing_choice(gpu: str) -> dict:
    """{"executor": "ray", "gpus_per_run": 1/k} for the copies k the doctor measured fastest on
    this GPU, where that gain reaches `PACK_GAIN`; {} otherwise (no measurement: one run at a
    time)."""
    gains = _read_cache().get("packing", {}).get(gpu, {})
    best = max(gains.items(), key=lambda kv: kv[1], default=None)
    if best is None or best[1] < PACK_GAIN:
        return {}
    return {"executor": "ray", "gpus_per_run": 1 / int(best[0]), "measured_gain": best[1]}
