"""Data-loading throughput on real EuroSAT (train split), on the CPU: images per second of

- ``fast``      hw2lib's `BatchLoader` (uint8 tensor cache, whole-batch augmentation with torch ops);
- ``textbook``  `textbook_loader`: JPEGs read from disk with PIL + torchvision.transforms.v2 in a
  `torch.utils.data.DataLoader` with worker processes,

both with the same augmentation preset (default ``color``), in one run. Only the loaders are timed
(no model). Prints a table; ``--json PATH`` also writes the numbers.

    hw2 bench data [--batches 100] [--batch-size 128] [--json reports/bench_data.json]
    python -m bench.bench_data ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hw2 bench data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=100, help="timed batches per loader")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed batches first (worker start-up, caches)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-dir", default="data", help="hw2lib.data.load_dataset's data_dir")
    p.add_argument("--source", default=None, help="EuroSAT.zip (default: the data layer's search)")
    p.add_argument("--preset", nargs="+", default=["color"], choices=["none", "basic", "color"],
                   help="augmentation preset(s)")
    p.add_argument("--workers", type=int, default=2, help="textbook DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads of this process (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p


def _cycle(loader):
    while True:
        yield from loader


def _time(batches, n_warmup: int, n: int) -> dict:
    for _ in range(n_warmup):
        next(batches)
    t0 = time.perf_counter()
    images = 0
    for _ in range(n):
        xb, _yb = next(batches)
        images += xb.shape[0]
    sec = time.perf_counter() - t0
    return {"images_per_s": images / sec, "seconds": sec, "images": images}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.batches < 1 or args.batch_size < 1 or args.warmup < 0 or args.workers < 0:
        print("error: --batches and --batch-size must be >= 1, --warmup and --workers >= 0",
              file=sys.stderr)
        return 2

    import torch

    from hw2lib import data as D

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ds = D.load_dataset(args.data_dir, source=args.source, progress=sys.stderr.isatty())
    except D.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    x_train, y_train = ds.tensors("train")

    rows = []
    for preset in args.preset:
        fast = D.BatchLoader(x_train, y_train, args.batch_size, shuffle=True, augment=preset,
                             device="cpu", drop_last=True, seed=args.seed)
        res_fast = _time(_cycle(fast), args.warmup, args.batches)
        print(f"  {preset:<6} fast      {res_fast['images_per_s']:10,.0f} img/s", file=sys.stderr,
              flush=True)
        loader = D.textbook_loader(ds, "train", batch_size=args.batch_size, augment=preset,
                                   num_workers=args.workers, shuffle=True, seed=args.seed,
                                   drop_last=True)  # no short tail batch in the timed window
        it = _cycle(loader)
        res_text = _time(it, args.warmup, args.batches)
        it.close()
        del it, loader  # shuts the workers down
        print(f"  {preset:<6} textbook  {res_text['images_per_s']:10,.0f} img/s", file=sys.stderr,
              flush=True)
        ratio = res_fast["images_per_s"] / res_text["images_per_s"]
        rows.append({"preset": preset, "loader": "fast", **res_fast, "ratio": ratio})
        rows.append({"preset": preset, "loader": "textbook", **res_text, "ratio": 1.0})

    print(f"\n{'preset':<8}{'loader':<10}{'images/s':>12}{'ratio':>8}")
    for r in rows:
        print(f"{r['preset']:<8}{r['loader']:<10}{r['images_per_s']:>12,.0f}{r['ratio']:>7.1f}x")
    print(f"\n{len(x_train):,} training images {tuple(x_train.shape[1:])}, batch {args.batch_size}, "
          f"{args.batches} timed batches; textbook: {args.workers} workers; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)")

    if args.json:
        out = {"benchmark": "data", "device": "cpu", "batch_size": args.batch_size,
               "batches": args.batches, "warmup": args.warmup, "workers": args.workers,
               "train_images": len(x_train), "image_shape": list(x_train.shape[1:]),
               "results": rows,
               "run_info": {"torch": torch.__version__, "python": platform.python_version(),
                            "platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
