"""Notebook parameters: read each notebook's `parameters` cell, merge a profile and `-p` overrides,
and check every value against its parameter's type and range before anything runs.

A parameter's type comes from its annotation in the cell (`n_max: int | None = None`, `seeds:
list[int] = [0]`) or, without one, from its default's type (`epochs = 5` is an int). A float
parameter takes ints and YAML-1.1 strings such as "1e-3"; an int parameter takes only integers.
Importing this module imports no torch, so a bad value is reported in well under a second.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path

from hw2lib.constants import AUGMENT_PRESETS, OPTIMIZERS, SCHEDULES

# Parameters the runner sets itself; a profile or -p may not.
RUNNER_PARAMS = ("run_dir", "profile")

# Ranges and choices by parameter name (a name means the same thing in every notebook).
POSITIVE = {"epochs", "best_epochs", "batch_size", "lr", "lr_sgd", "lr_pretrained", "image_size",
            "best_train_per_class", "gpus_per_run",
            "train_per_class", "val_per_class", "test_per_class", "max_steps", "tsne_points",
            "tsne_perplexity", "vis_size", "grid_size", "dream_octaves", "dream_steps",
            "dream_lr", "am_steps", "am_lr", "rho", "n_max", "resize", "pretrained_resize"}
NON_NEGATIVE = {"seed", "split_seed", "lt_seed", "warmup_epochs", "crt_epochs", "momentum",
                "weight_decay", "tile_index", "posthoc_tau"}
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENT_PRESETS,
           "tsne_split": ("train", "val", "test"), "am_param": ("fft", "pixel"),
           "long_tail": ("hw2", "exponential"), "best_stem": ("imagenet", "small"),
           "executor": ("local", "ray")}

_KINDS = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict,
          "None": type(None)}


class ParameterError(ValueError):
    """A parameter request that cannot run: unknown key, wrong type, out of range."""


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    kinds: tuple[str, ...]      # e.g. ("int", "None")
    item: str | None = None     # element kind of a list, e.g. "int" for list[int]
    help: str = ""

    @property
    def expected(self) -> str:
        names = [f"list[{self.item}]" if k == "list" and self.item else k for k in self.kinds]
        return " or ".join(n if n != "None" else "null" for n in names)


def _kinds_of_annotation(node: ast.expr, where: str) -> tuple[tuple[str, ...], str | None]:
    text = ast.unparse(node).replace('"', "").replace("'", "")
    kinds, item = [], None
    for part in (p.strip() for p in text.split("|")):
        if part.startswith("list[") and part.endswith("]"):
            kinds.append("list")
            item = part[5:-1].strip()
            if item not in _KINDS:
                raise ParameterError(f"{where}: unsupported list element type {item!r}")
        elif part in _KINDS:
            kinds.append(part)
        else:
            raise ParameterError(f"{where}: unsupported parameter type {part!r} "
                                 f"(use {', '.join(_KINDS)}, list[T], joined with |)")
    return tuple(kinds), item


def _kind_of_value(v) -> str:
    for name, t in _KINDS.items():
        if type(v) is t:
            return name
    raise TypeError(type(v).__name__)


def parse_parameters_cell(source: str, where: str = "parameters cell") -> dict[str, Param]:
    """The parameters defined by a cell's source: name → Param (default, kinds, help comment)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name, value, ann = stmt.target.id, stmt.value, stmt.annotation
        elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
              and isinstance(stmt.targets[0], ast.Name)):
            name, value, ann = stmt.targets[0].id, stmt.value, None
        else:
            continue
        here = f"{where}, parameter {name!r}"
        try:
            default = ast.literal_eval(value)
        except ValueError:
            raise ParameterError(f"{here}: its default is not a literal") from None
        if ann is not None:
            kinds, item = _kinds_of_annotation(ann, here)
        else:
            if default is None:
                raise ParameterError(f"{here}: a None default needs a type annotation, "
                                     f"e.g. `{name}: int | None = None`")
            kinds, item = (_kind_of_value(default),), None
        line = lines[stmt.lineno - 1]
        help_ = line.split("#", 1)[1].strip() if "#" in line[stmt.end_col_offset:] else ""
        out[name] = Param(name, default, kinds, item, help_)
    return out


def read_notebook_parameters(path) -> dict[str, Param]:
    """The parameters of the notebook at `path` (its cell tagged `parameters`)."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            return parse_parameters_cell(src, f"{path.name}")
    raise ParameterError(f"{path} has no cell tagged 'parameters'")


def _convert(p: Param, value, kind: str):
    """`value` as `kind`, or raise ValueError."""
    if kind == "None":
        if value is None:
            return None
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "list":
        if isinstance(value, list | tuple):
            if p.item is None:
                return list(value)
            item = Param(p.name, None, (p.item,))
            return [_convert_any(item, v) for v in value]
    elif kind == "dict":
        if isinstance(value, dict):
            return value
    raise ValueError(kind)


def _convert_any(p: Param, value):
    for kind in p.kinds:
        try:
            return _convert(p, value, kind)
        except ValueError:
            continue
    raise ValueError(p.expected)


def check_value(notebook: str, p: Param, value):
    """`value` checked (and converted: "1e-3" → 0.001) for parameter `p`, or ParameterError."""
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    try:
        v = _convert_any(p, value)
    except ValueError:
        raise ParameterError(f"{notebook}: parameter {p.name!r} = {shown} is not valid: "
                             f"expected {p.expected} (default {p.default!r})") from None
    if isinstance(v, int | float) and not isinstance(v, bool):
        bad = (not math.isfinite(v) or (p.name in POSITIVE and v <= 0)
               or (p.name in NON_NEGATIVE and v < 0))
        if bad:
            need = "> 0" if p.name in POSITIVE else ">= 0" if p.name in NON_NEGATIVE else "finite"
            raise ParameterError(f"{notebook}: parameter {p.name!r} = {shown} is out of range: "
                                 f"expected a number {need}")
    if p.name in CHOICES and v is not None and v not in CHOICES[p.name]:
        raise ParameterError(f"{notebook}: parameter {p.name!r} = {shown} is not one of "
                             f"{', '.join(CHOICES[p.name])}")
    return v


def resolve(notebook: str, allowed: dict[str, Param], profile_params: dict,
            overrides: dict) -> dict:
    """Profile ∪ overrides for one notebook, every key known and every value checked."""
    params = {**profile_params, **overrides}
    out = {}
    for key, value in params.items():
        if key in RUNNER_PARAMS:
            raise ParameterError(f"{notebook}: parameter {key!r} is set by the runner, "
                                 "not by a profile or -p.")
        if key not in allowed:
            raise ParameterError(f"{notebook}: unknown parameter {key!r} (not in the notebook's "
                                 f"parameters cell). Known: {', '.join(sorted(allowed))}.")
        out[key] = check_value(notebook, allowed[key], value)
    return out


def split_overrides(overrides: dict, defined: dict[str, dict[str, Param]]) -> dict[str, dict]:
    """Send each `-p` key to the selected notebooks that define it; a key none defines is an
    error naming the notebooks that were looked at."""
    per_nb = {nb: {} for nb in defined}
    for key, value in overrides.items():
        takers = [nb for nb, params in defined.items() if key in params]
        if not takers:
            if key in RUNNER_PARAMS:
                raise ParameterError(f"parameter {key!r} is set by the runner, not by -p.")
            raise ParameterError(f"-p {key}: no selected notebook ({', '.join(defined)}) has a "
                                 f"parameter {key!r}.")
        for nb in takers:
            per_nb[nb][key] = value
    return per_nb
