"""The package's layout: long functions stay rare, so that each step of a job has a name."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "quake"
MAX_LINES = 120
MAX_LONG_FUNCTIONS = 2


def long_functions(root: Path, max_lines: int) -> list[str]:
    """``path:name (N lines)`` for every function under ``root`` longer than ``max_lines``,
    counted from its ``def`` to its last line."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > max_lines:
                    found.append(f"{path.relative_to(root.parent)}:{node.name} ({lines} lines)")
    return found


def test_long_functions_are_found_with_their_line_counts(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(130))
    (package / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(package, MAX_LINES) == ["pkg/m.py:long (131 lines)"]


def test_at_most_two_functions_over_120_lines():
    found = long_functions(PACKAGE, MAX_LINES)
    assert len(found) <= MAX_LONG_FUNCTIONS, (
        f"{len(found)} functions in quake/ are over {MAX_LINES} lines; expected at most "
        f"{MAX_LONG_FUNCTIONS}: split them into named steps: " + "; ".join(found)
    )
