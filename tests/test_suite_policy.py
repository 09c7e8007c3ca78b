"""The suite's own rules (issue 36): every reference skip goes through strict mode, every
hypothesis draw is fixed, and CI runs the command README gives, with the live bitsandbytes
comparisons' packages in it."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_MODULES = ("torch", "transformers", "bitsandbytes", "accelerate", "tokenizers")


def test_no_reference_module_skips_around_strict_mode():
    """A bare importorskip of the reference stack would skip even under MINIBERTGEN_REQUIRE_REFERENCE=1."""
    pattern = re.compile(r"importorskip\(\s*[\"'](%s)[\"']" % "|".join(REFERENCE_MODULES))
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "tests").rglob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"use conftest.require_module instead: {offenders}"


def test_hypothesis_draws_the_same_examples_every_run():
    hypothesis = pytest.importorskip("hypothesis")  # the test extra, not the reference stack
    assert hypothesis.settings.default.derandomize
    assert hypothesis.settings.default.database is None


def test_ci_runs_the_readme_command_with_the_quantization_extra():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = re.search(r"^pip install -e \"\.\[([a-z,]+)\]\".*pytest -q$", readme, re.M)
    assert command, "README's test command not found"
    extras = set(command.group(1).split(","))
    assert {"test", "reference", "quantization", "tutorials"} <= extras
    assert f'-e ".[{command.group(1)}]"' in ci and "MINIBERTGEN_REQUIRE_REFERENCE=1 python -m pytest" in ci
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"^quantization = \[.*bitsandbytes.*accelerate.*\]", pyproject, re.M)
