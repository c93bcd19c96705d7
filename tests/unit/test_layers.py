"""The package's layers: imports only point down, and no layer reaches into a model's private members."""

import ast
import re
from pathlib import Path

import clinical_mtl

PACKAGE = Path(clinical_mtl.__file__).parent
LAYERS = ["exceptions", "model", "datasets", "data", "evaluation", "tracking", "scoring", "reporting", "config",
          "pipelines", "console", "cli"]
SAME_LEVEL = {"datasets": 2, "data": 2}  # cohorts and data handling sit side by side


def _level(name: str) -> int:
    return SAME_LEVEL.get(name, LAYERS.index(name) if name in LAYERS else 0)


def _imports(path: Path, root: Path):
    """(importing layer, imported layer, imported module) of every clinical_mtl import in ``path``."""
    parts = path.relative_to(root).with_suffix("").parts
    package = list(parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            target = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        elif node.module and node.module.split(".")[0] == "clinical_mtl":
            target = node.module.split(".")[1:]
        else:
            continue
        if target:
            yield parts[0], target[0], ".".join(target)


def _upward_imports(root: Path) -> list[str]:
    return [f"{path.relative_to(root)} imports {module}"
            for path in root.rglob("*.py") if path.relative_to(root).parts != ("__init__.py",)
            for layer, imported, module in _imports(path, root) if _level(imported) > _level(layer)]


def test_imports_only_point_down():
    assert _upward_imports(PACKAGE) == []


def test_only_the_model_package_touches_a_models_private_members():
    private = re.compile(r"\b(?:model|estimator|loaded\.model|fitted)\._[a-z]\w*")
    outside = [path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] != "model"]
    found = [f"{path.relative_to(PACKAGE)}:{n}" for path in outside
             for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert found == []


def test_the_check_sees_an_upward_import(tmp_path):
    """Negative control: a model module importing the scoring layer is found, a sibling import is not."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "bad.py").write_text("from ..scoring.local import score_files\nfrom .tasks import TaskSpec\n")
    assert _upward_imports(tmp_path) == ["model/bad.py imports scoring.local"]
