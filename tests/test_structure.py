"""The package's shape: data flows one way, from video files to answers, through subpackages
that each hold one stage, and through layers of modules inside each. Read from the source with
ast, so a lazy import inside a function counts as much as one at the top."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lrcn"

# The stages from the bottom up. A module may import from its own package's lower layers and
# from any lower package; nothing imports upward. "" is the package's own top level: its
# foundation modules sit at the bottom, its front door (the API, the CLI) at the top.
PACKAGES = ["foundation", "media", "models", "data", "inference", "training", "server", "front"]
LAYERS = {
    "foundation": [{"errors", "files", "console"}, {"config", "devices", "distributed"}],
    "media": [{"media.__init__", "media.sampling", "media.pipe"}, {"media.video", "media.writer", "media.plots"},
              {"media.fastdecode", "media.annotate"}, {"media.clip"}],
    "models": [{"models.__init__", "models.base"}, {"models.lrcn"},
               {"models.convlstm", "models.effnet"}, {"models.registry"},
               {"models.checkpoint"}, {"models.keras_import"}],
    "data": [{"data.__init__", "data.workers", "data.dataset"},
             {"data.split", "data.synth", "data.cache"},
             {"data.loader", "data.augment", "data.features", "data.check"}],
    "inference": [{"inference.__init__", "inference.calibrate", "inference.export",
                   "inference.sessions",
                   "inference.outputs"}, {"inference.graphs"},
                  {"inference.engine", "inference.windows"}, {"inference.predict", "inference.info"},
                  {"inference.timeline", "inference.stream"}],
    "training": [{"training.__init__", "training.history", "training.steps",
                  "training.resume", "training.job"}, {"training.prepare"},
                 {"training.train", "training.evaluate"},
                 {"training.runs"}, {"training.crossval", "training.compare", "training.demo"}],
    "server": [{"server.__init__", "server.jobs", "server.pages", "server.workspace",
                "server.limits", "server.uploads"},
               {"server.trainjobs"}, {"server.studio"}, {"server.app"}],
    "front": [{"argtypes"}, {"api.classify"}, {"api.runs"}, {"api.__init__"},
              {"arguments", "cli", "__main__", "__init__"}],
}
RANK = {}
for p, package in enumerate(PACKAGES):
    for i, layer in enumerate(LAYERS[package]):
        for name in layer:
            RANK[name] = (p, i)
PACKAGE_OF = {name: rank[0] for name, rank in RANK.items()}


def module_name(path):
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts)


def imports():
    """module (dotted, inside lrcn) -> [(imported lrcn module, names taken from it)]."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        here = name.split(".")[:-1]     # the package the module is in
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                module = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("lrcn."):
                module = node.module[len("lrcn."):]
            else:
                continue
            target = module or "__init__"
            if (PACKAGE / (target.replace(".", "/") + ".py")).exists():
                found.append((target, [a.name for a in node.names]))
            else:   # from . import x / from .pkg import module: modules or package names
                for a in node.names:
                    sub = f"{module}.{a.name}" if module else a.name
                    if (PACKAGE / (sub.replace(".", "/") + ".py")).exists():
                        found.append((sub, []))
                    else:
                        init = f"{module}.__init__" if module else "__init__"
                        found.append((init, [a.name]))
        graph[name] = found
    return graph


def test_every_module_has_a_layer():
    assert set(imports()) == set(RANK)


def test_no_module_imports_another_modules_private_names():
    private = [(module, target, name) for module, found in imports().items()
               for target, names in found for name in names
               if name.startswith("_") and not name.endswith("__")]   # __version__ is public
    assert private == []


def test_imports_only_go_down_the_layers():
    upward = [(module, target) for module, found in imports().items()
              for target, _ in found
              if RANK[target] > RANK[module]]
    assert upward == []


def test_no_package_imports_a_later_stage():
    upward = [(module, target) for module, found in imports().items()
              for target, _ in found if PACKAGE_OF[target] > PACKAGE_OF[module]]
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
    """Only the modules listed here may pass 400 lines, each with its reason (which its
    docstring also gives) and the most lines it may have. A module that grows past its cap, or
    a new long module, fails; so does an entry no longer needed (its module gone or back under
    400 lines), so the list cannot go stale."""
    long_modules = {
        "server.app": ("the routes and the state they share (model, pool, jobs, metrics) "
                       "belong together", 560),
        "models.keras_import": ("two architectures checked layer by layer, two file formats",
                                450),
    }
    limit = 400
    lines = {module_name(path): path.read_text().count("\n") for path in PACKAGE.rglob("*.py")}
    too_long = {m: n for m, n in lines.items() if n > long_modules.get(m, ("", limit))[1]}
    assert too_long == {}
    stale = [m for m in long_modules if lines.get(m, 0) <= limit]
    assert stale == [], "no longer long (or gone): remove from the list"
    for module in long_modules:
        path = PACKAGE / (module.replace(".", "/") + ".py")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Why this module is long" in doc, module


def test_the_cli_only_parses_and_prints():
    """arguments.py defines the parser (its types are argtypes.py) and imports nothing that
    works; cli.py holds one small function per command, and the work is done by the library
    functions it imports. The CLI has no excuse for being long."""
    source = (PACKAGE / "cli.py").read_text()
    assert source.count("\n") <= 400
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            statements = sum(isinstance(n, ast.stmt) for n in ast.walk(node))
            assert statements <= 25, f"{node.name}: {statements} statements"
    assert not any(isinstance(node, ast.ClassDef) for node in tree.body)
    assert {target for target, _ in imports()["arguments"]} <= {"__init__", "argtypes", "config"}


def test_ci_runs_the_ends_of_what_is_declared():
    """.ci/run tests the oldest and the newest PyAV, and the oldest and newest Python, that
    pyproject.toml declares: the declared ranges are the tested ones."""
    import re
    from packaging.specifiers import SpecifierSet
    root = PACKAGE.parents[1]
    project = (root / "pyproject.toml").read_text()
    ci = (root / ".ci" / "run").read_text()
    av_range = SpecifierSet(re.search(r'"av(>=[^"]+)"', project).group(1))
    oldest_av = re.search(r"OLDEST_AV=([\d.]+)", ci).group(1)
    newest_av = re.search(r"NEWEST_AV=([\d.]+)", ci).group(1)
    lower = re.search(r">=([\d.]+)", str(av_range)).group(1)
    assert oldest_av.startswith(lower) and oldest_av in av_range
    assert newest_av in av_range
    upper = re.search(r"<([\d.]+)", str(av_range)).group(1)   # the next major is not declared
    assert int(newest_av.split(".")[0]) == int(upper.split(".")[0]) - 1
    pythons = re.findall(r"Python :: (3\.\d+)\"", project)
    requires = re.search(r'requires-python = ">=([\d.]+)"', project).group(1)
    assert re.search(r"OLDEST_PYTHON=([\d.]+)", ci).group(1) == requires == min(
        pythons, key=lambda v: int(v.split(".")[1]))
    assert re.search(r"NEWEST_PYTHON=([\d.]+)", ci).group(1) == max(
        pythons, key=lambda v: int(v.split(".")[1]))
