"""The tables of ``aeqprop gradcheck``: a protocol's update against the oracle gradient and the oracle
against finite differences; with ``--gdu``, EqProp's per-step updates against BPTT's per-step gradients.

The command (in ``cli.py``) imports this module when it runs.
"""

from typing import Any

import typer

from aeqprop.cli_errors import fail
from aeqprop.cli_options import parse_release


def _build(kind: str, name: str, options: dict[str, Any]) -> object:
    """The factory registered under ``name``, given those of ``options`` it takes (for gradcheck,
    whose flags serve every protocol)."""
    from aeqprop import registry
    from aeqprop.parts import build_with

    return build_with(registry.load(kind, name), {}, {k: v for k, v in options.items() if v is not None}, kind)


def oracle_table(
    protocol: str,
    variant: str,
    beta: float,
    eps: float,
    lr: float,
    homeostasis: str,
    release: str,
    backend: str,
    sizes: tuple[int, ...],
    batch_size: int,
    entries: int,
    seed: int,
) -> None:
    """`gradcheck`: the protocol's update against -lr grad L, and the oracle against finite differences, per tensor."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from aeqprop import oracle
    from aeqprop.substrate import OracleSubstrate

    substrate = _build("backends", backend, dict(layers=sizes, eps=eps, seed=seed, tol=1e-13, max_sweeps=100_000))
    if not isinstance(substrate, OracleSubstrate):
        fail(f"backend {backend} has no oracle gradient (capability 'oracle'); gradcheck compares against it")
    prot = _build(
        "protocols",
        protocol,
        dict(
            beta=beta,
            lr=lr,
            variant=variant,
            homeostasis=homeostasis,
            release=parse_release(release),
            seed=seed,
            homeostasis_rtol=1e-9,
        ),
    )
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (batch_size, sizes[0]))
    y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch_size)]
    update = oracle.update_fidelity(substrate, prot, x, y)
    fd, masks = oracle.finite_difference(substrate, x, y, entries=entries, seed=seed)
    grad = substrate.true_gradient(x, y)
    table = Table(title=f"{protocol} ({variant}, beta={beta:g}) against the oracle; oracle against finite differences")
    for col in ("tensor", "update cosine", "update rel. error", "oracle vs FD rel. error"):
        table.add_column(col, justify="right")
    for name in list(grad) + ["all"]:
        if name == "all":
            a = np.concatenate([grad[n][masks[n]] for n in grad])
            b = np.concatenate([fd[n][masks[n]] for n in grad])
        else:
            a, b = grad[name][masks[name]], fd[name][masks[name]]
        table.add_row(
            name,
            f"{update[name].cosine:.6f}",
            f"{update[name].rel_error:.2e}",
            f"{oracle.fidelity(a, b).rel_error:.2e}",
        )
    Console().print(table)
    substrate.close()


def gdu_table(
    backend: str, sizes: tuple[int, ...], variant: str, beta: float, k: int, batch_size: int, seed: int, png: str
) -> None:
    """`gradcheck --gdu`: the tables and the figure (matplotlib is imported only to draw it)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from aeqprop.substrate import Substrate
    from sim_backends.gdu import gdu_check, plot_gdu, table_rows

    substrate = _build("backends", backend, {"layers": sizes, "seed": seed})
    if not isinstance(substrate, Substrate):
        fail(f"backend {backend} did not build a substrate (it has no clamp, nudge, relax, outputs, ...)")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (batch_size, sizes[0]))
    y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch_size)]
    report = gdu_check(substrate, x, y, beta=beta, K=k, variant=variant)
    for what, title in (
        ("rel_error", "relative error ||D_EP + g_BPTT|| / ||g_BPTT||"),
        ("sign_agreement", "sign agreement of D_EP with -g_BPTT"),
    ):
        table = Table(title=f"{title}; {variant}, beta={beta:g}, T={report.T} free steps (· : not reached at step t)")
        rows = table_rows(report, what)
        table.add_column("t", justify="right")
        for name, _ in rows:
            table.add_column(name, justify="right")
        for t in range(k):
            table.add_row(str(t), *(cells[t] for _, cells in rows))
        Console().print(table)
    typer.echo(
        f"sign agreement of the weight update over the {k} steps with -g_BPTT over them: "
        f"{report.update_sign_agreement():.2%}"
    )
    typer.echo(f"worst relative error {report.worst():.2e}; figure {plot_gdu(report, png, seed=seed)}")
    substrate.close()
