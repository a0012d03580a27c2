"""The modules of core, llmlog, accounting and config import one another without a circle (STYLE.md: an
import placed inside a function to dodge a circle says the split is wrong), and the packages only as
docs/architecture.md draws them (core imports no app). Every import counts, at the top of a module or
inside a function; accounting's independence from llmlog is also tests/accounting/test_dependencies.py's."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "llmlog", "accounting", "config")
# The thin callers of llmlog: they parse and shape, and no other module of the apps imports them.
CALLERS = ("llmlog.api", "llmlog.admin", "llmlog.dashboard", "llmlog.management")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages (a package is its __init__)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name `module` imports, wherever the import statement sits; a name imported from a
    module (`from a.b import c`) is given as a.b.c, which `import_graph` resolves to a.b when c is not
    a module."""
    names = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports (outside modules are left out)."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path):
            while name and name not in modules:  # a name inside a module: the module
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan), as a path that ends where
    it starts: ["a", "b", "a"]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_in(group, graph) for group in groups]


def _circle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group (breadth first)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle in {sorted(group)}")


def test_no_import_circle_between_modules():
    graph = import_graph(ROOT, PACKAGES)

    assert "llmlog.ingest.service" in graph and "llmlog.tasks" in graph["llmlog.ingest.service"]
    found = [" -> ".join(circle) for circle in cycles(graph)]
    assert found == [], "modules that import each other in a circle:\n" + "\n".join(found)


def test_a_circle_is_found_and_named_whether_its_import_is_at_the_top_or_in_a_function(tmp_path):
    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ingest.py").write_text("from app.posting import request_soon\n")
    (package / "posting.py").write_text("from . import pricing\n")
    (package / "pricing.py").write_text("def price():\n    from app import ingest\n")
    (package / "alone.py").write_text("import app.pricing\n")

    graph = import_graph(tmp_path, ("app",))

    assert graph["app.alone"] == {"app.pricing"}
    assert cycles(graph) == [["app.ingest", "app.posting", "app.pricing", "app.ingest"]]


def allowed_imports(text: str) -> dict[str, set[str]]:
    """Package -> the packages it may import, from the block after docs/architecture.md's `allowed
    imports` marker: one line per package, `name -> other other`."""
    block = text.split("<!-- allowed imports", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    allowed = {}
    for line in block.strip().splitlines():
        name, _, targets = line.partition("->")
        allowed[name.strip()] = set(targets.split())
    return allowed


def package_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (module.split(".")[0], target.split(".")[0])
        for module, targets in graph.items()
        for target in targets
        if module.split(".")[0] != target.split(".")[0]
    }


def test_packages_import_only_what_the_architecture_drawing_allows():
    allowed = allowed_imports((ROOT / "docs" / "architecture.md").read_text())
    edges = package_edges(import_graph(ROOT, PACKAGES))

    assert set(allowed) == set(PACKAGES), "docs/architecture.md names each package once"
    assert allowed["core"] == set(), "core imports no app"
    assert ("llmlog", "core") in edges and ("accounting", "core") in edges
    forbidden = sorted(f"{a} -> {b}" for a, b in edges if b not in allowed[a])
    assert forbidden == [], "imports docs/architecture.md does not allow:\n" + "\n".join(forbidden)


def test_no_module_imports_a_thin_caller_except_the_callers_and_config():
    def is_caller(module: str) -> bool:
        return any(module == caller or module.startswith(caller + ".") for caller in CALLERS)

    graph = import_graph(ROOT, PACKAGES)
    found = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if not is_caller(module) and not module.startswith("config")
        for target in targets
        if is_caller(target)
    )
    assert found == [], "a service imports a view, admin or command:\n" + "\n".join(found)


def test_a_forbidden_package_import_is_named(tmp_path):
    files = (("core", "money", "import app.models\n"), ("app", "models", "import core\n"))
    for package, module, source in files:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / f"{module}.py").write_text(source)
    allowed = allowed_imports("<!-- allowed imports -->\n```text\ncore ->\napp -> core\n```\n")

    edges = package_edges(import_graph(tmp_path, ("core", "app")))

    assert edges == {("core", "app"), ("app", "core")}
    assert [f"{a} -> {b}" for a, b in sorted(edges) if b not in allowed[a]] == ["core -> app"]
