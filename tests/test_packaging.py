"""The project's packaging: environment.yml lists the same dependencies as pyproject.toml."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(reqs):
    return {re.split(r"[<>=!~ \[]", r.strip(), maxsplit=1)[0].lower() for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"])
    for extra in ("course", "test"):
        wanted |= _names(project["optional-dependencies"][extra])
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_lines = [ln.strip()[2:] for ln in lines if ln.startswith("      - ")]
    listed = _names(p for p in pip_lines if not p.startswith("-e"))
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
