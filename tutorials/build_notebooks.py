"""Build the tutorial notebooks from their sources in tutorials/src/ and execute them.

Each source is a Python file in the "percent" format: ``# %%`` starts a code cell and
``# %% [markdown]`` starts a markdown cell whose lines are comments (``# `` is stripped).

    python tutorials/build_notebooks.py            # build and execute all, write tutorials/*.ipynb
    python tutorials/build_notebooks.py 03 05      # only the notebooks whose names start so

The committed notebooks are the executed ones (outputs and figures included), so they
read well on a code host. tests/test_tutorials.py executes them again and checks that
their code still matches these sources.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
KERNEL = "python3"
CELL_TIMEOUT = 300


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format script into [(kind, source)], kind "code" or "markdown"."""
    cells, kind, lines = [], None, []

    def flush():
        if kind is not None:
            body = "\n".join(lines).strip("\n")
            if kind == "markdown":
                body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                 for line in body.split("\n"))
            if body.strip():
                cells.append((kind, body))

    for line in text.split("\n"):
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(source: Path) -> nbformat.NotebookNode:
    """An unexecuted notebook from one source file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, body in parse_cells(source.read_text(encoding="utf-8")):
        cell = nbformat.v4.new_markdown_cell(body) if kind == "markdown" else nbformat.v4.new_code_cell(body)
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{source.stem[:2]}-{i:03d}"  # stable ids keep diffs small
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path = HERE) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel whose working directory is ``cwd``."""
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def strip_volatile(nb: nbformat.NotebookNode) -> None:
    """Drop execution timestamps so that rebuilding does not touch unchanged metadata."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def main(prefixes: list[str]) -> None:
    for source in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        if prefixes and not any(source.name.startswith(p) for p in prefixes):
            continue
        start = time.perf_counter()
        nb = execute(build(source))
        strip_volatile(nb)
        target = HERE / (source.stem + ".ipynb")
        nbformat.write(nb, target)
        size = target.stat().st_size / 1024
        print(f"{target.name}: executed in {time.perf_counter() - start:.1f} s, {size:.0f} KiB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
