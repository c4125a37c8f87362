"""Notebook parameters: read each notebook's `parameters` cell, merge a profile and `-p` overrides,
and check every value against its parameter's type and range before anything runs.

A parameter's type comes from a type comment (`n_max = None  # type: int|None  cap`), a simple
annotation papermill also reads (`seeds: list[int] = [0]`) or, without either, from its default's
type (`epochs = 5` is an int). papermill cannot read `x: int | None = ...` (it would warn "Passed
unknown parameter" and still not see `x`), so a cell papermill cannot read is an error here, one
line naming the notebook, the cell's line and what to write instead. A float parameter takes ints
and YAML-1.1 strings such as "1e-3"; an int parameter takes only integers. List items are checked
too (choices such as an experiment's name, no empty list), and paths that must exist
(`image_folder`, `weights`, ...) are made absolute and checked. Importing this module imports no
torch, so a bad value is reported in well under a second.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from hw2lib.core.constants import (
    AUGMENT_PRESETS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
)

# Parameters the runner sets itself; a profile or -p may not.
RUNNER_PARAMS = ("run_dir", "profile")

# Ranges and choices by parameter name (a name means the same thing in every notebook).
POSITIVE = {"epochs", "best_epochs", "lever_epochs", "lever_train_per_class", "batch_size", "lr", "lr_sgd", "lr_pretrained", "image_size",
            "best_train_per_class", "gpus_per_run", "headline_val_per_class",
            "train_per_class", "val_per_class", "test_per_class", "max_steps", "tsne_points",
            "tsne_perplexity", "vis_size", "grid_size", "dream_octaves", "dream_steps",
            "dream_lr", "am_steps", "am_lr", "rho", "n_max", "resize", "pretrained_resize"}
NON_NEGATIVE = {"seed", "split_seed", "lt_seed", "warmup_epochs", "crt_epochs", "momentum",
                "weight_decay", "tile_index", "posthoc_tau"}
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENT_PRESETS,
           "tsne_split": ("train", "val", "test"), "am_param": ("fft", "pixel"),
           "long_tail": ("hw2", "exponential"), "best_stem": ("imagenet", "small"),
           "executor": ("local", "ray"), "headline": lambda: _best_track()}

def _experiments() -> tuple[str, ...]:
    """B's experiment names, from its catalogue (hw2lib.train.recipes imports no torch), and "all"."""
    from hw2lib.train.recipes import B_EXPERIMENTS

    return ("all", *B_EXPERIMENTS)


def _best_track() -> tuple[str, ...]:
    """B's best-recipe experiments: the ones Track 2's headline may name."""
    from hw2lib.train.recipes import B_EXPERIMENTS

    return tuple(n for n, spec in B_EXPERIMENTS.items() if spec["track"] == "best")


def _backbones() -> tuple[str, ...]:
    """C's backbone names, from its catalogue."""
    from hw2lib.train.recipes import c_backbones

    return tuple(c_backbones(lr_pretrained=1.0))


# Items of list parameters: the names each item must be one of (read when the value is checked);
# items that must be >= 0. No list parameter may be empty.
ITEM_CHOICES = {"losses": lambda: LOSSES, "backbones": _backbones,
                "experiments": _experiments}
NON_NEGATIVE_ITEMS = {"seeds", "ablation_seeds", "lt_counts", "grid_channels"}
# Path parameters, made absolute from the caller's working directory (A-vis's `train_results` is
# relative to the reports instead: not one of them); those in MUST_EXIST must exist.
PATH_PARAMS = {"source", "image_folder", "weights", "checkpoint", "data_dir"}
MUST_EXIST = {"source": "a EuroSAT zip or extracted folder", "image_folder": "an ImageFolder root",
              "weights": "a state-dict file", "checkpoint": "a checkpoint file (best.pt)"}
# papermill reads `name: annotation = value` only with annotations made of these characters
_PAPERMILL_ANNOTATION = re.compile(r"^[\w\[\],\s]*$")
_TYPE_COMMENT = re.compile(r"^type:\s*(?P<type>\S+)\s*(?P<help>.*)$")

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


def _not_for_papermill(where: str, lineno: int, line: str, why: str, fix: str) -> ParameterError:
    return ParameterError(f"{where}, parameters cell line {lineno}: `{line.strip()}`: {why}; {fix}")


def parse_parameters_cell(source: str, where: str = "notebook") -> dict[str, Param]:
    """The parameters defined by a cell's source: name → Param (default, kinds, help comment).

    A line papermill cannot read (a default that is not a literal, an annotation such as
    `int | None`, a second "=" on the line) is a ParameterError naming `where` and the line."""
    lines = source.splitlines()
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        line = lines[exc.lineno - 1] if exc.lineno and exc.lineno <= len(lines) else ""
        raise _not_for_papermill(where, exc.lineno or 0, line, f"not valid Python ({exc.msg})",
                                 "fix the cell (one `name = value  # comment` a line)") from None
    for lineno, line in enumerate(lines, start=1):  # papermill's rule: it skips such a line
        if line.strip() and not line.strip().startswith("#") and line.count("=") > 1:
            raise _not_for_papermill(where, lineno, line, "papermill cannot read a line with a "
                                     "second '='", "take the '=' out of its comment")
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name, value, ann = stmt.target.id, stmt.value, stmt.annotation
        elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
              and isinstance(stmt.targets[0], ast.Name)):
            name, value, ann = stmt.targets[0].id, stmt.value, None
        else:
            continue
        line = lines[stmt.lineno - 1]
        here = f"{where}, parameter {name!r}"
        try:
            default = ast.literal_eval(value)
        except ValueError:
            raise _not_for_papermill(where, stmt.lineno, line, f"the default of {name!r} is not a "
                                     "plain value (papermill replaces only literals)",
                                     f"write the value itself, e.g. `{name} = 6`") from None
        comment = line[stmt.end_col_offset:].split("#", 1)[1].strip() \
            if stmt.end_lineno == stmt.lineno and "#" in line[stmt.end_col_offset:] else ""
        typed = _TYPE_COMMENT.match(comment)
        help_ = typed["help"] if typed else comment
        if ann is not None and not _PAPERMILL_ANNOTATION.match(ast.unparse(ann)):
            text = ast.unparse(ann).replace(" ", "")
            raise _not_for_papermill(where, stmt.lineno, line, "papermill cannot read the "
                                     f"annotation {ast.unparse(ann)!r}",
                                     f"write `{name} = {ast.unparse(value)}  # type: {text}`")
        if typed is not None:
            try:
                ann = ast.parse(typed["type"], mode="eval").body
            except SyntaxError:
                raise ParameterError(f"{here}: type comment {typed['type']!r} is not a type "
                                     "(e.g. `# type: int|None`)") from None
        if ann is not None:
            kinds, item = _kinds_of_annotation(ann, here)
        else:
            if default is None:
                raise ParameterError(f"{here}: a None default needs a type, "
                                     f"e.g. `{name} = None  # type: int|None`")
            kinds, item = (_kind_of_value(default),), None
        out[name] = Param(name, default, kinds, item, help_)
    return out


def _shown(path: Path) -> Path:
    """`path` relative to the working directory when it is below it (notebooks/A-train.ipynb)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def read_notebook_parameters(path) -> dict[str, Param]:
    """The parameters of the notebook at `path` (its cell tagged `parameters`)."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            return parse_parameters_cell(src, str(_shown(path)))
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
    choices = CHOICES.get(p.name)
    choices = choices() if callable(choices) else choices
    if choices is not None and v is not None and v not in choices:
        raise ParameterError(f"{notebook}: parameter {p.name!r} = {shown} is not one of "
                             f"{', '.join(choices)}")
    if isinstance(v, list):
        _check_items(notebook, p, v, shown)
    if p.name in PATH_PARAMS and isinstance(v, str):
        v = _check_path(notebook, p.name, v)
    return v


def _check_items(notebook: str, p: Param, v: list, shown: str) -> None:
    if not v:
        raise ParameterError(f"{notebook}: parameter {p.name!r} = [] is empty: give at least one "
                             f"item (default {json.dumps(p.default)})")
    if p.name in ITEM_CHOICES:
        choices = ITEM_CHOICES[p.name]()
        bad = [item for item in v if item not in choices]
        if bad:
            raise ParameterError(f"{notebook}: parameter {p.name!r} = {shown}: "
                                 f"{', '.join(map(repr, bad))} {'is' if len(bad) == 1 else 'are'} "
                                 f"not one of {', '.join(choices)}")
    if any(isinstance(item, int | float) and not isinstance(item, bool) and item < 0
           for item in v) and p.name in NON_NEGATIVE_ITEMS:
        raise ParameterError(f"{notebook}: parameter {p.name!r} = {shown}: every item must be "
                             ">= 0")


def _check_path(notebook: str, name: str, value: str) -> str:
    """`value` as an absolute path (a relative one is taken from the working directory); one
    that must exist and does not is an error naming it."""
    path = Path(value).expanduser().absolute()
    if name in MUST_EXIST and not path.exists():
        raise ParameterError(f"{notebook}: parameter {name!r} = {value!r}: {path} does not exist; "
                             f"give {MUST_EXIST[name]} that exists")
    return str(path)


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
