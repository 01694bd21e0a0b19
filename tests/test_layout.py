"""The package's one-way rule, checked on the code: the modules directly in `clead_lite/` (the core a student
reads) import nothing of the course's subpackages (`course`, `exercises`, `widgets`), not even lazily inside a
function; no module imports another module's private name; the core stays small."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clead_lite"
CORE = sorted(p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
ALL = sorted(PACKAGE.rglob("*.py"))
# Issue 19 asked for "at most about 2,500"; the core measured 3,127 lines when it was split out and 2,860 after its
# docstrings and checks were tightened, 2,848 once an unused loader constructor went, 2,802 once the launcher's
# process group, UMAP's warm-up and the four copies of the model / x / y check went, 2,726 once the resume state
# moved to the course and every module was read again for repetition, 2,601 once the AutoAttack wrapper (plumbing
# around the pyautoattack package, never called by a student) moved to `course.autoattack`, 2,615 with `TrainConfig`
# in its own module (`config`, so that `training` is the step and the loop, under 600 lines). docs/DESIGN.md section
# 3 says what it holds. The limit stops it from growing back.
CORE_LINES = 2615


def imports(path: Path):
    """(absolute module name, imported names) of every import in the file, lazy ones included."""
    package = ["clead_lite", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [a.name for a in node.names]
            if node.level and not node.module:      # from . import attacks: the names are modules
                for name in names:
                    yield f"{module}.{name}", []
            else:
                yield module, names
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_the_layout_is_what_the_test_expects():
    assert {p.stem for p in CORE} >= {"data", "models", "attacks", "losses", "training", "evaluation",
                                      "embeddings", "faithful"}
    assert set(SUBPACKAGES) == {"course", "exercises", "widgets"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_only_the_core(path):
    core = {f"clead_lite.{p.stem}" for p in CORE}
    bad = [m for m, _ in imports(path) if m.startswith("clead_lite") and m not in core]
    assert not bad, f"{path.name} imports {bad}: the core may import only the core ({sorted(core)})"


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_is_imported_across_modules(path):
    """A private module (`exercises/_common.py`) holds its subpackage's shared internals: its names may be
    imported inside that subpackage. Any other module's private names stay in it."""
    def allowed(module: str) -> bool:
        *parent, leaf = module.split(".")
        return leaf.startswith("_") and ".".join(parent) == ".".join(["clead_lite", *path.relative_to(PACKAGE).parent.parts])
    bad = [(m, n) for m, names in imports(path) if m.startswith("clead_lite") and not allowed(m) for n in names
           if n.startswith("_") and not n.startswith("__")]
    assert not bad, f"{path.relative_to(PACKAGE)} imports private names {bad}"


def test_no_hand_kept_floor_lines():
    bad = [str(p.relative_to(PACKAGE)) for p in ALL if "Floor " in p.read_text() and "floor" not in p.stem]
    assert not bad, f"'Floor N' lines in {bad}: the one-way rule is checked by this test now"


def test_the_core_is_small():
    lines = sum(len(p.read_text().splitlines()) for p in CORE)
    assert lines <= CORE_LINES, f"the core is {lines} lines (limit {CORE_LINES}): move machinery to a subpackage"


def test_the_checker_sees_a_violation(tmp_path):
    """The import walker finds a lazy import of the course layer and a private name."""
    bad = PACKAGE / "_probe_for_test.py"
    try:
        bad.write_text("def f():\n    from .course.store import find\n    from .models import _private\n")
        found = list(imports(bad))
    finally:
        bad.unlink()
    assert ("clead_lite.course.store", ["find"]) in found and ("clead_lite.models", ["_private"]) in found
