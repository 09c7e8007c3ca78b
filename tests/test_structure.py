"""The structure rules of DESIGN.md, measured by tools/check_structure.py (run in CI here).

0 import cycles, 0 modules over 400 lines, 0 functions over 60 lines of code, the reference
(ops, attention, model, cache and their backward modules) importing nothing of the speed
wing, and dispatch.py importing nothing of the package.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "check_structure.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_the_package_keeps_the_structure_rules():
    result = run("--root", str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


def test_the_script_finds_each_kind_of_violation(tmp_path):
    """A made-up package with one violation of each rule: the script must report all five."""
    package = tmp_path / "minibertgen"
    (package / "fast").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "fast" / "__init__.py").write_text("")
    (package / "fast" / "cpu.py").write_text("X = 1\n")
    (package / "a.py").write_text("def f():\n    from . import b  # inside a function: counted too\n")
    (package / "b.py").write_text("from . import a\n")
    (package / "ops.py").write_text("from .fast import cpu\n")
    (package / "dispatch.py").write_text("from . import b\n")
    (package / "big.py").write_text("X = 1\n" * 401)
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    (package / "long.py").write_text(textwrap.dedent('''\
        def long():
            """A docstring does not count."""
        ''') + body)
    result = run("--root", str(tmp_path))
    assert result.returncode == 1
    out = result.stdout
    assert "import cycles: 1" in out and "minibertgen.a <-> minibertgen.b" in out
    assert "modules over 400 lines: 1" in out and "minibertgen.big: 401" in out
    assert "functions over 60 lines of code: 1" in out and "minibertgen.long.long (line 1): 62" in out
    assert "imports of the speed wing from the reference: 2" in out  # fast and fast.cpu
    assert "modules of the package imported by minibertgen.dispatch: 1" in out
