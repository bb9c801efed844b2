"""The package's structure (docs/architecture.md): layers without circles, one home per op kind,
short functions. Imports are read with `ast` (module level and inside functions alike)."""
import ast
from pathlib import Path

import pytest

from intsim import ops
from intsim.graph import Graph  # noqa: F401  (the registry must import cleanly from a graph user)

PACKAGE = Path(__file__).resolve().parent.parent / "intsim"

# top to bottom; a module may import its own layer and the layers below it, never one above
LAYERS = [
    ("commands", ["intsim.cli", "intsim.__main__"]),
    ("experiments", ["intsim.experiment"]),
    ("consumers", ["intsim.golden", "intsim.analysis", "intsim.conformance", "intsim.coverage"]),
    ("api", ["intsim.pipeline"]),
    ("import, compile, execute, data", ["intsim.onnx_import", "intsim.compile", "intsim.execute",
                                        "intsim.data", "intsim.model_files"]),
    ("graph and program", ["intsim.graph", "intsim.head_rotation", "intsim.float_ref", "intsim.program"]),
    ("ops", ["intsim.ops"]),
    ("quantizers", ["intsim.quantize"]),
    ("kernels", ["intsim.kernels"]),
    ("foundations", ["intsim.arith", "intsim.floatfn", "intsim.errors", "intsim.metrics",
                     "intsim.progress", "intsim.images", "intsim.schedule", "intsim.parallel", "intsim.version",
                     "intsim.reproducible", "intsim.elementary", "intsim.numba_cache"]),
]
MAX_FUNCTION_LINES = 80


def modules():
    """{module name: path} of the package's code (shipped model scripts are data, not code)."""
    out = {}
    for p in PACKAGE.rglob("*.py"):
        if "__pycache__" in p.parts or "shipped" in p.parts:
            continue
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def layer_of(module):
    if module == "intsim":
        return len(LAYERS) - 1                 # the package face: version and spec version only
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS and docs/architecture.md")


def imports(name, path, known):
    """(line, imported intsim module, inside a function?) for every import in the file."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                yield node.lineno, t, id(node) in in_function
                break


def import_graph():
    known = modules()
    return {name: list(imports(name, path, known)) for name, path in known.items()}, known


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in {t for _, t, _ in graph[v]}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while comp[-1:] != [v]:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return comps


def test_no_import_cycles():
    graph, _ = import_graph()
    assert find_cycles(graph) == []


def test_imports_never_run_up_the_layers():
    graph, known = import_graph()
    bad = [f"{known[m].relative_to(PACKAGE.parent)}:{line} {m} ({LAYERS[layer_of(m)][0]}) imports {t} "
           f"({LAYERS[layer_of(t)][0]})"
           for m, edges in graph.items() for line, t, _ in edges if layer_of(t) < layer_of(m)]
    assert bad == []


def test_no_package_import_inside_a_function():
    """Function-level imports would hide a cycle; only optional third-party packages may be
    imported late."""
    graph, known = import_graph()
    late = [f"{known[m].relative_to(PACKAGE.parent)}:{line} imports {t}"
            for m, edges in graph.items() for line, t, inside in edges if inside]
    assert late == []


def test_functions_are_short():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_the_checks_can_fail():
    """The cycle finder and the layer rule see a planted circle and an upward import."""
    graph = {"a": [(1, "b", False)], "b": [(1, "c", True)], "c": [(1, "a", False)], "d": []}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert layer_of("intsim.kernels.gelu") > layer_of("intsim.ops.gelu") > layer_of("intsim.cli.commands")
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("intsim.newmodule")


DISPATCHERS = ("intsim.graph", "intsim.float_ref", "intsim.compile", "intsim.execute", "intsim.program",
               "intsim.golden", "intsim.analysis", "intsim.conformance", "intsim.coverage", "intsim.pipeline",
               "intsim.experiment", "intsim.cli")


def test_every_op_kind_has_one_home():
    """Each op kind is one OpDef in one file of intsim/ops; the graph checks, the float interpreter,
    the compiler, the executor, golden and the cost model dispatch through the registry and never
    compare an op's kind or semantic name with a literal."""
    assert len({d.kind for d in ops.OPS}) == len(ops.OPS)
    assert len({type(d).__module__ for d in ops.OPS}) == len(ops.OPS), "one file per op kind"
    names = {d.kind for d in ops.OPS} | set(ops.SEMANTIC)
    switches = []
    for name, path in modules().items():
        if not name.startswith(DISPATCHERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) \
                    and node.left.attr in ("kind", "op"):
                consts = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in names]
                if consts:
                    switches.append(f"{name}:{node.lineno} compares .{node.left.attr} with {consts[0].value!r}")
    assert switches == []


def test_the_worked_example_in_the_docs_is_the_real_op_file():
    """docs/architecture.md's "Adding an op" quotes intsim/ops/relu.py whole; the copy is the file."""
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "architecture.md").read_text()
    quoted = doc.split("1. **The op file** `intsim/ops/relu.py`", 1)[1].split("```python\n", 1)[1].split("   ```", 1)[0]
    source = (root / "intsim" / "ops" / "relu.py").read_text()
    assert "\n".join(line[3:] for line in quoted.splitlines()) + "\n" == source
    assert f"({len(source.splitlines())} lines;" in doc
