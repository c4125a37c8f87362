"""`hw2 compare A B` (hw2lib.report.compare): two report folders side by side, with the flags a
reproduction is checked by."""

from __future__ import annotations

import json

import pytest

from hw2lib.cli import main
from hw2lib.report import compare as C


def _finding(label, diff, word, ids=("a1", "b1"), family="claims", p_adj=0.01):
    return {"family": family, "label": label, "diff": diff, "word": word, "p_adj": p_adj,
            "a_run_ids": ids[0], "b_run_ids": ids[1]}


def _report(root, headline=(), findings=(), nb="B-ablation"):
    (root / "runs" / nb).mkdir(parents=True)
    (root / "runs" / nb / "results.json").write_text(json.dumps(
        {"headline": [{"name": n, "value": v, "run_id": r} for n, v, r in headline],
         "findings": list(findings)}))
    return root


@pytest.mark.parametrize("a, b, want", [
    ("better", "worse", "flipped"), ("worse", "better", "flipped"),
    ("better", "not distinguishable", "changed"), ("not distinguishable", "worse", "changed"),
    ("better", "better", ""), ("not distinguishable", "not distinguishable", ""),
    ("better", None, "changed"), (None, None, ""),
])
def test_flags_of_recipe_words(a, b, want):
    assert C.flag(a, 0.02, b, -0.02) == want


def test_flags_of_two_models_follow_the_sign_of_their_difference():
    from hw2lib.study.stats import MODELS_DIFFER as differ
    from hw2lib.study.stats import MODELS_SAME as same

    assert C.flag(differ, -0.042, differ, +0.055) == "flipped"  # the issue's −4.2 vs +5.5
    assert C.flag(differ, 0.01, differ, 0.02) == ""
    assert C.flag(differ, 0.01, same, 0.002) == "changed"


def test_compare_pairs_rows_and_says_what_moved(tmp_path):
    a = _report(tmp_path / "a", [("B headline: test acc", 0.9424, "0e3215a2")],
                [_finding("x vs y", 0.02, "better"), _finding("u vs v", 0.01, "better"),
                 _finding("only a", 0.0, "not distinguishable")])
    b = _report(tmp_path / "b", [("B headline: test acc", 0.9410, "9f00aa11")],
                [_finding("x vs y", -0.03, "worse", ids=("a2", "b2")),
                 _finding("u vs v", 0.002, "not distinguishable")])
    rows = C.compare(C.load(a), C.load(b))
    by = {r["name"]: r for r in rows}
    head = by["B headline: test acc"]
    assert head["delta"] == pytest.approx(-0.0014) and not head["same_runs"]
    assert by["x vs y"]["flag"] == "flipped" and not by["x vs y"]["same_runs"]
    assert by["u vs v"]["flag"] == "changed" and by["u vs v"]["same_runs"]
    assert by["only a"]["flag"] == "only in A"
    s = C.summary(rows)
    assert (s["flipped"], s["changed"], s["on one side only"]) == (1, 1, 1)
    assert "flipped" in C.text_table(rows).splitlines()[1]


def test_a_comparison_of_other_arms_is_paired_by_name_and_said(tmp_path):
    """C's "method chosen on validation vs CE": validation chose cRT on one machine and Balanced
    Softmax on the other — one row, both words, and the arms of each side."""
    label = "bb: the method chosen on validation vs cross-entropy"
    a = _report(tmp_path / "a", findings=[{**_finding(label, 0.10, "differ"), "a": "bb cRT",
                                           "b": "bb ce"}], nb="C-longtail")
    b = _report(tmp_path / "b", findings=[{**_finding(label, 0.08, "differ"),
                                           "a": "bb balanced_softmax", "b": "bb ce"}],
                nb="C-longtail")
    (row,) = C.compare(C.load(a), C.load(b))
    assert row["flag"] == "" and row["arms"] == ("A: bb cRT vs bb ce; B: bb balanced_softmax vs "
                                                 "bb ce")
    assert C.summary([row])["other arms"] == 1 and "(A: bb cRT vs bb ce;" in C.text_table([row])
    same = C.compare(C.load(a), C.load(a))
    assert same[0]["arms"] == "" and C.summary(same)["other arms"] == 0


def test_hw2_compare_writes_its_page_and_json(tmp_path, capsys):
    rows = [_finding("a <b> vs c", 0.02, "better")]
    a = _report(tmp_path / "a", [("h", 0.5, "r1")], rows)
    b = _report(tmp_path / "b", [("h", 0.5, "r1")], rows)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out), "--json",
                 str(tmp_path / "c.json")]) == 0
    page = (out / "compare.html").read_text()
    assert "a &lt;b&gt; vs c" in page and "<b> vs" not in page  # escaped
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["summary"]["flipped"] == 0 and got["summary"]["same run identities"] == 2
    assert "flipped: 0" in capsys.readouterr().out
    assert main(["compare", str(a), str(tmp_path)]) == 2  # not a report folder: one line
    assert "is not an hw2 report folder" in capsys.readouterr().err
