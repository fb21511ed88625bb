"""The package's import graph: layers import downwards only, nothing imports the package root,
and there is no cycle. Read from the source (lazy imports inside functions included)."""

import ast
import sys
from pathlib import Path

import numpy as np

import skmpsae
from skmpsae import MatchingPursuitSAE

PACKAGE = Path(skmpsae.__file__).parent

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS = [
    {"_utils", "_atomic", "_version", "_compat"},
    {"_pursuit", "_metrics", "_datasets"},
    {"_train"},
    {"_models"},
    {"_io", "_activations", "_inspect"},
    {"metrics", "datasets", "plotting", "io", "activations", "inspect"},
    {"_cli", "cli", "__main__"},
]


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """The skmpsae modules ``path`` imports, resolved to absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("skmpsae")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("skmpsae"):
                target = node.module
            else:
                continue
            # "from . import x" names a module when x is one; else the package itself.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
    return found


def _is_module(name):
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(name):
    top = name.split(".")[1] if "." in name else "__init__"
    for rank, members in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{name}: in no layer of tests/test_layout.py; add it to one")


def _graph():
    return {
        _module_name(path): {m for m in _imports(path) if m != _module_name(path)}
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_every_import_names_a_module_that_exists():
    """A lazy import inside a function runs only when it is called: a wrong path (say, left by
    a move) would otherwise wait for a user to find it."""
    missing = sorted(
        f"{module} -> {dep}"
        for module, deps in _graph().items()
        for dep in deps
        if not _is_module(dep)
    )
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_every_imported_name_exists():
    """``from .module import name`` inside a function fails only when the function runs: each
    name must be defined by the module it is imported from (or be a submodule of it)."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            module = importlib.import_module(target)
            missing += [
                f"{name}: from {target} import {alias.name}"
                for alias in node.names
                if not hasattr(module, alias.name) and not _is_module(f"{target}.{alias.name}")
            ]
    assert not missing, "names that their modules do not define:\n" + "\n".join(missing)


def _private_imports(path):
    """``module.name`` of every private module or name of another library that ``path``
    imports (``sklearn.utils._param_validation``, ``sklearn.base._fit_context``...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if any(part.startswith("_") for part in dotted.split(".")):
                    found.append(dotted)
        elif isinstance(node, ast.Import):
            found += [
                a.name for a in node.names if any(p.startswith("_") for p in a.name.split("."))
            ]
    return [name for name in found if not name.startswith("skmpsae")]


def test_private_apis_of_other_libraries_pass_through_compat():
    """scikit-learn's and torch's private names are imported in skmpsae/_compat.py alone, so
    that a release that moves one is fixed in one file."""
    offenders = {
        _module_name(path): names
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_compat.py" and (names := _private_imports(path))
    }
    assert not offenders, f"private imports outside _compat.py: {offenders}"
    assert "sklearn.utils._param_validation" in _private_imports(PACKAGE / "_compat.py")


def test_no_module_imports_the_package_root():
    offenders = sorted(m for m, deps in _graph().items() if m != "skmpsae" and "skmpsae" in deps)
    assert not offenders, f"these modules import the package root: {offenders}"


def test_imports_go_down_the_layers():
    upward = [
        f"{module} -> {dep}"
        for module, deps in _graph().items()
        if module != "skmpsae"
        for dep in deps
        if dep != "skmpsae" and _layer(dep) > _layer(module)
    ]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_see_imports():
    """The walker itself: it finds relative, absolute and lazy imports."""
    deps = _graph()
    assert "skmpsae._models.base" in deps["skmpsae._models.topk"]
    assert "skmpsae._train.trainer" in deps["skmpsae._models.session"]
    assert "skmpsae.activations" in deps["skmpsae._cli.capture"]  # inside a function
    assert _layer("skmpsae._cli.fit") > _layer("skmpsae._models.base")


def _reentries(run):
    """Calls during ``run()`` into a package file already on the call stack below another
    file: a lower layer calling back up into one it was called from."""
    stack, found = [], set()

    def profile(frame, event, arg):
        path = Path(frame.f_code.co_filename)
        inside = PACKAGE in path.parents
        if event == "call":
            name = str(path.relative_to(PACKAGE)) if inside else None
            files = [f for i, f in enumerate(stack) if f and (i == 0 or f != stack[i - 1])]
            files = [f for i, f in enumerate(files) if i == 0 or f != files[i - 1]]
            if name and name in files and files[-1] != name:
                found.add(" -> ".join([*files, name]))
            stack.append(name)
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return sorted(found)


def test_fit_goes_down_and_back_without_reentering_a_file(tmp_path):
    """fit on MP: estimator -> trainer -> model loss -> pursuit kernels and back, with early
    stopping, a callback and checkpoints; no file calls back up into one below it."""
    X = np.random.RandomState(0).rand(300, 12).astype(np.float32)
    seen = []
    sae = MatchingPursuitSAE(
        n_components=16,
        n_nonzero_coefs=3,
        max_iter=3,
        random_state=0,
        device="cpu",
        early_stopping=True,
        callback=seen.append,
    )
    found = _reentries(lambda: sae.fit(X, checkpoint_dir=tmp_path, checkpoint_every=2))
    assert len(seen) == 3  # the walk covered every epoch's reporting
    assert not found, "re-entries:\n" + "\n".join(found)
    found = _reentries(lambda: sae.partial_fit(X))
    assert not found, "re-entries:\n" + "\n".join(found)
