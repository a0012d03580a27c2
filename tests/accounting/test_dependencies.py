import ast
from pathlib import Path

import accounting


def test_accounting_never_imports_llmlog():
    """STYLE.md: llmlog may call accounting; accounting receives plain values, so the ledger stays
    testable alone."""
    root = Path(accounting.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.relative_to(root)}: {name}" for name in names if name.split(".")[0] == "llmlog"
            ]

    assert offenders == []
