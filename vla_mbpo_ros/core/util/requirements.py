"""Checking, at import, that an installed dependency is in the range a distribution declares.

The range lives in one place, the distribution's own metadata (``dependencies`` in its
pyproject.toml): ``pip install --no-deps`` does not enforce it, so the distribution checks it
itself when imported, and says what to do instead of failing later on a changed API.
"""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def declared_requirement(distribution: str, dependency: str) -> Requirement:
    """The requirement on ``dependency`` in ``distribution``'s metadata (LookupError if none)."""
    for line in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == canonicalize_name(dependency):
            return requirement
    raise LookupError(f"{distribution} declares no requirement on {dependency}")


def version_problem(requirement: Requirement, installed: str | None, distribution: str) -> str:
    """Why ``installed`` (None: not installed) does not satisfy ``requirement``; "" when it does."""
    if installed is None:
        return f"{distribution} needs {requirement}, which is not installed"
    if requirement.specifier.contains(Version(installed), prereleases=True):
        return ""
    return (f"{distribution} supports {requirement.name}{requirement.specifier} but {requirement.name} {installed} "
            f"is installed: install a supported {requirement.name}, or a {distribution} made for {installed}")


def require_declared_version(distribution: str, dependency: str) -> str:
    """The installed version of ``dependency``; ImportError naming both versions when it is outside
    the range ``distribution`` declares."""
    requirement = declared_requirement(distribution, dependency)
    try:
        installed = importlib.metadata.version(dependency)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    problem = version_problem(requirement, installed, distribution)
    if problem:
        raise ImportError(problem)
    return installed
