"""No pickle anywhere in the library, the scripts or the rules (state dicts and results are tensors
and arrays only)."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from conftest import REPO

_FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _pickle_uses(path: Path) -> list[str]:
    """Pickle-capable calls in a Python file (strings and comments do not count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in _FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _FORBIDDEN_MODULES:
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            kw = {k.arg: k.value for k in node.keywords}
            if name in ("read_pickle", "to_pickle"):
                found.append(name)
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append("torch.load without weights_only=True")
            ap = kw.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True:
                found.append(f"{name}(allow_pickle=True)")
            if name == "save" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                found.append("torch.save (pickle)")
    return [f"{path.relative_to(REPO)}:{x}" for x in found]


def test_no_pickle_in_library_scripts_or_rules():
    """No code path of the workflow can read or write a pickle (checkpoints: tests/unit/test_models.py)."""
    py = sorted((REPO / "rsvc").glob("*.py")) + sorted((REPO / "workflow_scripts").glob("*.py"))
    assert len(py) > 20
    found = [x for p in py for x in _pickle_uses(p)]
    for p in [REPO / "Snakefile", REPO / "workflow" / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = p.read_text()
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        code = " ".join(t.string for t in tokens if t.type == tokenize.NAME)
        found += [
            f"{p.name}: {m}" for m in _FORBIDDEN_MODULES | {"read_pickle", "to_pickle"} if f" {m} " in f" {code} "
        ]
    assert not found, found
