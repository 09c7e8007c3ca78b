"""Measure minibertgen's structure: the rules of DESIGN.md that a script can check.

    python tools/check_structure.py            # report; exit status 1 on any violation
    python tools/check_structure.py --verbose  # also list the largest modules and functions

Every ``import`` is read from the source (ast), those inside functions too, and resolved to
the package's own modules.  Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``
first, so it counts as importing those packages too (unless the importer lives inside them).
Reported, each expected to be 0:

* import cycles among the package's modules;
* modules over 400 lines;
* functions over 60 lines of code (blank lines, comment lines and the docstring aside);
* imports of the speed wing (minibertgen.fast) from the reference (ops, attention, model,
  cache and their backward modules), directly or through any module they import;
* imports of anything of the package by dispatch.py (the lookup is a leaf).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
PACKAGE = "minibertgen"
SPEED_WING = PACKAGE + ".fast"
REFERENCE = tuple(f"{PACKAGE}.{name}" for name in ("ops", "attention", "model", "cache", "ops_backward",
                                                     "attention_backward", "model_backward"))
LEAF = PACKAGE + ".dispatch"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_modules(root: Path) -> dict:
    """{module name: (path, source, ast tree)} for every .py file of the package."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        modules[module_name(path, root)] = (path, source, ast.parse(source, str(path)))
    return modules


def imported(name: str, tree: ast.AST, is_package: bool, known: set) -> set:
    """The package's modules that ``name`` imports anywhere in its source."""
    base = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                origin = ".".join(parent + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from a import b``: the module a.b where there is one, else a name defined in a
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the packages above it run first, then it
                module = ".".join(parts[:i])
                inside = name == module or name.startswith(module + ".")  # already running: no edge
                if module in known and (i == len(parts) or not inside):
                    found.add(module)
    found.discard(name)
    return found


def import_graph(modules: dict) -> dict:
    known = set(modules)
    return {name: imported(name, tree, path.name == "__init__.py", known)
            for name, (path, _, tree) in modules.items()}


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict, start: str) -> dict:
    """{module: the module that first imported it} for everything ``start`` imports, transitively."""
    seen, todo = {}, [start]
    while todo:
        node = todo.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt not in seen and nxt != start:
                seen[nxt] = node
                todo.append(nxt)
    return seen


def code_lines(function, source_lines) -> int:
    """Lines of a function that hold code: blank lines, comment lines and the docstring aside."""
    first, last = function.lineno, function.end_lineno
    body = function.body
    skip = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for number in range(first, last + 1):
        text = source_lines[number - 1].strip()
        if number in skip or not text or text.startswith("#"):
            continue
        count += 1
    return count


def long_functions(modules: dict) -> list:
    found = []
    for name, (_, source, tree) in modules.items():
        lines = source.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((code_lines(node, lines), f"{name}.{node.name} (line {node.lineno})"))
    return sorted(found, reverse=True)


def check(root: Path, verbose: bool = False) -> int:
    """Print the report; return the number of violations."""
    modules = read_modules(root)
    graph = import_graph(modules)
    problems = 0

    found_cycles = cycles(graph)
    print(f"import cycles: {len(found_cycles)}")
    for component in found_cycles:
        print("  " + " <-> ".join(component))
    problems += len(found_cycles)

    sizes = sorted(((len(source.splitlines()), name) for name, (_, source, _) in modules.items()), reverse=True)
    big = [(n, name) for n, name in sizes if n > MAX_MODULE_LINES]
    print(f"modules over {MAX_MODULE_LINES} lines: {len(big)}")
    for n, name in big:
        print(f"  {name}: {n}")
    problems += len(big)

    functions = long_functions(modules)
    long = [(n, where) for n, where in functions if n > MAX_FUNCTION_LINES]
    print(f"functions over {MAX_FUNCTION_LINES} lines of code: {len(long)}")
    for n, where in long:
        print(f"  {where}: {n}")
    problems += len(long)

    wing = []
    for reference in REFERENCE:
        if reference not in graph:
            continue
        for module, via in reachable(graph, reference).items():
            if module == SPEED_WING or module.startswith(SPEED_WING + "."):
                wing.append(f"{reference} -> {module} (imported by {via})")
    print(f"imports of the speed wing from the reference: {len(wing)}")
    for line in wing:
        print("  " + line)
    problems += len(wing)

    leaf = sorted(graph.get(LEAF, ()))
    print(f"modules of the package imported by {LEAF}: {len(leaf)}")
    for module in leaf:
        print("  " + module)
    problems += len(leaf)

    if verbose:
        print("largest modules:", ", ".join(f"{name} {n}" for n, name in sizes[:8]))
        print("longest functions:", ", ".join(f"{where} {n}" for n, where in functions[:8]))
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the repository root (holding minibertgen/)")
    parser.add_argument("--verbose", action="store_true", help="also list the largest modules and functions")
    args = parser.parse_args(argv)
    problems = check(args.root, args.verbose)
    print("OK" if problems == 0 else f"{problems} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
