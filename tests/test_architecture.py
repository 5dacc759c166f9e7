"""The package's shape, measured from its own imports (every ``import``, at module level or inside a function).

Imports only point down the layers of README's architecture section, no modules import each other in
a circle, core modules import no Airflow, and no core module outgrows one job (~350 lines).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "airflow_mlops"

#: Top-level parts of ``airflow_mlops``, bottom up. A part may import from its own layer's part only
#: when it is itself, and from any lower layer.
LAYERS: list[set[str]] = [
    {"", "errors"},  # "": the package itself (its version)
    {"config", "formats", "utils"},
    {"embedded", "datasets"},
    {"snapshots"},
    {"etl", "tracking"},
    {"tuning", "registry", "predict"},
    {"lineage"},
    {"retention", "reproduce"},
    {"hooks"},
    {"links"},
    {"operators", "cli", "get_provider_info"},
]
#: The parts that run inside Airflow; everything else is core, usable without it.
AIRFLOW_SIDE = {"hooks", "links", "operators", "cli", "get_provider_info"}
CORE_MODULE_MAX_LINES = 350


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(module: str, path: Path) -> set[str]:
    """Every absolute name ``module`` imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {
        module: {target for name in _imports(module, path) if (target := owner(name)) not in (None, module)}
        for module, path in modules.items()
    }


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _layer(part: str) -> int:
    for rank, parts in enumerate(LAYERS):
        if part in parts:
            return rank
    raise AssertionError(f"airflow_mlops.{part} is in no layer of tests/test_architecture.py's LAYERS: place it there")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def test_no_modules_import_each_other_in_a_circle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_only_point_down_the_layers():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _part(module) != _part(target) and _layer(_part(target)) >= _layer(_part(module))
    )
    assert upward == []


def test_core_modules_import_no_airflow():
    airflow_imports = sorted(
        f"{module}: {name}"
        for module, path in _modules().items()
        if _part(module) not in AIRFLOW_SIDE
        for name in _imports(module, path)
        if name == "airflow" or name.startswith("airflow.")
    )
    assert airflow_imports == []


def test_no_core_module_outgrows_one_job():
    too_long = sorted(
        f"{module}: {lines} lines"
        for module, path in _modules().items()
        if _part(module) not in AIRFLOW_SIDE
        and (lines := len(path.read_text().splitlines())) > CORE_MODULE_MAX_LINES
    )
    assert too_long == []


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(module) for module in _modules()}
    for part in sorted(parts):
        _layer(part)


def test_every_templated_field_says_so_in_its_param():
    """An operator argument Airflow renders as a template says "(templated)" in its ``:param:``, as providers do."""
    import inspect

    import airflow_mlops.operators as operators

    unmarked = []
    for name in operators.__all__:
        operator = getattr(operators, name)
        docs = " ".join(inspect.getdoc(cls) or "" for cls in reversed(operator.__mro__) if cls.__module__.startswith("airflow_mlops"))
        params = dict(
            (chunk.split(":", 1)[0].strip(), chunk.split(":", 1)[1]) for chunk in docs.split(":param ")[1:]
        )
        for field in operator.template_fields:
            if field not in params:
                unmarked.append(f"{name}.{field}: no :param:")
            elif "(templated)" not in " ".join(params[field].split()):
                unmarked.append(f"{name}.{field}")
        unmarked += [f"{name}.{param}: says templated, is not" for param, text in params.items()
                     if "(templated)" in " ".join(text.split()) and param not in operator.template_fields]
    assert unmarked == []
