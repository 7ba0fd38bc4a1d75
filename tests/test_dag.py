"""The DAG knows its code: every module a stage runs is a dependency of it in dvc.yaml.

A stage's code is the import closure, inside the project, of its command's module
(`acar extract` -> cli/extract.py -> pipeline/extract.py -> ...), found with `ast`: every
import, also those inside functions (the lazy ones), relative ones resolved, and the
packages (``__init__.py``) that importing a module runs.  dvc.yaml must list each module
of it, or a folder holding it.  Then a changed module reruns the stages that run it
(checked with `dvc status` on a few representative stages at the end).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from functools import cache
from pathlib import Path

import pytest
import yaml

from pipeline.artifacts.digest import digest_path
from tests.test_dvc_pipeline import dvc

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "pipeline")
# Imports not followed: checking the params file (`pipeline.config.check_params`) imports
# every stage's config dataclass (by name, from `SECTIONS`) and the heads, but a stage's
# outputs depend only on its own section, which dvc tracks as `params:`.
CHECK_ONLY = {("pipeline/config.py", name) for name in ("_check_heads", "_hparam", "check_values")}


# ---- the import closure ------------------------------------------------------------------

def module_file(name: str, root: Path = ROOT) -> str | None:
    """'pipeline.models' -> 'pipeline/models/__init__.py'; None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.relative_to(root).as_posix()
    return None


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str, root: Path) -> list[str]:
    """The files importing module ``name`` runs: its packages' ``__init__.py`` and itself."""
    parts = name.split(".")
    files = [module_file(".".join(parts[:i]), root) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def _import_nodes(tree: ast.AST, path: str):
    """Every Import/ImportFrom of ``tree`` (function bodies included), except those in
    ``if TYPE_CHECKING:`` blocks and in the functions of CHECK_ONLY."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                (path, node.name) in CHECK_ONLY:
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(path: str, root: Path = ROOT) -> set[str]:
    """The project files that importing ``path`` (relative to root) runs directly."""
    tree = ast.parse((root / path).read_text(), path)
    package = module_name(path) if path.endswith("__init__.py") else \
        module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(tree, path):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.update(_with_parents(alias.name, root))
            continue
        if node.level:
            base = package.split(".")
            base = base[:len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        out.update(_with_parents(target, root))
        for alias in node.names:            # `from pkg import module`
            sub = module_file(f"{target}.{alias.name}", root)
            if sub is not None:
                out.add(sub)
    return out


def closure(entry: str, root: Path = ROOT) -> set[str]:
    """``entry`` and every project file it imports, transitively."""
    seen: set[str] = set()
    todo = [entry, *_with_parents(module_name(entry), root)]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imports_of(path, root) - seen)
    return seen


# ---- the stages of dvc.yaml --------------------------------------------------------------

@cache
def commands() -> dict[str, str]:
    """acar subcommand -> its module (cli/<file>.py), read from the click decorators."""
    out = {}
    for path in sorted((ROOT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if not isinstance(deco, ast.Call):
                    continue
                called = ast.unparse(deco.func)
                if called == "click.command":
                    names = [a.value for a in deco.args if isinstance(a, ast.Constant)]
                elif called == "stage_command":
                    names = [k.value.value for k in deco.keywords if k.arg == "name"]
                else:
                    continue
                out[names[0] if names else node.name] = f"cli/{path.name}"
    return out


def expand(text: str, variables: dict) -> str:
    def one(match: re.Match) -> str:
        node = variables
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)
    return re.sub(r"\$\{([^}]+)\}", one, text)


# Every pipeline file: the default DAG, the second one of the issue-17 methods and the third
# one of the grown world (README, "The DVC DAG"), whose stages run in the repository root
# (``wdir: ..``).
PIPELINES = [ROOT / "dvc.yaml", ROOT / "methods" / "dvc.yaml", ROOT / "grown" / "dvc.yaml"]


def stages(dvc_yaml: Path = ROOT / "dvc.yaml", outs: bool = False,
           root: Path | None = None) -> dict[str, dict]:
    """name -> {cmd, deps (and, with ``outs``, outs)}, ``foreach`` stages expanded
    (``train@acar``...), paths relative to ``root`` (default: the file's folder) with each
    stage's ``wdir`` applied; a stage of a file other than ``root/dvc.yaml`` is named
    ``<file>:<stage>``, as dvc names it (``methods/dvc.yaml:ensemble@mean_logit``)."""
    root = (root or dvc_yaml.parent).resolve()
    where = dvc_yaml.resolve().relative_to(root).as_posix()
    prefix = "" if where == "dvc.yaml" else f"{where}:"
    doc = yaml.safe_load(dvc_yaml.read_text())
    variables = {k: v for item in doc.get("vars", []) for k, v in item.items()}
    out = {}
    for name, stage in doc["stages"].items():
        bodies = {name: (stage, variables)} if "foreach" not in stage else {
            f"{name}@{key}": (stage["do"], {**variables, "key": key, "item": item})
            for key, item in expand_items(stage["foreach"], variables).items()}
        for full, (body, scope) in bodies.items():
            base = (dvc_yaml.parent / body.get("wdir", ".")).resolve()

            def rel(path: str, base: Path = base, scope: dict = scope) -> str:
                return (base / expand(path, scope)).resolve().relative_to(root).as_posix()
            entry = {"cmd": expand(body["cmd"], scope),
                     "deps": [rel(d) for d in body.get("deps", [])]}
            if outs:
                entry["outs"] = [rel(next(iter(o)) if isinstance(o, dict) else o)
                                 for kind in ("outs", "metrics", "plots")
                                 for o in body.get(kind, [])]
            out[prefix + full] = entry
    return out


def all_stages(outs: bool = False) -> dict[str, dict]:
    """The stages of every pipeline file (:data:`PIPELINES`)."""
    return {k: v for path in PIPELINES for k, v in stages(path, outs, ROOT).items()}


def expand_items(foreach, variables: dict) -> dict:
    if isinstance(foreach, str):
        foreach = variables[re.fullmatch(r"\$\{(.+)\}", foreach).group(1)]
    return foreach if isinstance(foreach, dict) else {str(v): v for v in foreach}


def cmd_words(cmd: str) -> list[str]:
    """A stage command's words without the group's ``--threads N``: [acar, subcommand, ...]."""
    words = cmd.split()
    assert words[0] == "acar", f"stage command does not start with acar: {cmd}"
    if words[1] == "--threads":
        words = words[:1] + words[3:]
    return words


def stage_code(cmd: str) -> set[str]:
    return closure(commands()[cmd_words(cmd)[1]])


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


# ---- tests -------------------------------------------------------------------------------

def test_closure_follows_lazy_relative_and_package_imports(tmp_path):
    (tmp_path / "pipeline" / "sub").mkdir(parents=True)
    files = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "def run():\n    from .sub import b\n",
        "pipeline/sub/__init__.py": "",
        "pipeline/sub/b.py": "from ..c import thing\nimport numpy\n",
        "pipeline/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from . import d\nthing = 1\n",
        "pipeline/d.py": "",
        "pipeline/config.py": "def _hparam():\n    from . import d\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert closure("pipeline/a.py", tmp_path) == {
        "pipeline/__init__.py", "pipeline/a.py", "pipeline/sub/__init__.py",
        "pipeline/sub/b.py", "pipeline/c.py"}
    assert closure("pipeline/config.py", tmp_path) == {"pipeline/__init__.py",
                                                        "pipeline/config.py"}


def test_every_stage_has_a_command_module():
    for name, stage in all_stages().items():
        assert cmd_words(stage["cmd"])[1] in commands(), name
    assert commands()["eval"] == "cli/evaluate.py"
    assert "pipeline/backbones/hoghof.py" in stage_code("acar extract")


@pytest.mark.parametrize("name", sorted(all_stages()))
def test_dvc_yaml_lists_every_module_a_stage_runs(name):
    stage = all_stages()[name]
    missing = sorted(p for p in stage_code(stage["cmd"]) if not covered(p, stage["deps"]))
    assert not missing, f"dvc.yaml stage '{name}' does not list {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(all_stages()))
def test_code_deps_exist(name):
    """A module that moved away must not stay a (then missing) dependency."""
    gone = [d for d in all_stages()[name]["deps"]
            if d.split("/")[0] in PACKAGES and not (ROOT / d).exists()]
    assert not gone, f"dvc.yaml stage '{name}' lists missing {', '.join(gone)}"


def test_every_data_dep_of_the_methods_is_an_output():
    """A data dependency of methods/dvc.yaml or grown/dvc.yaml is made by a stage of some
    pipeline file (a misspelt path would otherwise be a missing input that dvc reports only
    when run)."""
    every = all_stages(outs=True)
    made = [o for stage in every.values() for o in stage["outs"]]
    for name, stage in every.items():
        if not name.startswith(("methods/", "grown/")):
            continue
        assert cmd_words(stage["cmd"])[1] in commands(), name
        for dep in stage["deps"]:
            if dep.startswith("data/"):
                assert covered(dep, made), f"{name}: no stage makes {dep}"


# the command-line options by which a stage reads a Zarr store (extract's --out writes one)
STORE_READS = ("--features", "--bank")


def test_a_store_folder_is_named_by_its_producer_only():
    """DVC walks and hashes a directory dep or out once per stage that names it.  A Zarr
    store (thousands of files) is an out of its producer only, with its digest file beside
    it (pipeline/artifacts/digest.py); a stage that reads the store depends on that digest,
    so a no-op `dvc status` walks each store once and a changed store still reruns it."""
    every = all_stages(outs=True)
    producers: dict[str, str] = {}
    for name, stage in every.items():
        named = [d for d in stage["deps"] if d.endswith(".zarr")]
        assert not named, f"{name} depends on the store folder {named}: use its digest"
        for out in stage["outs"]:
            if out.endswith(".zarr"):
                producers[out] = name
                assert digest_path(out).as_posix() in stage["outs"], \
                    f"{name} makes {out} without its digest {digest_path(out)}"
    assert producers == {"data/features.zarr": "extract", "data/banks/lfb.zarr": "bank_lfb",
                         "data/banks/acfb.zarr": "bank_acfb",
                         "data/grown/features.zarr": "grown/dvc.yaml:extract",
                         "data/grown/banks/memory.zarr": "grown/dvc.yaml:bank_memory"}
    reads = 0
    for name, stage in every.items():
        words = cmd_words(stage["cmd"])
        for flag, store in zip(words, words[1:], strict=False):
            if flag in STORE_READS:
                reads += 1
                assert store in producers, f"{name} reads {store}, which no stage makes"
                assert digest_path(store).as_posix() in stage["deps"], \
                    f"{name} reads {store} but does not depend on {digest_path(store)}"
    assert reads >= 38                   # every train/eval/bank stage of the three files


# the stages whose floats depend on torch's thread count (the order of float sums)
THREAD_BOUND = ("train", "eval --model", "bank")


@pytest.mark.parametrize("path, threads", [("dvc.yaml", "2"), ("methods/dvc.yaml", "2"),
                                           ("grown/dvc.yaml", "1")])
def test_the_thread_bound_stages_pin_their_threads(path, threads):
    """A train, eval or bank stage runs at a fixed thread count, whatever the machine and
    ACAR_JOBS: the lock's checkpoints and APs depend on it (README, "The DVC DAG").  The
    grown world's at 1, as bench/world.py ran its other seeds."""
    pinned = 0
    for name, stage in stages(ROOT / path, root=ROOT).items():
        words = stage["cmd"].split()
        sub = cmd_words(stage["cmd"])[1:]
        rest = " ".join(w for w in sub[:5] if w not in ("--params", "grown/stages.yaml"))
        if rest.startswith(THREAD_BOUND):
            assert words[1:3] == ["--threads", threads], \
                f"{path}: {name} does not pin --threads {threads}"
            pinned += 1
    assert pinned >= 6                    # methods: atr and two fine-tunings, trained and scored


@pytest.mark.parametrize("folder", ["methods", "grown"])
def test_methods_stages_run_in_the_repository_root(folder):
    doc = yaml.safe_load((ROOT / folder / "dvc.yaml").read_text())
    for name, stage in doc["stages"].items():
        assert stage.get("do", stage).get("wdir") == "..", name


def test_grown_stages_read_the_grown_params_and_write_under_data_grown():
    """The third pipeline never reads ../stages.yaml nor writes the default world's data."""
    for name, stage in stages(ROOT / "grown" / "dvc.yaml", outs=True, root=ROOT).items():
        words = cmd_words(stage["cmd"])
        assert words[2:4] == ["--params", "grown/stages.yaml"], name
        assert stage["outs"] and all(o.startswith("data/grown/") for o in stage["outs"]), name
        assert all(d.startswith("data/grown/") for d in stage["deps"] if d.startswith("data/"))
    doc = yaml.safe_load((ROOT / "grown" / "dvc.yaml").read_text())
    for name, stage in doc["stages"].items():
        for params in stage.get("do", stage).get("params", []):
            assert list(params) == ["grown/stages.yaml"], name


# ---- the behaviour, with dvc -------------------------------------------------------------

# (stage, a module it imports, and not through a dependency it shares with the others)
EDITS = [("synth", "pipeline/video.py"), ("extract", "pipeline/backbones/hoghof.py"),
         ("bank_lfb", "pipeline/models/actor.py"), ("train@acfb", "pipeline/distributed.py"),
         ("eval@acar", "pipeline/keyframes.py")]


def placeholder(path: Path) -> None:
    """A stand-in for a data dependency or output: a file, or a folder with one file."""
    if path.exists():
        return
    if path.suffix and path.suffix != ".zarr":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / "x").write_text("x\n")


def test_a_comment_in_an_imported_module_changes_the_stage(tmp_path):
    """In a scratch copy: record the stages (placeholder data, `dvc commit`, no run),
    then append a comment to one module each imports: `dvc status` names that dep."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "stages.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, repo / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    dvc(repo, "init", "--no-scm", "-q")
    names = [stage for stage, _ in EDITS]
    doc = yaml.safe_load((repo / "dvc.yaml").read_text())
    for name in names:
        for dep in stages(repo / "dvc.yaml")[name]["deps"]:
            if dep.startswith("data/"):
                placeholder(repo / dep)
    for name in names:                     # the outputs: dvc commit needs them present
        base, _, key = name.partition("@")
        body = doc["stages"][base].get("do", doc["stages"][base])
        for out in body.get("outs", []) + body.get("metrics", []) + body.get("plots", []):
            out = next(iter(out)) if isinstance(out, dict) else out
            placeholder(repo / expand(out, {"key": key}))
    dvc(repo, "commit", "-f", "-q", *names)
    assert json.loads(dvc(repo, "status", "--json", *names) or "{}") == {}

    for name, module in EDITS:
        assert module in stage_code(stages(repo / "dvc.yaml")[name]["cmd"]), (name, module)
        with open(repo / module, "a") as f:
            f.write("# touched\n")
    status = json.loads(dvc(repo, "status", "--json", *names))
    for name, module in EDITS:
        deps = stages(repo / "dvc.yaml")[name]["deps"]
        dep = next(d for d in deps if covered(module, [d]))
        changed = {k: v for entry in status.get(name, []) if isinstance(entry, dict)
                   for k, v in entry.get("changed deps", {}).items()}
        assert changed.get(dep) == "modified", (name, module, status.get(name))
