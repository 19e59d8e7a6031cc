"""The committed GAGAvatar module fixtures, read as experiments/make_gagavatar_fixtures.py
writes them (the script regenerates the seeded weights; NumPy only)."""

import functools
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "gagavatar"


@functools.cache
def _script():
    path = ROOT / "experiments" / "make_gagavatar_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_gagavatar_fixtures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_fixture(name: str):
    """``(meta, arrays, state_dict)`` of ``tests/fixtures/gagavatar/<name>``."""
    return _script().load_fixture(str(FIXTURES / name))
