"""The package's shape, read from its source with ``ast``: layers, circles, sizes, the MLflow seam.

Layers, low to high; a module imports its own layer or lower ones only (imports inside
functions count: they are dependencies too):

    0  errors, redaction, paths, provenance, textnorm, settings_types, settings_layers, labels
    1  config, data, store/, migrations/, inference/, modeling, evaluation, healthcheck, the root
    2  tracking/        the one package that imports mlflow
    3  drift/, labeling/, scoring/, feedback, feedback_dataset, gate, jobs/
    4  serving/
    5  demo/
    6  cli/

The shim kept at ``sentiment_ops/pyfunc.py`` for versions logged before models-from-code sits
on the tracking layer and holds nothing but a re-export.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sentiment_ops"
ROOT = "sentiment_ops"

LAYERS: dict[str, int] = {
    "errors": 0,
    "redaction": 0,
    "paths": 0,
    "provenance": 0,
    "textnorm": 0,
    "settings_types": 0,
    "settings_layers": 0,
    "labels": 0,
    "": 1,  # the package root: version and public names
    "config": 1,
    "data": 1,
    "store": 1,
    "migrations": 1,
    "inference": 1,
    "modeling": 1,
    "evaluation": 1,
    "healthcheck": 1,
    "tracking": 2,
    "pyfunc": 2,
    "drift": 3,
    "labeling": 3,
    "scoring": 3,
    "feedback": 3,
    "feedback_dataset": 3,
    "gate": 3,
    "jobs": 3,
    "serving": 4,
    "demo": 5,
    "cli": 6,
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8  # outside cli/, where a command's options are its parameters


@dataclass
class Module:
    name: str  # dotted, without the package: "drift.check"; "" for the root
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # the package's modules this one imports


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(module: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package's modules an import statement names (a ``from pkg import mod`` names mod)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.name.split(".") if module.name else []
            if module.path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            stem = ".".join([ROOT, *base] + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        # ``from pkg import mod`` names the module; ``from mod import name`` names the module
        targets = [
            f"{stem}.{alias.name}" if f"{stem}.{alias.name}"[len(ROOT) + 1 :] in known else stem for alias in node.names
        ]
    found = set()
    for target in targets:
        if target != ROOT and not target.startswith(ROOT + "."):
            continue
        name = target[len(ROOT) + 1 :]
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name != module.name:
            found.add(name)
    return found


def _modules() -> dict[str, Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        modules[_name(path)] = Module(_name(path), path, ast.parse(path.read_text(), str(path)))
    known = set(modules)
    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module.imports |= _imported(module, node, known)
    return modules


MODULES = _modules()


def _layer(name: str) -> int:
    top = name.split(".", maxsplit=1)[0]
    assert top in LAYERS, f"sentiment_ops/{name.replace('.', '/')}: give its top level a layer in LAYERS"
    return LAYERS[top]


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        _layer(name)


def test_no_import_from_a_higher_layer() -> None:
    upward = [
        f"{m.name or ROOT} (layer {_layer(m.name)}) imports {dep or ROOT} (layer {_layer(dep)})"
        for m in MODULES.values()
        for dep in sorted(m.imports)
        if _layer(dep) > _layer(m.name)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    # Tarjan's strongly connected components over the module graph; a circle is one of size > 1
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for dep in MODULES[name].imports:
            if dep not in index:
                visit(dep)
                low[name] = min(low[name], low[dep])
            elif dep in stack:
                low[name] = min(low[name], index[dep])
        if low[name] == index[name]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == name:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in MODULES:
        if name not in index:
            visit(name)
    assert circles == []


def test_mlflow_is_imported_only_under_tracking() -> None:
    outside = []
    for m in MODULES.values():
        if m.name.split(".")[0] == "tracking":
            continue
        for node in ast.walk(m.tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            outside += [
                f"{m.path.relative_to(PACKAGE.parent)}:{node.lineno}" for n in names if n.split(".")[0] == "mlflow"
            ]
    assert outside == []


def test_module_size() -> None:
    long = {
        str(m.path.relative_to(PACKAGE.parent)): n
        for m in MODULES.values()
        if (n := len(m.path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_function_size(limit: int) -> None:
    long = {
        f"{m.path.relative_to(PACKAGE.parent)}:{fn.lineno} {fn.name}": fn.end_lineno - fn.lineno + 1
        for m in MODULES.values()
        for fn in _functions(m.tree)
        if fn.end_lineno is not None and fn.end_lineno - fn.lineno + 1 > limit
    }
    assert long == {}


def test_parameter_count_outside_the_cli() -> None:
    many = {}
    for m in MODULES.values():
        if m.name.split(".")[0] == "cli":
            continue
        for fn in _functions(m.tree):
            a = fn.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, [a.vararg, a.kwarg])]
            if params and params[0].arg in ("self", "cls"):
                params = params[1:]
            if len(params) > MAX_PARAMETERS:
                many[f"{m.path.relative_to(PACKAGE.parent)}:{fn.lineno} {fn.name}"] = len(params)
    assert many == {}


def test_the_scan_sees_the_package() -> None:
    # the checks above mean nothing if the walk finds nothing: the graph must hold known edges
    assert MODULES["cli.main"].imports, "no imports found in cli/main.py"
    assert "errors" in MODULES["config"].imports
