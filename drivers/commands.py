"""``aeqprop instruments list|probe|check|conformance|calibrate``: find, probe and check instruments.

The group's commands; ``cli.py`` adds the group (name and help) and this module is imported only when
one of them runs. Each imports the drivers it uses when it runs.
"""

# No `from __future__ import annotations`: typer reads each command's signature (see cli.py).
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import typer

from aeqprop.cli_errors import fail, one_line_errors

if TYPE_CHECKING:
    import numpy as np

instruments_app = typer.Typer()


@instruments_app.command("list")
@one_line_errors
def instruments_list(
    visa_backend: str = typer.Option("@py", help="VISA backend: @py (pyvisa-py), @ivi, or FILE.yaml@sim."),
) -> None:
    """VISA resources and serial ports this machine sees."""
    from drivers.cli_support import list_instruments

    found = list_instruments(visa_backend)
    for kind in ("visa", "serial"):
        typer.echo(f"{kind}:")
        for line in found[kind] or ["(none)"]:
            typer.echo(f"  {line}")


@instruments_app.command("probe")
@one_line_errors
def instruments_probe(
    address: str = typer.Argument(..., help="VISA resource (TCPIP::127.0.0.1::5025::SOCKET) or serial port."),
    profile: Optional[str] = typer.Option(
        None, help="keithley2450, keysight-b2900, multichannel or board [default: from the identity]."
    ),
    channel: Optional[int] = typer.Option(None, help="Channel whose programmed source level is read back."),
    visa_backend: str = typer.Option("@py", help="VISA backend."),
    timeout: float = typer.Option(2.0, help="Read timeout in s."),
) -> None:
    """Identity, error queue and one safe read of an instrument."""
    from drivers.cli_support import probe

    info = probe(address, profile=profile, channel=channel, backend=visa_backend, timeout=timeout)
    channel_read, level = info["safe_read"]
    typer.echo(f"{info['address']}: {info['identity']}")
    typer.echo(f"  profile {info['profile']}; errors: {', '.join(info['errors']) or 'none'}")
    typer.echo(f"  channel {channel_read} source level {level:g}; {info['round_trips']} round trips")


@instruments_app.command("check")
@one_line_errors
def instruments_check(
    wiring: str = typer.Argument(..., help="Wiring map (TOML)."),
    config: Optional[str] = typer.Option(
        None, help="Run config whose data and nudging are checked against the limits."
    ),
) -> None:
    """Validate a wiring map, and the values a run would send, without opening any instrument."""
    from aeqprop.config import load_config
    from aeqprop.data import load_dataset
    from drivers.cli_support import check_wiring, protocol_betas

    x: np.ndarray | None = None
    betas: Sequence[float] = ()
    needs: tuple[str, ...] = ()
    if config is not None:
        cfg = load_config(config)
        ds = cfg.dataset
        x = load_dataset(
            ds.name, test_fraction=ds.test_fraction, seed=cfg.data_seed, target_column=ds.target_column
        ).x_train
        from aeqprop import registry
        from aeqprop.parts import build_with

        protocol = build_with(
            registry.load("protocols", cfg.protocol.name), cfg.protocol.options, {"seed": cfg.seed}, "protocol.options"
        )  # refuses options no protocol takes, as train does
        betas = protocol_betas(cfg.protocol.name, cfg.protocol.options)
        needs = tuple(getattr(protocol, "requires", ()))
    for line in check_wiring(wiring, betas=betas, x=x, capabilities=needs):
        typer.echo(line)


@instruments_app.command("conformance")
@one_line_errors
def instruments_conformance(
    address: str = typer.Argument(..., help="Serial port or pyserial URL of a board (docs/board-protocol.md)."),
    source: int = typer.Option(1001, help="A DAC channel the checks may set."),
    adc: int = typer.Option(2001, help="An ADC channel."),
    hold: int = typer.Option(9000, help="The hold line (pulsed once)."),
    baudrate: int = typer.Option(115200, help="Serial speed."),
    timeout: float = typer.Option(2.0, help="Read timeout in s."),
) -> None:
    """Check a board against the protocol document. It drives the board: disconnect the device first."""
    from drivers.conformance import Channels, conformance

    checks = conformance(address, Channels(source, adc, hold), baudrate=baudrate, timeout=timeout)
    for c in checks:
        typer.echo(f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}")
    failed = [c.name for c in checks if not c.passed]
    typer.echo(f"{len(checks) - len(failed)} of {len(checks)} checks passed")
    if failed:
        raise typer.Exit(1)


@instruments_app.command("calibrate")
@one_line_errors
def instruments_calibrate(
    wiring: str = typer.Argument(..., help="Wiring map (TOML) of a substrate with knobs (capability aeqprop)."),
    config: Optional[str] = typer.Option(None, help="Run config whose dataset and nudging the calibration uses."),
    beta: float = typer.Option(1.0, help="Nudging strength b of centered Aeqprop (without --config)."),
) -> None:
    """Measure read noise, knob gain and stiffness for feedback Aeqprop; sets knobs and releases, then holds theta back."""
    import numpy as np

    from aeqprop.config import load_config
    from aeqprop.data import load_dataset
    from drivers.cli_support import build_substrate
    from protocols.aeqprop import Aeqprop

    options: dict[str, Any] = {"beta": beta}
    if config is not None:
        cfg = load_config(config)
        options = {k: v for k, v in cfg.protocol.options.items() if k in ("beta", "variant")}
        ds = cfg.dataset
        data = load_dataset(ds.name, test_fraction=ds.test_fraction, seed=cfg.data_seed, target_column=ds.target_column)
        x, y = data.x_train[:1], data.y_train[:1]
    protocol = Aeqprop(homeostasis="feedback", **options)
    with build_substrate(wiring) as hw:
        if config is None:
            x, y = np.full((1, hw.info.n_inputs), 0.5), np.eye(hw.info.n_outputs)[:1]
        record = protocol.calibrate(hw, x, y)
        if record is None:  # feedback Aeqprop calibrates unless told not to
            fail("the protocol did not calibrate (it was told not to)")
        typer.echo(f"calibration: {record['summary']}; {record['reads']} reads, {hw.round_trips} round trips")
