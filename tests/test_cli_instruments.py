"""The instrument commands as a user runs them: serve-sim in one process, probe and check from another."""

import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import PATIENCE

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=PATIENCE):
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_serve_sim_then_probe_and_check_then_stop(tmp_path):
    wiring = tmp_path / "lab.toml"
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve-sim", "--layers", "4,5,3", "--port", "0", "--wiring-out", str(wiring)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        for line in server.stdout:
            lines.append(line)
            if line.startswith("Ctrl+C"):
                break
        address = next(l.split()[-1] for l in lines if "SCPI" in l)
        assert address.startswith("TCPIP0::127.0.0.1::")  # loopback only

        probe = cli("instruments", "probe", address)
        assert probe.returncode == 0, probe.stderr
        assert "virtual-lab" in probe.stdout and "errors: none" in probe.stdout

        check = cli("instruments", "check", str(wiring))
        assert check.returncode == 0, check.stderr
        assert "4 inputs, 3 outputs, 43 parameters" in check.stdout

        cal = cli("instruments", "calibrate", str(wiring))
        assert cal.returncode == 0, cal.stderr
        assert cal.stdout.startswith("calibration: read noise ") and "stiffness k" in cal.stdout
        assert "eps physical (not settable)" in cal.stdout  # a bench: eps is the device's
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=PATIENCE)
        finally:  # never leave the lab listening, even when the test failed
            if server.poll() is None:
                server.kill()
                server.wait()
            server.stdout.close()
    assert server.returncode == 0  # Ctrl+C stops the lab cleanly


def test_probe_of_an_instrument_that_is_not_there_is_one_line():
    result = cli("instruments", "probe", "TCPIP0::127.0.0.1::9::SOCKET", "--timeout", "0.3")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "TCPIP0::127.0.0.1::9::SOCKET" in lines[0]


def test_conformance_passes_the_reference_board_and_names_what_a_wrong_one_breaks():
    from typer.testing import CliRunner

    from cli import app
    from drivers.board import frame, unframe
    from sim_backends.hopfield import HopfieldSubstrate
    from sim_backends.virtual_lab import BoardServer

    with BoardServer(HopfieldSubstrate((4, 5, 3), max_batch=1)) as board:
        good = CliRunner().invoke(app, ["instruments", "conformance", board.address, "--timeout", "1"])
        assert good.exit_code == 0, good.output
        assert "17 of 17 checks passed" in good.output

        execute = board.front.execute

        def sloppy(line, trip):  # answers an empty payload as "OK " and acts on a repeated seq again
            seq, body = unframe(execute(line, trip))
            return frame(seq, "OK " if body == "OK" else body)

        board.front.execute = sloppy
        bad = CliRunner().invoke(app, ["instruments", "conformance", board.address, "--timeout", "1"])
    assert bad.exit_code == 1
    assert "FAIL  a lone empty payload is 'OK'" in bad.output
    assert "of 17 checks passed" in bad.output
