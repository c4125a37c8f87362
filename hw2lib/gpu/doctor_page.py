"""`hw2 doctor`'s page: doctor.md from the report that doctor.json holds (see `hw2lib.gpu.doctor`)."""

from __future__ import annotations


def _fmt(v, spec=".1f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(rep: dict) -> str:
    from hw2lib.report.plan import format_seconds

    env = rep["environment"]
    nv = env["nvidia"]
    lines = [f"# hw2 doctor — {rep['mode']} mode, {rep['finished']}", ""]
    if env.get("unusable_gpu"):
        lines += [f"> **NVIDIA device unusable by torch:** {env['unusable_gpu']}", ""]
    if rep.get("data", {}).get("note"):
        lines += [f"> {rep['data']['note']}", ""]
    gpus = ", ".join(f"{g['name']} ({g.get('memory')})" for g in nv["gpus"]) or "none seen"
    lines += ["## Environment", "", "| what | value |", "|---|---|",
              f"| NVIDIA driver | {nv['driver'] or '–'} |", f"| GPUs (nvidia-smi) | {gpus} |",
              f"| torch | {env['torch']} (CUDA {env['torch_cuda'] or 'none'}, cuDNN "
              f"{env.get('cudnn') or '–'}) |",
              f"| device | {env['device_name']} ({env['device']}) |",
              f"| cores / torch threads | {env['cores']} / {env['cpu_threads']} |",
              f"| python / platform | {env['python']} / {env['platform']} |"]
    if env.get("cpu_precision", {}).get("error"):
        lines.append(f"| CPU precision | probe failed: {env['cpu_precision']['error']} |")
    elif env.get("cpu_precision"):
        cp = env["cpu_precision"]
        lines.append(f"| CPU precision | {cp['precision']} ({cp['source']}"
                     + (f", bf16 {cp['speedup']:.2f}× fp32" if cp.get("speedup") else "") + ") |")
    t = rep.get("tests")
    lines += ["", "## CUDA-marked tests", ""]
    if t and "error" in t:
        lines.append(f"**failed:** {t['error']}")
    elif t is None:
        lines.append("skipped")
    elif not t.get("ran") or "passed" not in t:
        lines.append(t.get("reason", "no result"))
    else:
        lines.append(f"{t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                     f"{t['skipped']} skipped in {t['seconds']:.0f} s (`{t['command']}`)")
        lines += [f"- FAILED {f['test']}: {f['message']}" for f in t["failures"]]
    b = rep.get("bench")
    lines += ["", "## Training throughput (`hw2 bench train`)", ""]
    if b and "error" in b:
        lines.append(f"**failed:** {b['error']}")
    elif b:
        lines += ["| model | variant | raw img/s | fast loader img/s | warm-up s |",
                  "|---|---|---:|---:|---:|"]
        for r in b["table"]:
            res = r["results"]
            lines.append(f"| {r['model']}:{r['stem']}@{r['size']} | {r['variant']} | "
                         f"{_fmt(res.get('raw', {}).get('images_per_s'))} | "
                         f"{_fmt(res.get('fast', {}).get('images_per_s'))} | "
                         f"{_fmt(res.get('raw', {}).get('warmup_seconds'))} |")
        for p in b["pack"]:
            lines.append(f"\npacking {p['copies']} × {p['model']} ({p['variant']}): "
                         f"{p['total_images_per_s']:.1f} img/s in all, {p['gain']:.2f}× one run")
    else:
        lines.append("skipped")
    tr = rep.get("train")
    lines += ["", "## Track 2 best recipe, fixed epochs", ""]
    if tr and "error" in tr:
        lines.append(f"**failed:** {tr['error']}")
    elif tr:
        lines += [f"{tr['epochs']} epochs of {tr['recipe']['model']} ({tr['recipe']['stem']} stem, "
                  f"{tr['recipe']['augment']}, mix {tr['recipe']['mix']}, EMA {tr['recipe']['ema']}) "
                  f"on {tr['n_train']:,} images in {tr['precision']}: "
                  f"{', '.join(f'{v:.0f}' for v in tr['images_per_s'])} img/s per epoch; "
                  f"val {tr['val_acc']:.4f}, test {tr['test_acc']:.4f} (TTA; "
                  f"{_fmt(tr['test_acc_no_tta'], '.4f')} without); host syncs "
                  + ("not counted on the CPU" if tr["syncs"] is None else
                     f"{tr['syncs']} in {tr['steps']} steps ({tr['syncs_per_step']:.2f} a step)")]
    else:
        lines.append("skipped")
    pt = rep.get("plan")
    lines += ["", f"## `hw2 plan --profile {(pt or {}).get('profile', 'full')} --time`", ""]
    if pt and "error" in pt:
        lines.append(f"**failed:** {pt['error']}")
    elif pt:
        text = (f"{pt['trainings']} trainings: {format_seconds(pt['serial_seconds'])} one after "
                f"another from the recipe probes ({len(pt['probes'])} probes, "
                f"{pt['probe_seconds']:.0f} s)")
        if pt["bench_train_seconds"] is not None:
            text += (f"; their training steps alone at the bench's raw {pt['bench_variant']} rates: "
                     f"{format_seconds(pt['bench_train_seconds'])} ({pt['bench_rows_missing']} "
                     "trainings without a bench rate left out)")
        lines.append(text + ".")
        lines += ["", "| notebook | trainings | estimated |", "|---|---:|---:|"]
        lines += [f"| {nb} | {s['trainings']} | {format_seconds(s['seconds'])} |"
                  for nb, s in pt["by_notebook"].items()]
    else:
        lines.append("skipped")
    lines += ["", f"Doctor wall time: {rep['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
