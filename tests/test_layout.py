"""The package's shape: no import cycles, a small top level, and the moved modules' old paths."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import ttt_mm

PACKAGE = Path(ttt_mm.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> ttt_mm modules it imports`` from the source, every import statement included
    (those inside functions and under ``TYPE_CHECKING`` too: they are dependencies all the same)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` depends on the submodule when it is one, else on pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "ttt_mm.embed.embedder" in graph["ttt_mm.tasks.embed"] | graph["ttt_mm.embed"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_outside_the_tokenizers_names_a_concrete_tokenizer():
    """Callers use the `Tokenizer` interface; only configs (and the old-checkpoint translation,
    which rewrites configs) name a concrete class, as a ``_target_`` string."""
    concrete = {"AudioTokenizer", "VideoTokenizer", "AVTokenizer"}
    users = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "tokenizers"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name | ast.Attribute | ast.alias):
                name = (
                    node.id
                    if isinstance(node, ast.Name)
                    else node.attr
                    if isinstance(node, ast.Attribute)
                    else node.name
                )
                if name in concrete:
                    users.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert users == []


def test_the_top_level_holds_only_the_backbone_the_module_its_checkpoints_and_packages():
    files = sorted(p.name for p in PACKAGE.glob("*.py"))  # (and the list of commands, ``python -m ttt_mm``)
    assert files == ["__init__.py", "__main__.py", "backbone.py", "checkpoint.py", "module.py"]


@pytest.mark.parametrize("old", sorted(ttt_mm.MOVED))
def test_an_old_module_path_still_imports_with_a_deprecation_warning(old, monkeypatch):
    new = ttt_mm.MOVED[old]
    monkeypatch.delitem(sys.modules, old, raising=False)  # (put back after: other tests see what they saw)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; import {new} instead"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


@pytest.mark.parametrize("name", ["select", "Selection", "index_clips"])
def test_a_name_that_moved_out_of_a_module_still_imports_with_a_deprecation_warning(name):
    index = importlib.import_module("ttt_mm.data.index")
    with pytest.warns(
        DeprecationWarning, match=f"ttt_mm.data.index.{name} is deprecated; import it from ttt_mm.data.selection"
    ):
        old = getattr(index, name)
    assert old is getattr(importlib.import_module("ttt_mm.data.selection"), name)
    with pytest.raises(AttributeError, match="module 'ttt_mm.data.index' has no attribute 'no_such_name'"):
        index.no_such_name  # noqa: B018


def test_python_m_ttt_mm_lists_every_command_and_names_the_module_of_one_given(capsys):
    """``python -m ttt_mm`` failed with "No module named ttt_mm.__main__"."""
    from ttt_mm import __main__ as commands

    tasks = {m.name for m in pkgutil.iter_modules(importlib.import_module("ttt_mm.tasks").__path__)}
    entry_points = {m for m in tasks if hasattr(importlib.import_module(f"ttt_mm.tasks.{m}"), "main")}
    assert set(commands.COMMANDS) == entry_points  # (every command, and none that is not one)
    for name in commands.COMMANDS:  # each runs as ``python -m ttt_mm.tasks.<name>`` (train's did nothing)
        tree = ast.parse((PACKAGE / "tasks" / f"{name}.py").read_text())
        guards = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        assert guards and "main()" in ast.unparse(guards[-1]), name
    assert commands.main([]) == 0
    listed = capsys.readouterr().out
    assert all(f"python -m ttt_mm.tasks.{name} " in listed for name in commands.COMMANDS)
    assert commands.main(["linear-probe", "ckpt=a"]) == 2
    assert (
        capsys.readouterr().err
        == "error: python -m ttt_mm linear-probe: run it as python -m ttt_mm.tasks.linear_probe\n"
    )
