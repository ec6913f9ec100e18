"""Metadata lives in pyproject.toml. This file only ships the SQL inside the package.

migrations/ and policies/ stay at the top of the repository (where people look for them);
a wheel carries copies under gateway/sql/, where gateway.store.migrate finds them when the
package is installed without the source tree (`pip install .`, the Docker image).
Editable installs read the top-level directories directly, so no stale copy can exist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SQL_DIRS = ("migrations", "policies")


class build_py_with_sql(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SQL_DIRS:
            target = Path(self.build_lib) / "gateway" / "sql" / name
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for source in sorted((ROOT / name).glob("*.sql")):
                shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": build_py_with_sql})
