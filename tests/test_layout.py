"""The layout rules of the README: no import circle, and no stage module importing another.

Imports are read with `ast` (tests/test_dag.py's ``imports_of``: every import, also the lazy
ones inside functions, relative ones resolved).  The stage modules are the commands' logic;
``pipeline/demo.py`` is the one composite tool: it chains the stages' run functions on one
video, as ``dvc repro`` chains them on a dataset.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_dag import ROOT, imports_of

STAGES = {f"pipeline/{m}.py" for m in
          ("synth", "detect", "extract", "bank", "train", "evaluate", "report", "viz",
           "ensemble")}
COMPOSITE = {"pipeline/demo.py"}


def project_files() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix()
                  for pkg in ("cli", "pipeline") for p in (ROOT / pkg).rglob("*.py"))


def graph() -> dict[str, set[str]]:
    return {f: imports_of(f) - {f} for f in project_files()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path ``[a, b, ..., a]``, or None (iterative DFS)."""
    state: dict[str, int] = {}                    # 1: on the stack, 2: done
    for start in edges:
        if state.get(start):
            continue
        stack = [(start, iter(sorted(edges.get(start, ()))))]
        path, state[start] = [start], 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(edges.get(child, ())))))
    return None


def test_find_cycle_finds_a_circle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle():
    # a package's __init__ importing its own submodules is not a circle of modules
    edges = {f: {t for t in ts if not (f.endswith("__init__.py")
                                       and t.startswith(str(Path(f).parent) + "/"))}
             for f, ts in graph().items()}
    edges = {f: {t for t in ts if not t.endswith("__init__.py")} for f, ts in edges.items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_no_stage_module_imports_another_stage_module():
    bad = {f: sorted(ts & (STAGES - {f})) for f, ts in graph().items()
           if f in STAGES and ts & (STAGES - {f})}
    assert not bad, f"stage modules import stage modules: {bad}"


def test_the_stage_list_is_the_stage_modules():
    files = set(project_files())
    assert STAGES | COMPOSITE <= files
