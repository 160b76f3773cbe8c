"""Layers go one way: drl's modules import each other without cycles, and the core names no env or agent module.

Read from the source of the installed package (the packages pyproject.toml lists, found where Python imports them
from), every import statement, those inside functions included:

- The module import graph is acyclic. An edge A -> B is an import statement in A naming module B (``import B``,
  ``from B import x``, or ``from P import B`` where B is module P.B; relative imports resolved). Not edges: the
  packages above A (Python runs their ``__init__`` first whatever A imports), ``from __future__``, modules outside
  drl, and imports under ``if TYPE_CHECKING:`` (they never run).
- A core module imports nothing from ``drl.envs`` or ``drl.agents``, ``TYPE_CHECKING`` imports included (a type
  named is a dependency too). Core is every drl module outside those two packages and ``drl.bench`` (benchmarks of
  particular envs); ``NAMED_CORE`` must be among them. The core reaches plug-ins through the registries
  (``drl.registry``), whose lazy ``"module:attribute"`` strings are not imports; the built-ins' table at the end of
  ``drl/registry.py`` is the one place that names them.
"""

from __future__ import annotations

import ast
import graphlib
import importlib.util
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT

PLUG_INS = ("drl.envs", "drl.agents")
TOOLS = ("drl.bench",)
NAMED_CORE = [
    "drl.config",
    "drl.registry",
    "drl.loop",
    "drl.replay",
    "drl.networks",
    "drl.metrics",
    "drl.tracking",
    "drl.evaluate",
    "drl.vec_env",
    "drl.checkpoint",
    "drl.segments",
    "drl.agent",
    "drl.distributed",
    "drl.distributed.collector",
    "drl.distributed.learner",
]


def module_files() -> dict[str, Path]:
    """Module name -> source file, for every module of the installed drl packages."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    files = {}
    for package in packages:
        folder = Path(importlib.util.find_spec(package).submodule_search_locations[0])
        for path in folder.glob("*.py"):
            files[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return files


def _type_checking(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Name)
        and test.id == "TYPE_CHECKING"
        or isinstance(test, ast.Attribute)
        and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[str, bool]]:
    """The drl modules that ``module``'s source imports, each as ``(name, only_under_TYPE_CHECKING)``."""
    found: list[tuple[str, bool]] = []
    here = module.split(".") if is_package else module.split(".")[:-1]  # the package relative imports start from

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, type_checking))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = (
                ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                if node.level
                else node.module
            )
            for alias in node.names:
                found.append((f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking or isinstance(node, ast.If) and _type_checking(node.test) and child in node.body)

    visit(ast.parse(source), False)
    return [(name, tc) for name, tc in found if name in known]


def import_graph() -> dict[str, list[tuple[str, bool]]]:
    files = module_files()
    return {
        name: imports_of(path.read_text(), name, path.stem == "__init__", set(files)) for name, path in files.items()
    }


def cycle(graph: dict[str, list[tuple[str, bool]]]) -> list[str] | None:
    """A cycle of run-time imports (``[a, b, ..., a]``), or None."""
    edges = {
        m: {name for name, type_checking in names if not type_checking and name != m} for m, names in graph.items()
    }
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def core(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    return sorted(m for m in graph if not _within(m, PLUG_INS + TOOLS))


def plug_in_imports(graph: dict[str, list[tuple[str, bool]]], modules: list[str]) -> list[str]:
    return [f"{m} imports {name}" for m in modules for name, _ in graph[m] if _within(name, PLUG_INS)]


def test_drl_modules_import_each_other_without_cycles():
    graph = import_graph()
    assert {"drl.config", "drl.loop", "drl.envs", "drl.envs.doom.vec_env", "drl.agents.dqn"} <= graph.keys()
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_core_names_no_env_or_agent_module():
    graph = import_graph()
    assert set(NAMED_CORE) <= set(core(graph)), sorted(set(NAMED_CORE) - set(core(graph)))
    assert plug_in_imports(graph, core(graph)) == []


# ------------------------------------------------------------------------------------ the checker itself
KNOWN = {"drl", "drl.config", "drl.loop", "drl.envs", "drl.envs.doom", "drl.envs.doom.labels", "drl.agents"}


def test_the_checker_sees_imports_inside_functions_relative_ones_and_type_checking_ones():
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import numpy
from drl import config
from .doom import labels
if TYPE_CHECKING:
    from drl.agents import Agent
def make():
    if True:
        from drl.loop import evaluate
"""
    assert imports_of(source, "drl.envs", True, KNOWN) == [
        ("drl.config", False),
        ("drl.envs.doom.labels", False),
        ("drl.agents", True),
        ("drl.loop", False),
    ]
    assert imports_of("from .. import config", "drl.envs", True, KNOWN) == [("drl.config", False)]
    assert imports_of("from .labels import x", "drl.envs.doom.game", False, KNOWN) == [("drl.envs.doom.labels", False)]


@pytest.mark.parametrize(
    "planted, expected",
    [
        ({"drl.loop": [("drl.config", False)], "drl.config": [("drl.loop", False)]}, ["drl.loop", "drl.config"]),
        ({"drl.loop": [("drl.config", False)], "drl.config": [("drl.loop", True)]}, None),  # TYPE_CHECKING only
    ],
)
def test_the_checker_finds_a_cycle(planted, expected):
    found = cycle(planted)
    assert found is None if expected is None else set(found) == set(expected) and found[0] == found[-1]


def test_the_checker_flags_a_core_module_naming_a_plug_in():
    graph = {"drl.loop": [("drl.config", False), ("drl.envs.doom.labels", True)], "drl.config": []}
    assert plug_in_imports(graph, ["drl.loop", "drl.config"]) == ["drl.loop imports drl.envs.doom.labels"]
