"""Django's system checks, database checks included, pass on the database the tests run on.

`manage.py migrate` (make run, deploy, the fault tests) runs the database checks; the test runner does
not, so a model that only those checks refuse (an expression in db_default, say) would pass every test
and still stop every deployment.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_manage_py_check_with_the_database_checks_passes() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--database", "default", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
