"""The package's layers: the import graph has no circle, the layers below the kinds of model
import none, and ``import torchcallbacks`` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

import torchcallbacks

PACKAGE = Path(torchcallbacks.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports() -> dict[str, set[str]]:
    """Each module's imports of the package's modules, leaving out those made only for type
    checking (under ``if TYPE_CHECKING:``)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        type_checking = {
            id(node)
            for branch in ast.walk(tree)
            if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
            for node in ast.walk(branch)
        }
        targets = set()
        for node in ast.walk(tree):
            if id(node) in type_checking:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for imported in names:
                target = resolve(imported) if imported.startswith("torchcallbacks") else None
                if target is not None and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle():
    graph = runtime_imports()
    assert "torchcallbacks.trainer" in graph and graph["torchcallbacks.trainer"]
    assert circles(graph) == []


def test_a_circle_is_found_when_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_layers_below_the_kinds_of_model_import_none():
    lower = ("data", "distributed", "checkpoints", "callbacks", "metrics", "losses")
    for module, targets in runtime_imports().items():
        if module.split(".")[1:2] and module.split(".")[1] in lower:
            kinds = [t for t in targets if t.startswith("torchcallbacks.models")]
            assert not kinds, f"{module} imports {kinds}"


def test_the_loop_names_no_kind_of_model():
    source = (PACKAGE / "trainer.py").read_text()
    for kind in ("PlainKind", "OwnLossKind", "LightningKind", "training_step", "lightning"):
        assert kind not in source


def test_import_loads_neither_fsdp_nor_distributed_checkpoint():
    code = (
        "import sys, torchcallbacks\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch.distributed.fsdp', "
        "'torch.distributed.checkpoint'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
