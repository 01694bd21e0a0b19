"""Golden verdicts of the exercise checks: every `check_*` call that the wrong-answer tables in
tests/test_checks_*.py make, with what it returned and printed, recorded before the core was rewritten (issue 19).

    python tests/golden_verdicts.py            # run the tables, compare with tests/golden_verdicts.json
    python tests/golden_verdicts.py --record   # write tests/golden_verdicts.json

It runs those test files under pytest with a plugin that wraps every public `check_*` of the exercises package,
so a refactor that changes any verdict or any message fails (tests/test_golden.py runs this in a subprocess).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden_verdicts.json")


def _exercises():
    for name in ("clead_lite.exercises", "clead_lite.exercises"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("no exercises package")


class Recorder:
    """A pytest plugin: wraps every check before the test modules import it; records (test, check, verdict)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.current = ""

    def pytest_configure(self, config):
        package = _exercises()
        for name in [n for n in dir(package) if n.startswith("check_")]:
            setattr(package, name, self._wrap(name, getattr(package, name)))

    def pytest_runtest_setup(self, item):
        self.current = item.nodeid.split("::", 1)[1]

    def _wrap(self, name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                result = fn(*args, **kwargs)
            text = buffer.getvalue()
            sys.stdout.write(text)          # the test's capsys still sees it
            student = getattr(args[0], "__name__", type(args[0]).__name__) if args else ""
            self.calls.append({"test": self.current, "check": name, "answer": student,
                               "result": repr(result), "output": hashlib.sha256(text.encode()).hexdigest()[:16]})
            return result
        return wrapper


def run() -> list[dict]:
    import pytest
    recorder = Recorder()
    files = sorted(str(p) for p in (ROOT / "tests").glob("test_checks_nb*.py"))
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-x", *files], plugins=[recorder])
    if code != 0:
        raise SystemExit(f"the check tables failed (pytest exit {code})")
    return recorder.calls


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    calls = run()
    if "--record" in sys.argv:
        GOLDEN.write_text(json.dumps(calls, indent=0) + "\n")
        print(f"wrote {len(calls)} verdicts to {GOLDEN}")
        raise SystemExit(0)
    golden = json.loads(GOLDEN.read_text())
    diff = [(g, c) for g, c in zip(golden, calls) if g != c]
    if len(golden) != len(calls) or diff:
        print(f"{len(calls)} verdicts now, {len(golden)} recorded; first differences:")
        for g, c in diff[:5]:
            print(" recorded", g, "\n now     ", c)
        raise SystemExit(1)
    print(f"all {len(calls)} verdicts as recorded")
