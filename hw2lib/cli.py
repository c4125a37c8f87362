"""`hw2` — the command line: data, bench, plan, run, report, doctor."""

from __future__ import annotations

import argparse
import importlib
import sys

from hw2lib.core import paths
from hw2lib.gpu import doctor
from hw2lib.report.run import NOTEBOOKS, PROFILES, REPO_ROOT, RunnerError, parse_value


def _cmd_data(args) -> int:
    import warnings

    from hw2lib.data import DataError, DataWarning, load_dataset

    def fail(message) -> int:
        print("error: " + " ".join(str(message).split("\n")), file=sys.stderr)
        return 2

    if args.source is not None and args.image_folder is not None:
        return fail("--source and --image-folder are alternatives: --source for EuroSAT (a zip "
                    "or an extracted folder), --image-folder for any other ImageFolder root; give "
                    "one of them")
    if args.image_size < 1:
        return fail(f"--image-size must be a positive number of pixels (the side of the square "
                    f"every image is decoded to, e.g. 64), got {args.image_size}")
    error = None
    with warnings.catch_warnings(record=True) as caught:  # printed as one line each
        warnings.simplefilter("always", DataWarning)
        try:
            ds = load_dataset(paths.data_dir(args.data_dir), source=args.source,
                              image_folder=args.image_folder, image_size=args.image_size,
                              split_seed=args.seed, progress=True)
        except DataError as exc:
            error = exc
        except OSError as exc:  # e.g. --data-dir on a read-only disk
            error = (f"{exc}: check that the data folder ({paths.data_dir(args.data_dir)}) is a "
                     "folder you can write to")
    for w in caught:
        kind = "" if issubclass(w.category, DataWarning) else f"{w.category.__name__}: "
        print(f"warning: {kind}{w.message}", file=sys.stderr)
    if error is not None:
        return fail(error)
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


def _bench_module(name: str, prefix: str = "bench_"):
    bench_dir = REPO_ROOT / "bench"
    if not (bench_dir / f"{prefix}{name}.py").exists():
        raise RunnerError(f"benchmark {bench_dir / f'{prefix}{name}.py'} not found "
                          "(benchmarks live in the source checkout's bench/ folder)")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"bench.{prefix}{name}")


def _cmd_bench(args) -> int:
    return _bench_module(args.which).main(args.rest) or 0


def _overrides(pairs) -> dict:
    return {name: parse_value(value) for name, value in (pairs or [])}


def _cmd_run(args) -> int:
    from hw2lib.report.run import (
        DEPENDS,
        choose_profile,
        dependency_inputs,
        locked,
        plan_parameters,
        prepare_out,
        read_status,
        run_notebook,
        sigterm_as_interrupt,
    )

    overrides = _overrides(args.param)
    profile, why = choose_profile(args.profile, cpu_ok=overrides.get("device") == "cpu")
    name = args.notebook
    params = plan_parameters(profile, [name], {name: overrides}, force=args.force,
                             per_notebook=True)[name]
    out = prepare_out(args.out or paths.reports_root() / profile)
    with locked(out), sigterm_as_interrupt():
        print(f"hw2 run: {why}; parameters checked")
        extra, blocked = {}, None
        if not set(DEPENDS.get(name, {})) & set(params):  # inputs not given with -p: the folder's
            extra, blocked, _ = dependency_inputs(name, out, read_status(out)[0])
        if blocked:
            print(f"error: {name}: {blocked}", file=sys.stderr)
            return 1
        try:
            res = run_notebook(name, profile, {**params, **extra}, out)
        except KeyboardInterrupt:
            print(f"error: {name} interrupted (Ctrl-C or SIGTERM); its page shows what ran",
                  file=sys.stderr)
            return 130
    if res.status != "passed":
        where = f"; its page: {out / res.html}" if res.html else ""
        print(f"error: {name} failed: {res.error}{where}", file=sys.stderr)
        return 1
    return 0


def _cmd_plan(args) -> int:
    from hw2lib.core import io
    from hw2lib.report.plan import format_plan, format_seconds, plan, summary
    from hw2lib.report.run import choose_profile

    profile, why = choose_profile(args.profile, cpu_ok=True)  # a plan trains nothing
    overrides = _overrides(args.param)
    rows = plan(profile, args.only, overrides)
    print(f"hw2 plan: {why}; nothing is trained")
    timing = None
    if args.time:
        import torch

        est = _bench_module("estimate", prefix="")  # the probe runs fit with each recipe
        probes = est.estimate(rows, device=args.device)
        executor = overrides.get("executor", "local")
        timing = {**probes, **est.total_time(rows, executor=executor,
                                             gpus=torch.cuda.device_count(),
                                             gpus_per_run=float(overrides.get("gpus_per_run", 1.0)))}
    print(format_plan(rows))
    if timing is not None:
        line = (f"estimated time on {timing['device']}: {format_seconds(timing['serial_seconds'])} one "
                "after another")
        if timing["executor"] == "ray":
            line += (f"; with ray, {timing['concurrent']} at once: ≥ {format_seconds(timing['seconds'])} "
                     "(perfect packing assumed)")
        if timing["unknown"]:
            line += f"; {timing['unknown']} trainings of unknown size left out"
        print(line)
        from hw2lib.train.checkpoints import CHECKPOINT_EVERY_S

        print("the model: " + est.OVERHEAD_MODEL.format(every=CHECKPOINT_EVERY_S))
    if args.json:
        io.write_json(args.json, {"profile": profile, "trainings": rows,
                                  "summary": summary(rows), "time": timing})
        print(f"\nplan written to {args.json}")
    return 0


def _cmd_doctor(args) -> int:
    return doctor.run_from_args(args)


def _cmd_compare(args) -> int:
    from hw2lib.report import compare

    try:
        return compare.main(args)
    except ValueError as exc:
        raise RunnerError(str(exc)) from None


def _cmd_report(args) -> int:
    from hw2lib.report.run import report

    try:
        index, results = report(args.profile, args.out, args.only, _overrides(args.param),
                                force=args.force, rehearse=args.rehearse)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C or SIGTERM); index.html was written with what "
              "finished", file=sys.stderr)
        return 130
    bad = [r for r in results if r.status != "passed"]
    for r in bad:
        where = f" — page: {index.parent / r.html}" if r.html else ""
        print(f"error: {r.notebook} {r.status}: {r.error}{where}", file=sys.stderr)
    failed_runs = []
    if args.rehearse:
        from hw2lib.report.rehearsal import rehearsal_failures

        failed_runs = rehearsal_failures(index.parent, [r.notebook for r in results])
        for line in failed_runs:
            print(f"error: rehearsal: {line}", file=sys.stderr)
        if not bad and not failed_runs:
            print(f"rehearsal passed: every training ran and every page rendered "
                  f"({index.parent})")
    return 1 if bad or failed_runs else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hw2", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="get, verify, split and cache EuroSAT (or any ImageFolder)")
    d.add_argument("--source", help="a EuroSAT zip or extracted folder to use instead of searching")
    d.add_argument("--image-folder", help="any other ImageFolder root (class folders of "
                   "images); an alternative to --source")
    d.add_argument("--data-dir", help="where extracted data, splits and caches go (default: the "
                   "project's data/ from any directory, or $HW2_DATA_DIR), as the notebooks' "
                   "data_dir")
    d.add_argument("--image-size", type=int, default=64,
                   help="side in pixels of the square every image is decoded to (default 64)")
    d.add_argument("--seed", type=int, default=0, help="split seed")
    d.set_defaults(func=_cmd_data)

    b = sub.add_parser("bench", help="throughput benchmarks (bench/): data or train")
    b.add_argument("which", choices=["data", "train"])
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (--help)")
    b.set_defaults(func=_cmd_bench)

    pl = sub.add_parser("plan", help="print every training a report would run, resolved, "
                        "without training anything")
    pl.add_argument("--profile", default="auto", choices=("auto",) + PROFILES)
    pl.add_argument("--only", nargs="+", choices=NOTEBOOKS, metavar="NOTEBOOK")
    pl.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="set one parameter in every selected notebook that defines it")
    pl.add_argument("--json", help="also write the plan as JSON to this file")
    pl.add_argument("--time", action="store_true",
                    help="estimate each training's time from a short probe of its recipe (fit for "
                    "2 short epochs: loader, augmentation, mixing, EMA, eval, checkpoints) on "
                    "this machine's device, and the total (bench/estimate.py)")
    pl.add_argument("--device", default="auto", help="device of the --time probe (auto, cpu, cuda)")
    pl.set_defaults(func=_cmd_plan)

    r = sub.add_parser("run", help="execute one notebook with papermill and render its HTML page")
    r.add_argument("notebook", choices=NOTEBOOKS)
    r.add_argument("--profile", default="smoke", choices=("auto",) + PROFILES)
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="override one parameter (VALUE read as YAML)")
    r.add_argument("--out", help="output folder (default reports/<profile>/)")
    r.add_argument("--force", action="store_true", help="retrain the notebook's runs")
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser("report", help="run the notebooks in order and write index.html")
    rep.add_argument("--profile", default="auto", choices=("auto",) + PROFILES)
    rep.add_argument("--out", help="output folder (default reports/<profile>/)")
    rep.add_argument("--only", nargs="+", choices=NOTEBOOKS, metavar="NOTEBOOK")
    rep.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set one parameter in every selected notebook that defines it")
    rep.add_argument("--force", action="store_true",
                     help="re-run the notebooks and retrain every run they make")
    rep.add_argument("--rehearse", action="store_true",
                     help="every training of the profile cut to one step of a handful of images "
                     "on the CPU, every page rendered (minutes): `--profile full --rehearse` "
                     "finds a crash in full's paths before any GPU time is spent")
    rep.set_defaults(func=_cmd_report)

    from hw2lib.report import compare

    cmp_ = sub.add_parser("compare", parents=[compare.parser(add_help=False)],
                          help="two report folders side by side: every headline number and "
                          "finding, the run identities, and what flipped or changed")
    cmp_.set_defaults(func=_cmd_compare)

    doc = sub.add_parser("doctor", parents=[doctor.parser(add_help=False)],
                         help="measure the GPU path in one call (environment, CUDA tests, "
                         "bench, a Track-2 training, plan --time) into reports/doctor/; a tiny "
                         "mode on the CPU")
    doc.set_defaults(func=_cmd_doctor)
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
