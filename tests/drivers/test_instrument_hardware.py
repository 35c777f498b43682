"""Opt-in tests on a real instrument: ``python -m pytest --instrument ADDRESS -m hardware``.

They only identify the instrument, drain its error queue and read a source
level: nothing that changes an output.
"""

import pytest

from drivers.cli_support import probe

pytestmark = pytest.mark.hardware


def test_probe_identifies_and_reads_without_changing_an_output(instrument_address):
    report = probe(instrument_address)
    assert report["identity"]
    assert isinstance(report["errors"], list)
    assert report["safe_read"] is not None
