"""Packaging that pyproject.toml cannot say: the wheel ships the top-level ``migrations/`` as
``harness/db/migrations``, where ``harness.db.migrate`` finds it once installed. (pyproject's
``packages`` is either a list or ``find``, never both; ``migrations`` is no top-level package of
its own, so that its name cannot collide with another distribution's.) Everything else is in
pyproject.toml."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["harness*", "workers*", "api*"]),
        "harness.db.migrations",
        "harness.db.migrations.versions",
    ],
    package_dir={"harness.db.migrations": "migrations"},
)
