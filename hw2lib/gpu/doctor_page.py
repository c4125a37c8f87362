"""`hw2 doctor`'s page: doctor.md from the report that doctor.json holds (see `hw2lib.gpu.doctor`)."""

from __future__ import annotations


def _fmt(v, spec=".1f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(rep: dict) -> str:
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
    for w in env.get("imagenet_weights") or []:
        lines.append(f"| ImageNet weights ({w.get('model', '?')}) | " + (
            w["error"] if "error" in w else
            f"{'present' if w['present'] else 'MISSING'}: {w['path']}") + " |")
    if env.get("cpu_precision", {}).get("error"):
        lines.append(f"| CPU precision | probe failed: {env['cpu_precision']['error']} |")
    elif env.get("cpu_precision"):
        cp = env["cpu_precision"]
        lines.append(f"| CPU precision | {cp['precision']} ({cp['source']}"
                     + (f", bf16 {cp['speedup']:.2f}× fp32" if cp.get("speedup") else "") + ") |")
    pt = rep.get("plan")
    for title, part, body in (
            ("## CUDA-marked tests", rep.get("tests"), _tests),
            ("## Training throughput (`hw2 bench train`)", rep.get("bench"), _bench),
            ("## Packing runs on one GPU", rep.get("pack"), _pack),
            ("## Track 2 best recipe, fixed epochs", rep.get("train"), _train),
            ("## bf16 against float32", rep.get("precision"), _precision),
            (f"## `hw2 plan --profile {(pt or {}).get('profile', 'full')} --time`", pt, _plan)):
        lines += ["", title, ""]
        if not part:
            lines.append("skipped")
        elif "error" in part:
            lines.append(f"**failed:** {part['error']}")
        else:
            lines += body(part)
    sm = rep.get("smoke")
    if sm is not None:
        lines += ["", "## A smoke report on this device", ""]
        if "error" in sm:
            lines.append(f"**failed:** {sm['error']}")
        elif not sm.get("finished"):
            lines.append(sm.get("reason", "did not finish"))
        else:
            lines.append(", ".join(f"{nb} {s}" for nb, s in sm["status"].items())
                         + f" in {sm['seconds']:.0f} s" + (" (B and C through Ray, half a GPU "
                                                            "a run)" if sm["ray"] else ""))
    su = rep.get("suite")
    if su is not None:
        lines += ["", "## The whole test suite", ""]
        if not su.get("ran"):
            lines.append(su.get("reason", "not run"))
        else:
            lines.append(f"{su['passed']} passed, {su['failed']} failed, {su['errors']} errors, "
                         f"{su['skipped']} skipped in {su['seconds']:.0f} s"
                         + ("" if su["finished"] else f" — {su['reason']}"))
    lines += ["", "## Stages and the deadline", "",
              f"Deadline {rep['deadline']:.0f} s; doctor wall time {rep['seconds']:.0f} s.", "",
              "| stage | seconds | its budget |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['seconds']:.0f} | {v['budget']:.0f} |"
              for k, v in rep["stage_seconds"].items()]
    if rep["skipped"]:
        lines += ["", "Skipped:"] + [f"- {s['stage']} ({s['what']}): {s['why']}"
                                      for s in rep["skipped"]]
    return "\n".join(lines) + "\n"


# Each stage's section of the page, for a stage that ran without an error: its lines.

def _tests(t: dict) -> list[str]:
    if not t.get("ran") or "passed" not in t:
        return [t.get("reason", "no result")]
    return [f"{t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
            f"{t['skipped']} skipped in {t['seconds']:.0f} s (`{t['command']}`)",
            *(f"- FAILED {f['test']}: {f['message']}" for f in t["failures"])]


def _bench(b: dict) -> list[str]:
    lines = ["| model | variant | raw img/s | fast loader img/s | host ms / step | wall ms / "
             "step | launch-bound | warm-up s |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for r in b["table"]:
        res, raw = r["results"], r["results"].get("raw", {})
        lines.append(f"| {r['model']}:{r['stem']}@{r['size']} | {r['variant']} | "
                     f"{_fmt(raw.get('images_per_s'))} | "
                     f"{_fmt(res.get('fast', {}).get('images_per_s'))} | "
                     f"{_fmt(raw.get('host_ms_per_step'), '.2f')} | "
                     f"{_fmt(raw.get('ms_per_step'), '.2f')} | "
                     f"{'yes' if r.get('launch_bound') else 'no'} | "
                     f"{_fmt(raw.get('warmup_seconds'))} |")
    if b.get("left_out"):
        lines.append(f"\nLeft out at the stage's budget: {', '.join(b['left_out'])}.")
    lines.append("\nHost ms: the time to issue a step after a sync (the launches); a step "
                 "whose host time is ≥ 80 % of its wall time is launch-bound.")
    return lines


def _pack(pk: dict) -> list[str]:
    lines = [f"- {kind}: {q['copies']} × {q['model']} ({q['variant']}): "
             f"{q['total_images_per_s']:.1f} img/s in all, {q['gain']:.2f}× one run"
             for kind in ("plain", "mps") for q in pk.get(kind) or []]
    if not pk.get("mps_available"):
        lines.append("- CUDA MPS: not available here (no nvidia-cuda-mps-control, or it did "
                     "not start)")
    return lines


def _train(tr: dict) -> list[str]:
    sr, rc = tr["step_reads"], tr["recipe"]
    syncs = ("" if sr["syncs"] is None else
             f"; CUDA syncs {sr['syncs']} ({sr['syncs_per_step']:.2f} a step)")
    return [f"{tr['epochs']} epochs of {rc['model']} ({rc['stem']} stem, {rc['augment']}, mix "
            f"{rc['mix']}, EMA {rc['ema']}, {rc['warmup_epochs']} warm-up epoch(s)) on "
            f"{tr['n_train']:,} images in {tr['precision']}: "
            f"{', '.join(f'{v:.0f}' for v in tr['images_per_s'])} img/s per epoch; "
            f"val {tr['val_acc']:.4f}, test {tr['test_acc']:.4f} (TTA; "
            f"{_fmt(tr['test_acc_no_tta'], '.4f')} without).",
            "", f"Training steps only ({sr['counted_steps']} steps, numbers "
            f"{sr['window'][0]}–{sr['window'][0] + sr['counted_steps'] - 1}): host reads of "
            "device values "
            f"{sr['host_reads']} ({sr['host_reads_per_step']:.2f} a step){syncs}. "
            "Checkpoint writes, loss checks and evaluation are not steps.",
            "", "Checkpoints: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in
                                             sorted(tr["checkpoint_bytes"].items()))
            + " (a finished run keeps best.pt: run_experiment drops last.pt)."]


def _precision(pr: dict) -> list[str]:
    lines = ["| precision | val acc | test acc | img/s (last epoch) |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {pr[k]['val_acc']:.4f} | {pr[k]['test_acc']:.4f} | "
              f"{pr[k]['images_per_s'][-1]:.0f} |" for k in ("bf16", "fp32")]
    d = pr.get("bf16_minus_fp32_test")
    if d:
        lines.append(f"\nbf16 − float32 on the test images: {100 * d['diff']:+.2f} points "
                     f"(95 % {100 * d['lo']:+.2f} to {100 * d['hi']:+.2f}, exact McNemar p "
                     f"{d['p']:.3g}; one seed each: evaluation noise only).")
    return lines


def _plan(pt: dict) -> list[str]:
    from hw2lib.report.plan import format_seconds

    text = (f"{pt['trainings']} trainings: {format_seconds(pt['serial_seconds'])} one after "
            f"another from the recipe probes ({len(pt['probes'])} probes, "
            f"{pt['probe_seconds']:.0f} s)")
    if pt.get("unknown"):
        text += f"; {pt['unknown']} trainings not estimated (their probes left out)"
    if pt["bench_train_seconds"] is not None:
        text += (f"; their training steps alone at the bench's raw {pt['bench_variant']} rates: "
                 f"{format_seconds(pt['bench_train_seconds'])} ({pt['bench_rows_missing']} "
                 "trainings without a bench rate left out)")
    lines = [text + ".", "", f"The model: {pt['model']}."]
    lines += ["", "| notebook | trainings | estimated |", "|---|---:|---:|"]
    lines += [f"| {nb} | {s['trainings']} | {format_seconds(s['seconds'])} |"
              for nb, s in pt["by_notebook"].items()]
    lines += ["", "| recipe probed | train img/s | eval batch | checkpoint write s | peak "
              "GPU memory GiB |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {q['model']}:{q['stem']}@{q['size']} bs {q['batch_size']} mix {q['mix']} "
              f"EMA {q['ema']:g} | {q['train_img_s']:.0f} | {q.get('eval_batch', '–')} | "
              f"{_fmt(q.get('checkpoint_write_s'), '.2f')} | "
              f"{_fmt(q.get('peak_mem_gib'), '.2f')} |" for q in pt["probes"]]
    if pt.get("left_out"):
        lines.append(f"\nProbes left out at the stage's budget: {', '.join(pt['left_out'])}.")
    return lines
