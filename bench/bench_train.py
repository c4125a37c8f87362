"""Training throughput (images/s) on real EuroSAT, per model and variant, three ways, in one run:

- ``raw``       the train step alone, on one fixed in-memory batch (the model's ceiling);
- ``fast``      hw2lib's `BatchLoader` (uint8 tensor cache, whole-batch augmentation on the device);
- ``textbook``  a `torch.utils.data.DataLoader` reading JPEGs with torchvision transforms
                (`textbook_loader`, `--workers` processes).

Models (`--models`, or `all` for every model of the study: the 64-px nets and ResNet-50 also at
224 px) are written ``name[:stem][@size]``, e.g. ``resnet18:small`` or ``resnet50@224``. Variants
(`--variants`): ``fp32``; ``bf16`` (autocast); ``bf16_cl`` (+ channels_last: what `fit` does on
CUDA); ``bf16_cl_compile`` (+ `torch.compile`, its compile time reported apart). The default is
all four on CUDA, and on the CPU ``fp32`` (+ ``bf16`` where `hw2lib.train.cpu_probe` measured it faster
there: the choice and the probe's numbers are printed and kept in the JSON). The textbook loader
drops its short last batch (and pins memory on CUDA), so no tail batch lands in the timed window.
`--pack K [K ...]` also runs K copies of the first model's last variant at once (separate
processes on the same device) and reports their total images/s against one, for each K: what
packing several small trainings on one GPU gains (executor="ray", gpus_per_run < 1).
Same optimizer (SGD, momentum 0.9) and `fit`'s own step (`hw2lib.train.engine.train_step`). Each mode
runs `--warmup` untimed steps first. Run: ``hw2 bench train [--models all] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STUDY_MODELS = ("resnet18", "resnet18:small", "resnet34", "resnet50", "resnet50@224",
                "dlresnet18_5x5", "dlresnet18_dilated", "resnext18", "resnext50_32x4d")
VARIANTS = {"fp32": (False, False, False), "bf16": (True, False, False),
            "bf16_cl": (True, True, False), "bf16_cl_compile": (True, True, True)}


def parse_model(spec: str, stem: str = "imagenet") -> tuple[str, str, int | None]:
    """``name[:stem][@size]`` → (name, stem, size or None)."""
    size = None
    if "@" in spec:
        spec, s = spec.split("@", 1)
        size = int(s)
    name, _, st = spec.partition(":")
    return name, st or stem, size


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hw2 bench train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", help="a hw2lib.nets.models name (default resnet18)")
    p.add_argument("--models", nargs="+", default=None,
                   help="several models, name[:stem][@size], or 'all' (the study's); default "
                   "--model")
    p.add_argument("--variants", nargs="+", default=None, choices=tuple(VARIANTS),
                   help="precision/layout/compile variants (default all on CUDA; on the CPU fp32, "
                   "+ bf16 where the CPU probe chose it)")
    p.add_argument("--pack", type=int, nargs="*", default=[],
                   help="also run this many copies at once (each K given) and report their total "
                   "img/s")
    p.add_argument("--stem", default="imagenet", choices=("imagenet", "small"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=None,
                   help="timed steps per mode (default 20 on the CPU, 200 on CUDA)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps before timing (default 5 on the CPU, 20 on CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--augment", default="basic", help="augmentation preset of both loaders")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the textbook loader")
    p.add_argument("--modes", nargs="+", default=["raw", "fast", "textbook"],
                   choices=("raw", "fast", "textbook"))
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds over the modes (taking turns); the best round of each is reported")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (the same as --variants bf16_cl_compile on CUDA)")
    p.add_argument("--data-dir", default="data", help="hw2lib.data.load_dataset's data_dir")
    p.add_argument("--image-size", type=int, default=64,
                   help="side the images are decoded to (load_dataset's image_size, default 64)")
    p.add_argument("--source", default=None, help="EuroSAT.zip (default: the data layer's search)")
    p.add_argument("--image-folder", default=None, help="any other ImageFolder root instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds: once spent, the models and variants still to bench are left "
                   "out (listed in the JSON's left_out)")
    p.add_argument("--json", default=str(REPO_ROOT / "reports" / "bench" / "train.json"),
                   help="where to write the results as JSON (default %(default)s)")
    return p


def _cycle(loader):
    """Batches of `loader`, epoch after epoch."""
    for _ in itertools.count():
        yield from loader


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    import torch
    from torch import nn

    from hw2lib import data as D
    from hw2lib.core import runtime
    from hw2lib.nets.models import build_model
    from hw2lib.train import engine as E
    from hw2lib.train.cpu_probe import cpu_precision

    device = runtime.resolve_device(args.device)
    cuda = device.type == "cuda"
    batches = args.batches or (200 if cuda else 20)
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 5)
    if batches < 1 or warmup < 0 or args.batch_size < 1 or args.repeats < 1 or any(
            k < 1 for k in args.pack):
        print("error: --batches, --batch-size and --repeats must be >= 1, --warmup and --pack "
              ">= 0", file=sys.stderr)
        return 2
    specs = list(STUDY_MODELS) if args.models == ["all"] else (args.models or [args.model])
    try:
        models = [parse_model(m, args.stem) for m in specs]
    except ValueError as exc:
        print(f"error: --models: {exc}", file=sys.stderr)
        return 2
    cpu_choice = None if cuda else cpu_precision(progress=lambda m: print(m, file=sys.stderr))
    default_variants = ["fp32", "bf16", "bf16_cl", "bf16_cl_compile"] if cuda else (
        ["bf16_cl_compile"] if args.compile else
        ["fp32", "bf16"] if cpu_choice["precision"] == "bf16" else ["fp32"])
    variants = args.variants or default_variants
    runtime.seed_everything(args.seed)

    ds = D.load_dataset(args.data_dir, source=args.source, image_folder=args.image_folder,
                        image_size=args.image_size, progress=sys.stderr.isatty())
    x_train, y_train = ds.tensors("train")
    criterion = nn.CrossEntropyLoss().to(device)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def bench_one(name, stem, size, variant) -> dict:
        amp, cl, comp = VARIANTS[variant]
        torch.manual_seed(args.seed)
        model = build_model(name, ds.num_classes, stem=stem).to(device)
        if cl:
            model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if comp else model
        net.train()
        # every mode starts from the same weights and a fresh optimizer (a fair comparison)
        init_state = {k: v.clone() for k, v in model.state_dict().items()}
        opt = None

        def reset():
            nonlocal opt
            model.load_state_dict(init_state)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(xb, yb):  # fit's own step
            return E.train_step(net, criterion, opt, xb, yb, device, amp=amp, channels_last=cl)

        def timed(batch_iter) -> dict:
            sync()
            t0 = time.perf_counter()
            for _ in range(warmup):
                step(*next(batch_iter))
            sync()
            # the host's cost of a step: two steps issued after a sync (the queue empty), before
            # waiting for the device — on a GPU, a step whose host time is most of its wall time
            # is launch-bound (the GPU waits for kernels to be launched)
            th = time.perf_counter()
            for _ in range(2):
                step(*next(batch_iter))
            host_ms = 1000 * (time.perf_counter() - th) / 2
            sync()
            t1 = time.perf_counter()
            images = 0
            for _ in range(batches):
                xb, yb = next(batch_iter)
                step(xb, yb)
                images += yb.shape[0]
            sync()
            sec = time.perf_counter() - t1
            return {"images_per_s": images / sec, "ms_per_step": 1000 * sec / batches,
                    "host_ms_per_step": host_ms, "seconds": sec, "images": images,
                    "warmup_seconds": t1 - t0}

        def fast_loader():
            return D.BatchLoader(x_train, y_train, args.batch_size, shuffle=True,
                                 augment=args.augment, device=device, drop_last=True,
                                 seed=args.seed, resize=size)

        def run(mode: str) -> dict:
            reset()
            if mode == "raw":
                xb, yb = next(iter(fast_loader()))
                return timed(itertools.repeat((xb, yb)))
            if mode == "fast":
                return timed(_cycle(fast_loader()))
            # drop_last: no short tail batch in the timed window (nor a recompile when compiled)
            loader = D.textbook_loader(ds, "train", batch_size=args.batch_size,
                                       augment=args.augment, num_workers=args.workers,
                                       shuffle=True, seed=args.seed, resize=size, drop_last=True,
                                       pin_memory=cuda)
            it = _cycle(loader)
            try:
                return timed(it)
            finally:
                it.close()
                del it, loader  # shuts the workers down

        # Modes take turns (round-robin) `--repeats` times; the best round of each is reported,
        # the most robust estimate on a machine shared with other work.
        results: dict[str, dict] = {}
        for rep in range(args.repeats):
            for mode in args.modes:
                res = run(mode)
                rates = [*results.get(mode, {}).get("rounds", []), res["images_per_s"]]
                if mode not in results or res["images_per_s"] > results[mode]["images_per_s"]:
                    results[mode] = res
                results[mode]["rounds"] = rates
                print(f"  {name}:{stem}@{size or ds.x.shape[-1]} {variant:<16} round "
                      f"{rep + 1}/{args.repeats} {mode:<9} {res['images_per_s']:8.1f} img/s",
                      file=sys.stderr, flush=True)
        raw = results.get("raw", {}).get("images_per_s")
        for res in results.values():
            res["vs_raw"] = res["images_per_s"] / raw if raw else None
        return results

    table, left_out = [], []
    t_start = time.perf_counter()
    for name, stem, size in models:
        for variant in variants:
            if args.budget and table and time.perf_counter() - t_start > args.budget:
                left_out.append(f"{name}:{stem}@{size or ds.x.shape[-1]} {variant}")
                continue
            res = bench_one(name, stem, size, variant)
            table.append({"model": name, "stem": stem, "size": size or int(ds.x.shape[-1]),
                          "variant": variant, "results": res})
    pack = [_pack(args, models[0], variants[-1], table, k) for k in args.pack] or None

    info = runtime.run_info(device)
    out = {"benchmark": "train", "batch_size": args.batch_size, "batches": batches,
           "warmup": warmup, "repeats": args.repeats, "augment": args.augment,
           "workers": args.workers, "device": str(device), "device_name": info["device_name"],
           "num_classes": ds.num_classes, "table": table, "pack": pack, "run_info": info,
           "cpu_precision": cpu_choice, "left_out": left_out}
    print(f"\ntraining throughput, batch {args.batch_size}, {batches} timed steps after {warmup} "
          f"warm-up (best of {args.repeats}), on {info['device_name']} ({device})")
    print(f"{'model':<28}{'variant':<17}{'mode':<10}{'img/s':>10}{'ms/step':>10}{'vs raw':>8}"
          f"{'warm-up s':>11}")
    for row in table:
        label = f"{row['model']}:{row['stem']}@{row['size']}"
        for mode, res in row["results"].items():
            rel = f"{res['vs_raw']:.3f}" if res["vs_raw"] is not None else "-"
            print(f"{label:<28}{row['variant']:<17}{mode:<10}{res['images_per_s']:>10.1f}"
                  f"{res['ms_per_step']:>10.1f}{rel:>8}{res['warmup_seconds']:>11.1f}")
    if cpu_choice:
        print(f"\n{describe_cpu_choice(cpu_choice)}")
    for pk in pack or []:
        print(f"\npacking {pk['copies']} × {pk['model']} ({pk['variant']}, raw steps): "
              f"{pk['total_images_per_s']:.1f} img/s in all vs {pk['one_images_per_s']:.1f} "
              f"alone ({pk['gain']:.2f}×)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0


def describe_cpu_choice(c: dict) -> str:
    """One line: the CPU precision `run_experiment` trains in here, and why."""
    if c["source"] == "env":
        return f"CPU precision: {c['precision']} (set by ${c['env']})"
    line = (f"CPU precision: {c['precision']} — probe ({c['model']}, batch {c['batch_size']}, "
            f"{c['size']} px): fp32 {c['fp32_img_s']:.1f} img/s, bf16 {c['bf16_img_s']:.1f} img/s "
            f"({c['speedup']:.2f}×; bf16 needs ≥ {c['min_gain']:g}×), {c['source']} {c['cache']}")
    if c.get("cl_median") is not None:
        line += (f"; channels_last {c['bf16_cl_img_s']:.1f} img/s ({c['cl_median']:.2f}× the plain "
                 f"layout; needs ≥ {c['cl_gain']:g}×): {'used' if c['channels_last'] else 'not used'}")
    return line


def _pack(args, model, variant, table, copies: int) -> dict:
    """K copies of one model's raw step at once, in K processes on the same device: their total
    images/s against the single run measured above."""
    import tempfile

    name, stem, size = model
    spec = f"{name}:{stem}" + (f"@{size}" if size else "")
    one = next(r for r in table if r["model"] == name and r["stem"] == stem
               and r["variant"] == variant)["results"]
    one = one.get("raw", next(iter(one.values())))["images_per_s"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--models", spec, "--variants",
               variant, "--modes", "raw", "--device", args.device, "--batch-size",
               str(args.batch_size), "--data-dir", args.data_dir, "--seed", str(args.seed),
               "--image-size", str(args.image_size)]
        if args.source:
            cmd += ["--source", args.source]
        if args.image_folder:
            cmd += ["--image-folder", args.image_folder]
        if args.batches:
            cmd += ["--batches", str(args.batches)]
        if args.warmup is not None:
            cmd += ["--warmup", str(args.warmup)]
        procs = [subprocess.Popen(cmd + ["--json", f"{tmp}/{i}.json"], stdout=subprocess.DEVNULL)
                 for i in range(copies)]
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError("a packed copy failed (see its stderr above)")
        rates = [json.loads(Path(f"{tmp}/{i}.json").read_text())["table"][0]["results"]["raw"]
                 ["images_per_s"] for i in range(copies)]
    return {"model": spec, "variant": variant, "copies": copies, "rates": rates,
            "total_images_per_s": sum(rates), "one_images_per_s": one, "gain": sum(rates) / one}


if __name__ == "__main__":
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
