"""Notebook 07's Exercise 3 (answer the four questions from the metrics table): the reference passes; a stub gets
"not implemented yet"; each typical wrong answer is rejected with the question it gets wrong and a hint."""
import re
from pathlib import Path

import nbformat
import pytest

from clead_lite.exercises import nb07_embeddings as nb07

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "solutions" / "07_embedding_separation.ipynb"


def _cells():
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    exercise = next(i for i, c in enumerate(cells) if "def answer_questions" in c.source)
    return cells[exercise].source, cells[exercise + 1].source


@pytest.fixture(scope="module")
def check():
    return nb07.check_answer_questions


@pytest.fixture(scope="module")
def solution():
    solution_source, _ = _cells()      # the notebook's solution, which must agree with the module's reference
    namespace: dict = {}
    exec(solution_source, namespace)
    return namespace["answer_questions"]


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


def test_the_solution_passes(check, solution, capsys):
    ok, out = verdict(check, solution, capsys)
    assert ok and "✅ Correct!" in out


def test_the_stub_is_not_implemented(check, capsys):
    def stub(table):
        raise NotImplementedError("Exercise 3: answer")
    ok, out = verdict(check, stub, capsys)
    assert not ok and "not implemented yet (Exercise 3: answer)" in out


def _variant(q1="pgd", q2="knn_accuracy", q3="pgd", q4="own_neighbour_fraction", every=True):
    def fn(table):
        pgd, noise = table.loc["pgd"], table.loc["noise"]
        moved = pgd["pair_cosine"] < noise["pair_cosine"]
        rows3 = table.loc[q3]
        return {1: bool(moved.all() if every else moved.any()),
                2: list(pgd.index[pgd[q2] >= 0.5]),
                3: bool(rows3.loc["C-LEAD online", "pair_cosine"] > rows3.loc["PGD-AT", "pair_cosine"]),
                4: bool(pgd.loc["C-LEAD faithful", q4] >= 0.5)}
    return fn


WRONG = [
    ("any model instead of every model", _variant(every=False), ["question 1", "require every model"]),
    ("robust accuracy for question 2", _variant(q2="robust_accuracy"), ["question 2", "not robust_accuracy"]),
    ("the noise rows for question 3", _variant(q3="noise"), ["question 3", "table.loc['pgd']"]),
    ("kNN accuracy for question 4", _variant(q4="knn_accuracy"), ["question 4", "own_neighbour_fraction"]),
    ("answers typed in", lambda table: {1: True, 2: ["PGD-AT", "C-LEAD online"], 3: True, 4: False},
     ["made-up table 2", "typed in"]),
    ("not a dict", lambda table: [True, [], True, False], ["return a dict with the keys 1, 2, 3 and 4"]),
    ("an error", lambda table: table.loc["fgsm"], ["your function raised KeyError"]),
]


@pytest.mark.parametrize("label,fn,phrases", WRONG, ids=[w[0] for w in WRONG])
def test_each_wrong_answer_is_named(check, label, fn, phrases, capsys):
    ok, out = verdict(check, fn, capsys)
    assert not ok, f"{label} passed"
    for phrase in phrases:
        assert phrase in out, f"{label}: {phrase!r} not in {out!r}"


def test_the_answers_are_printed_only_once_the_check_passes():
    _, check_source = _cells()
    assert re.search(r"^if ok_answers:\n    show_answers\(answer_questions\(at_eps\), at_eps, data, eps\)$", check_source,
                     re.M)


def test_the_reference_passes_too(check, capsys):
    ok, out = verdict(check, nb07.answer_questions, capsys)
    assert ok and "✅ Correct!" in out
