"""The project's own set-up: pins, environment.yml ↔ pyproject.toml, profiles ↔ notebooks."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from hw2lib.report import run

ROOT = Path(__file__).resolve().parents[1]


def _pip_reqs_env():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {r for r in pip if not r.startswith("-e")}, env


def _constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))


def test_torch_range_in_pyproject_exact_pins_in_constraints():
    from packaging.specifiers import SpecifierSet

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _constraints()
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    for name, version in pins.items():
        spec = next(d[len(name):] for d in deps if re.match(rf"{name}[<>=!~]", d))
        assert not spec.startswith("=="), f"pyproject pins {name}: give the supported range"
        assert version in SpecifierSet(spec), f"{name} {version} outside pyproject's {spec}"


def test_environment_yml_agrees_with_pyproject():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {f"{name}=={v}" for name, v in _constraints().items()}
    want = {d for d in proj["dependencies"] if not re.match(r"torch(vision)?[<>=]", d)} | pins \
        | set(proj["optional-dependencies"]["dev"])
    got, env = _pip_reqs_env()
    assert got == want, f"only in environment.yml: {got - want}; only in pyproject: {want - got}"
    assert "python=3.11" in env["dependencies"]


@pytest.mark.parametrize("name", run.NOTEBOOKS)
def test_notebook_committed_clean_with_tagged_parameters(name):
    nb = json.loads(run.notebook_path(name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    src = "".join(tagged[0]["source"])
    for p in run.RUNNER_PARAMS:
        assert re.search(rf"^{p} = ", src, re.M), f"{name}: parameters cell lacks {p}"


@pytest.mark.parametrize("profile", run.PROFILES)
@pytest.mark.parametrize("name", run.NOTEBOOKS)
def test_profiles_only_use_known_parameters(profile, name):
    params = run.load_profile(profile)[name]
    # raises RunnerError on any key the notebook's parameters cell does not define
    resolved = run.resolve_parameters(name, params, {})
    assert resolved == params


def test_ci_runs_make_test():
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci and "HW2_EUROSAT_ZIP" in ci


def test_code_and_notebooks_pass_ruff():
    """`make lint`'s check, in the suite so CI sees it: library, tests, benchmarks, notebooks."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "hw2lib", "tests",
                           "bench", "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
