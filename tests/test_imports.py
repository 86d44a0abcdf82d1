"""Imports flow one way: paths -> backbones -> data -> model -> (editors, eval, train) -> notebooks.

Every module of the package is parsed with `ast`; every import counts, at module level or inside a function,
relative or absolute. A module's layer is its rank below (the first component of its dotted name inside the
package decides; a sub-package's `__init__` has its package's rank):

    rank 0  paths, files, results,          where things live, atomic files, run records, one plot style, the
            plotting, figures               figures drawn from tidy frames (+ the paper's numbers in grey)
    rank 1  backbones                       loading φ (HF models, tokenizers)
    rank 2  data.*                          corpora, QA/editing/long-context data, prompt formats (QAExample)
    rank 3  checks, cache, model,           the MemoryLLM wrapper, its input checks and what loads/saves it
            persistence, checkpoints,       (persistence also converts the authors' format); the package
            memoryllm_repro (__init__)      `__init__` (it re-exports model and backbones)
    rank 4  editors.*                       Table 1's editors; what they share is `editors.common`
    rank 5  eval.*                          metrics and protocols; may use editors (run_table1 drives them)
    rank 6  train.*, export, experiments    training (may call eval for its validation), export of a run, the
                                            command line that runs a figure notebook

Rules: a module may import a module of a lower rank, or of its own rank (siblings: data.corpus -> data.world,
eval.integrity -> eval.retention, model -> cache) as long as no cycle forms; never a higher rank (editors never
import eval: what both need lives in data/ or editors.common), and never its own package's `__init__` (the
`__init__` imports its submodules, so helpers there make a cycle). Any cycle fails. Notebooks and bench/ sit on
top and are checked only for reaching into the model's private state.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "memoryllm_repro"

RANK = {"paths": 0, "files": 0, "results": 0, "plotting": 0, "figures": 0,
        "backbones": 1,
        "data": 2,
        "checks": 3, "cache": 3, "model": 3, "persistence": 3, "checkpoints": 3, "__init__": 3,
        "editors": 4,
        "eval": 5,
        "train": 6, "export": 6, "experiments": 6}

# Known violations to be removed (none today). Nothing may be listed here without a comment saying when it goes.
KNOWN_LEAD_EDGES: set[tuple[str, str]] = set()

PRIVATE_STATE = {"_pool", "_pool_kv", "_draw_keep"}   # MemoryLLM internals: model.py and cache.py only


# ---------------------------------------------------------------------------------------------- the checker
def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file for every module under root/package (a package's `__init__` under the package name)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """The module an import of `name` loads: itself, else its longest known prefix (an attribute of a module)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(root: Path, package: str) -> dict[str, dict[str, int]]:
    """{importer: {imported: line}} for imports inside the package, from every import statement of each file."""
    mods = modules(root, package)
    known, edges = set(mods), {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = edges.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = ".".join(base[:len(base) - node.level + 1])
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                # `from pkg import sub` loads the submodule pkg.sub when there is one, else an attribute of pkg
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
            for t in targets:
                if t == package or t.startswith(package + "."):
                    dst = _resolve(t, known)
                    if dst and dst != name:
                        out.setdefault(dst, node.lineno)
    return edges


def short(name: str, package: str = PACKAGE) -> str:
    return "__init__" if name == package else name[len(package) + 1:]


def rank_of(name: str, rank: dict, package: str = PACKAGE) -> int:
    key = short(name, package).split(".")[0]
    if key not in rank:
        raise KeyError(f"{name}: no layer; give it a rank in RANK (and say why in the docstring)")
    return rank[key]


def violations(edges, rank: dict, known_edges=frozenset(), package: str = PACKAGE) -> list[str]:
    """Imports of a higher layer or of the importer's own package `__init__`, as readable lines."""
    out = []
    for src, dsts in edges.items():
        for dst, line in dsts.items():
            if (short(src, package), short(dst, package)) in known_edges:
                continue
            if rank_of(dst, rank, package) > rank_of(src, rank, package):
                out.append(f"{short(src, package)}:{line} imports {short(dst, package)} "
                           f"(rank {rank_of(dst, rank, package)} > {rank_of(src, rank, package)})")
            elif dst != package and src.startswith(dst + "."):
                out.append(f"{short(src, package)}:{line} imports its own package __init__ {short(dst, package)}")
    return out


def cycles(edges, known_edges=frozenset(), package: str = PACKAGE) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (each reported once, as a closed path)."""
    graph = {s: sorted(d for d in ds if (short(s, package), short(d, package)) not in known_edges)
             for s, ds in edges.items()}
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == "open":
                found.append([short(n, package) for n in stack[stack.index(nxt):] + [nxt]])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    return found


# ---------------------------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def edges():
    return import_edges(REPO, PACKAGE)


def test_every_module_has_a_layer(edges):
    for name in edges:
        rank_of(name, RANK)


def test_imports_flow_one_way(edges):
    assert violations(edges, RANK, KNOWN_LEAD_EDGES) == []


def test_no_import_cycles(edges):
    assert cycles(edges, KNOWN_LEAD_EDGES) == []


def test_known_lead_edges_still_exist(edges):
    """An entry of KNOWN_LEAD_EDGES that no longer exists is stale: delete it, so it cannot hide a new edge."""
    present = {(short(s), short(d)) for s, ds in edges.items() for d in ds}
    assert KNOWN_LEAD_EDGES <= present, f"stale entries: {KNOWN_LEAD_EDGES - present}"


def test_no_private_model_state_outside_the_model():
    """Notebooks, bench/, tests and the library outside model.py/cache.py use the model's public API."""
    files = [*(REPO / PACKAGE).rglob("*.py"), *(REPO / "notebooks").glob("*.py"), *(REPO / "bench").glob("*.py"),
             *(REPO / "tests").glob("*.py")]
    # test_cache.py is the cache's own unit test: it inspects the internals it tests
    allowed = {f"{PACKAGE}/model.py", f"{PACKAGE}/cache.py", "tests/test_imports.py", "tests/test_cache.py"}
    bad = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        if rel in allowed:
            continue
        src = path.read_text()
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src, rel)):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_STATE:
                if "# private:" in lines[node.lineno - 1]:    # a test that bypasses the API on purpose, said so
                    continue
                bad.append(f"{rel}:{node.lineno} .{node.attr}")
    assert bad == []


# ---------------------------------------------------------------------------------------------- self-test
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"pkg/__init__.py": "", "pkg/data/__init__.py": "", "pkg/eval/__init__.py": "",
                      **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path


RANK_PKG = {"data": 2, "model": 3, "eval": 5, "__init__": 3}


def test_checker_passes_a_clean_graph(tmp_path):
    root = _package(tmp_path, {
        "pkg/data/world.py": "X = 1\n",
        "pkg/data/corpus.py": "from .world import X\n",
        "pkg/model.py": "def warm_up():\n    from .data.corpus import X\n",
        "pkg/eval/retention.py": "import pkg.model\nfrom ..data import world\n"})
    edges = import_edges(root, "pkg")
    assert set(edges["pkg.model"]) == {"pkg.data.corpus"}
    assert set(edges["pkg.eval.retention"]) == {"pkg.model", "pkg.data.world"}
    assert violations(edges, RANK_PKG, package="pkg") == [] and cycles(edges, package="pkg") == []


def test_checker_catches_an_injected_back_edge(tmp_path):
    """A data module reaching up into eval inside a function (the old data.editing -> eval.editing) is caught,
    and so is the cycle it closes; listing the edge as known silences exactly that edge."""
    root = _package(tmp_path, {
        "pkg/data/editing.py": "def filter_known():\n    from ..eval.editing import score\n",
        "pkg/eval/editing.py": "from ..data.editing import filter_known\n\ndef score():\n    pass\n"})
    edges = import_edges(root, "pkg")
    bad = violations(edges, RANK_PKG, package="pkg")
    assert bad == ["data.editing:2 imports eval.editing (rank 5 > 2)"]
    assert cycles(edges, package="pkg") == [["data.editing", "eval.editing", "data.editing"]]
    known = {("data.editing", "eval.editing")}
    assert violations(edges, RANK_PKG, known, "pkg") == [] and cycles(edges, known, "pkg") == []


def test_checker_catches_helpers_in_the_package_init_and_sibling_cycles(tmp_path):
    root = _package(tmp_path, {
        "pkg/eval/__init__.py": "from .a import A\n\ndef helper():\n    pass\n",
        "pkg/eval/a.py": "def A():\n    from . import helper\n",
        "pkg/eval/b.py": "from .c import C\nB = 1\n",
        "pkg/eval/c.py": "import pkg.eval.b\nC = 1\n"})
    edges = import_edges(root, "pkg")
    assert violations(edges, RANK_PKG, package="pkg") == ["eval.a:2 imports its own package __init__ eval"]
    assert sorted(map(sorted, cycles(edges, package="pkg"))) == [["eval", "eval", "eval.a"],
                                                                  ["eval.b", "eval.b", "eval.c"]]
