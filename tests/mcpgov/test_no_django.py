"""The enforcer is pure Python: importing any mcpgov module must not pull in Django."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import mcpgov

SCRIPT = """
import importlib, pkgutil, sys
import mcpgov
names = sorted(m.name for m in pkgutil.walk_packages(mcpgov.__path__, "mcpgov."))
names = [n for n in names if n != "mcpgov.__main__"]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
print(len(names), ",".join(leaked))
"""


def test_no_mcpgov_module_imports_django():
    expected = len(
        [m for m in pkgutil.walk_packages(mcpgov.__path__, "mcpgov.") if m.name != "mcpgov.__main__"]
    )
    assert expected >= 3
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(mcpgov.__file__).parent.parent)}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    count, leaked = r.stdout.strip().split(" ") if " " in r.stdout.strip() else (r.stdout.strip(), "")
    assert int(count) == expected
    assert leaked == "", f"django imported by mcpgov: {leaked}"
