"""The package's shape: data flows one way through layers of modules. Read from the source with
ast, so a lazy import inside a function counts as much as one at the top."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lrcn"

# Lower layers never import higher ones; the CLI, at the top, is imported by nothing.
LAYERS = [
    {"__init__", "errors", "files", "config", "sampling", "history", "devices", "distributed",
     "calibrate"},
    {"video", "workers", "writer", "plots"},                          # frames in, files out
    {"fastdecode", "annotate"},
    {"clip", "synth"},                                                # video file -> clip
    {"dataset"},
    {"cache"},                                                        # clips -> frame cache
    {"model"},
    {"convlstm", "effnet"},                                           # the model family
    {"zoo", "augment", "features"},
    {"checkpoint", "loader", "export", "resume", "steps"},
    {"engine"},                                                       # model -> probabilities
    {"predict", "windows", "train", "evaluate"},
    {"timeline", "stream", "runs", "check", "keras_import"},          # probabilities -> reports
    {"crossval", "demo", "jobs", "compare"},
    {"serve"},                                                        # the web server
    {"cli", "__main__"},
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def imports():
    """module -> [(imported lrcn module, names taken from it)]."""
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.append((node.module, [a.name for a in node.names]))
                else:   # from . import x: a module, or a name of the package itself
                    found += [(a.name, []) if (PACKAGE / f"{a.name}.py").exists()
                              else ("__init__", [a.name]) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lrcn."):
                found.append((node.module.split(".")[1], [a.name for a in node.names]))
        graph[path.stem] = found
    return graph


def test_every_module_has_a_layer():
    assert set(imports()) == set(LAYER)


def test_no_module_imports_another_modules_private_names():
    private = [(module, target, name) for module, found in imports().items()
               for target, names in found for name in names
               if name.startswith("_") and not name.endswith("__")]   # __version__ is public
    assert private == []


def test_imports_only_go_down_the_layers():
    upward = [(module, target) for module, found in imports().items()
              for target, _ in found if LAYER[target] > LAYER[module]]
    assert upward == []


def test_no_import_circles():
    graph = {module: {target for target, _ in found} for module, found in imports().items()}
    done, path = set(), []

    def visit(module):
        assert module not in path, " -> ".join(path[path.index(module):] + [module])
        if module in done:
            return
        path.append(module)
        for target in graph[module]:
            visit(target)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_long_modules_say_why():
    for path in PACKAGE.glob("*.py"):
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert lines <= 400 or "Why this module is long" in doc, f"{path.name}: {lines} lines"


def test_the_cli_only_parses_and_prints():
    """cli.py defines the parser, its argument types and one small function per command; the
    work is done by library functions it imports."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_"):
            statements = sum(isinstance(n, ast.stmt) for n in ast.walk(node))
            assert statements <= 30, f"{node.name}: {statements} statements"
    assert not any(isinstance(node, ast.ClassDef) for node in tree.body)


def test_ci_checks_the_oldest_pyav_that_is_declared():
    import re
    root = PACKAGE.parents[1]
    declared = re.search(r'"av>=([\d.]+),', (root / "pyproject.toml").read_text()).group(1)
    tested = re.search(r"OLDEST_AV=([\d.]+)", (root / ".ci" / "run").read_text()).group(1)
    assert tested.startswith(declared)
