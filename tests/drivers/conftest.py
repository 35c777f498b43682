"""Makes the scripted transport in fakes.py importable by the driver tests, and checks after each test
that every scripted exchange was used (PyMeasure's expected-protocol rule)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _scripts_used_up():
    import fakes

    fakes.MADE.clear()
    yield
    for transport in list(fakes.MADE):
        transport.assert_finished()
