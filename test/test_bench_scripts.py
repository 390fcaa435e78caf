"""The benches are not run by the tests (they take minutes to hours), but each must at least compile,
so that a broken one is found here and not by the next person who needs its figures."""

from __future__ import annotations

import py_compile
from pathlib import Path

import pytest

BENCHES = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


def test_there_are_benches():
    assert len(BENCHES) >= 5


@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_bench_compiles(script: Path, tmp_path: Path):
    py_compile.compile(str(script), cfile=str(tmp_path / "out.pyc"), doraise=True)
