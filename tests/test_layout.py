"""The layout's rules: no import cycle in penalty_tf, the library apart from the paper's
machinery, and no reference to a document outside the repository."""

import ast
import subprocess

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "penalty_tf"
#: The project's planning documents, which are not in the repository (spelled apart here).
OUTSIDE_DOCUMENTS = ("REFERENCE" + ".md", "REFERENCE" + " §", "DESIGN" + ".md")
EXPERIMENT_FOLDERS = ("importance_learning", "few_shot", "poisoning", "synthetic", "benchmarks", "examples")


def module_name(path):
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules():
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_names(path):
    """Every module named by an import statement anywhere in the file (also inside functions)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def import_graph():
    """module -> the penalty_tf modules it imports (package __init__ files only when named)."""
    known = modules()
    return {name: {m for m in imported_names(path) if m in known and m != name and m != "penalty_tf"}
            for name, path in known.items()}


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_penalty_tf_has_no_import_cycle():
    graph = import_graph()
    assert "penalty_tf.solvers.base" in graph and graph["penalty_tf.training"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_library_imports_nothing_from_the_paper_or_the_experiments():
    offenders = []
    for name, path in modules().items():
        if name == "penalty_tf.paper" or name.startswith("penalty_tf.paper."):
            continue
        for imported in imported_names(path):
            top = imported.split(".")[0]
            if imported.startswith("penalty_tf.paper") or top in EXPERIMENT_FOLDERS:
                offenders.append(f"{name} imports {imported}")
    assert not offenders, offenders


def test_no_file_points_to_a_document_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    offenders = []
    for rel in tracked:
        if not rel.endswith((".py", ".md")) or rel == "docs/original.md":
            continue
        text = (REPO_ROOT / rel).read_text(errors="replace")
        for word in OUTSIDE_DOCUMENTS:
            if word in text:
                offenders.append(f"{rel}: {word}")
    assert not offenders, offenders
    assert "§3.2" in (REPO_ROOT / "docs" / "original.md").read_text()
