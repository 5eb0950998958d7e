"""The dependency rules of DESIGN.md, read from the package's imports (function-level ones included).

A generic loop never imports a plugin; a plugin never imports a loop; the core never imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nstzoo"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in its body (resolved to absolute dotted names)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules_under(*relative: str) -> list[Path]:
    paths: list[Path] = []
    for rel in relative:
        target = PACKAGE / rel
        paths.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return paths


def offending(paths: list[Path], forbidden_prefixes: tuple[str, ...]) -> list[str]:
    return sorted(f"{module_name(p)} -> {target}" for p in paths for target in imports_of(p)
                  if any(target == f or target.startswith(f + ".") for f in forbidden_prefixes))


GENERIC = ("learner", "stylizer_training.py", "recipes.py", "runs.py", "config.py", "specs.py")


def test_generic_loops_import_no_stylizer_plugin():
    assert offending(modules_under(*GENERIC), ("nstzoo.stylizers",)) == []


def test_plugins_import_no_loop_and_no_cli():
    loops = ("nstzoo.learner", "nstzoo.stylizer_training", "nstzoo.runs", "nstzoo.cli", "nstzoo.eval")
    assert offending(modules_under("stylizers", "encoders"), loops) == []


def test_core_imports_no_cli():
    # __main__ is the console entry point (python -m nstzoo), the one module that must reach the CLI.
    core = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"]
    assert offending(core, ("nstzoo.cli",)) == []


def test_the_checker_sees_function_level_imports(tmp_path, monkeypatch):
    """Guards the guard: an import inside a function counts (the old loop hid its plugin imports there)."""
    fake = tmp_path / "nstzoo" / "learner"
    fake.mkdir(parents=True)
    (fake / "sneaky.py").write_text("def f():\n    from ..stylizers import sanet\n    return sanet\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "nstzoo")
    assert offending([fake / "sneaky.py"], ("nstzoo.stylizers",)) == ["nstzoo.learner.sneaky -> nstzoo.stylizers",
                                                                      "nstzoo.learner.sneaky -> nstzoo.stylizers.sanet"]
