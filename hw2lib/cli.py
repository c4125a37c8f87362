"""`hw2` — the command line: data, bench, run, report."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from hw2lib.run import NOTEBOOKS, PROFILES, REPO_ROOT, RunnerError, parse_value


def _cmd_data(args) -> int:
    from hw2lib.data import DataError, load_dataset

    try:
        ds = load_dataset(args.store, source=args.source, image_folder=args.data_dir,
                          image_size=args.image_size, split_seed=args.seed, progress=True)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    splits = ("train", "val", "test")
    counts = {s: ds.class_counts(s) for s in splits}
    width = max(len(c) for c in ds.classes) + 2
    print(f"\n{'class':<{width}}" + "".join(f"{s:>8}" for s in splits) + f"{'total':>8}")
    for i, c in enumerate(ds.classes):
        row = [counts[s][i] for s in splits]
        print(f"{c:<{width}}" + "".join(f"{n:>8,}" for n in row) + f"{sum(row):>8,}")
    tot = [sum(counts[s]) for s in splits]
    print(f"{'total':<{width}}" + "".join(f"{n:>8,}" for n in tot) + f"{sum(tot):>8,}")
    print(f"\nimages:  {ds.root}\nsplits:  {ds.split_csv}\ncache:   {ds.cache_path} "
          f"({tuple(ds.x.shape)} uint8, {ds.x.numel() / 1e6:.0f} MB)")
    return 0


def _bench_module(name: str):
    bench_dir = REPO_ROOT / "bench"
    if not (bench_dir / f"bench_{name}.py").exists():
        raise RunnerError(f"benchmark {bench_dir / f'bench_{name}.py'} not found "
                          "(benchmarks live in the source checkout's bench/ folder)")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"bench.bench_{name}")


def _cmd_bench(args) -> int:
    return _bench_module(args.which).main(args.rest) or 0


def _overrides(pairs) -> dict:
    return {name: parse_value(value) for name, value in (pairs or [])}


def _cmd_run(args) -> int:
    from hw2lib.run import choose_profile, run_notebook

    profile, why = choose_profile(args.profile)
    print(f"hw2 run: {why}")
    out = Path(args.out) if args.out else REPO_ROOT / "reports" / profile
    extra = {}
    if args.notebook == "A-vis" and "checkpoint" not in dict(args.param or []):
        extra["checkpoint"] = str((out / "runs" / "A-train" / "model" / "best.pt").resolve())
    res = run_notebook(args.notebook, profile, _overrides(args.param), out, extra=extra)
    if res.status != "passed":
        where = f"; its page: {out / res.html}" if res.html else ""
        print(f"error: {args.notebook} failed: {res.error}{where}", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args) -> int:
    from hw2lib.run import report

    only = args.only or list(NOTEBOOKS)
    overrides = {nb: _overrides(args.param) for nb in only} if args.param else None
    index, results = report(args.profile, args.out, only, overrides, force=args.force)
    bad = [r for r in results if r.status != "passed"]
    for r in bad:
        where = f" — page: {index.parent / r.html}" if r.html else ""
        print(f"error: {r.notebook} {r.status}: {r.error}{where}", file=sys.stderr)
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hw2", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="get, verify, split and cache EuroSAT (or any ImageFolder)")
    d.add_argument("--source", help="a EuroSAT zip or extracted folder to use instead of searching")
    d.add_argument("--data-dir", help="any other ImageFolder root (class folders of images)")
    d.add_argument("--store", default="data", help="where extracted data, splits and caches go")
    d.add_argument("--image-size", type=int, default=64)
    d.add_argument("--seed", type=int, default=0, help="split seed")
    d.set_defaults(func=_cmd_data)

    b = sub.add_parser("bench", help="throughput benchmarks (bench/): data or train")
    b.add_argument("which", choices=["data", "train"])
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (--help)")
    b.set_defaults(func=_cmd_bench)

    r = sub.add_parser("run", help="execute one notebook with papermill and render its HTML page")
    r.add_argument("notebook", choices=NOTEBOOKS)
    r.add_argument("--profile", default="smoke", choices=("auto",) + PROFILES)
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="override one parameter (VALUE read as YAML)")
    r.add_argument("--out", help="output folder (default reports/<profile>/)")
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser("report", help="run the notebooks in order and write index.html")
    rep.add_argument("--profile", default="auto", choices=("auto",) + PROFILES)
    rep.add_argument("--out", help="output folder (default reports/<profile>/)")
    rep.add_argument("--only", nargs="+", choices=NOTEBOOKS, metavar="NOTEBOOK")
    rep.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="override one parameter in every notebook run")
    rep.add_argument("--force", action="store_true", help="re-run notebooks that already passed")
    rep.set_defaults(func=_cmd_report)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
