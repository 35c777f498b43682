"""Cross-check of the netlist substrate against ngspice's DC operating point, on random circuits.

:func:`random_circuit` draws a connected resistor-diode circuit (``nodes`` nodes, resistors of
100 ohm to 100 kohm, 1-4 sources of -5 to 5 V, some of them floating, diodes of one kind:
"resistor" (none), "shockley", "ideal" or "mixed"), written once for this package and once for
ngspice. ngspice has no ideal diode; it gets a sharp Shockley diode, ``IS = IS_SHARP``,
``N = N_SHARP``, whose forward drop at the largest current the circuit can carry is ``delta``.

Tolerance on every node voltage (derived, not fitted; ``Rmax`` the
largest resistance, ``Imax = 2 Vmax / Rmin`` a bound on any branch current, ``Vmax`` the sum of
the sources' magnitudes, which bounds every potential):

- both solvers: Newton stopped by ngspice at ``reltol |V| + vntol`` (TIGHT, or SHARP with ideal
  diodes), plus ``FLOOR`` of round-off;
- ngspice's GMIN conductance across every diode: at most ``n_diodes GMIN Vmax Rmax`` (the current
  it diverts, through the largest resistance);
- ideal vs sharp diode: a conducting diode drops up to ``delta = N_SHARP VT ln(1 + Imax / IS_SHARP)``
  more, a blocking one leaks ``IS_SHARP``; a series source of delta moves no node by more than delta
  (the maximum principle of resistive networks), so ``n_ideal (delta + IS_SHARP Rmax)``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim_backends.netlist_parse import VT_TNOM

KINDS = ("resistor", "shockley", "ideal", "mixed")
IS_SHARP, N_SHARP = 1e-14, 1e-4  # ngspice's stand-in for an ideal diode
GMIN, FLOOR = 1e-18, 1e-12
# ngspice's Newton stopping tolerances (relative, and absolute in V): tight, and looser where sharp
# diodes are present (at 1e-12 ngspice's Newton fails to settle on some of them)
TIGHT, SHARP = (1e-12, 1e-13), (1e-9, 1e-10)


@dataclass
class SpiceCircuit:
    """One random circuit: our netlist, ngspice's deck, its free node names and the tolerance in V."""

    ours: str
    spice: str
    nodes: list[str]
    tolerance: float
    reltol: float
    vntol: float


def random_circuit(seed: int, kind: str, n_nodes: int | None = None) -> SpiceCircuit:
    """A random connected circuit of ``kind`` (see KINDS) with 5-40 nodes."""
    rng = np.random.default_rng(seed)
    n = int(n_nodes or rng.integers(5, 41))
    names = [f"n{i}" for i in range(n)]
    n_src = int(rng.integers(1, 5))
    parent = {v: v for v in ["0"] + names}  # union-find: nodes tied by sources, then by ideal diodes

    def find(v: str) -> str:
        while parent[v] != v:
            v = parent[v]
        return v

    ours, deck, held, vals = [], [], {"0"}, []
    for k in range(n_src):
        v = float(rng.uniform(-5, 5))
        # most sources to ground; some float between two nodes (a supernode)
        minus = "0" if k == 0 or rng.random() < 0.7 else names[n_src + int(rng.integers(0, n - n_src))]
        line = f"V{k} {names[k]} {minus} {v!r}"
        ours.append(line)
        deck.append(line)
        parent[find(names[k])] = find(minus)
        vals.append(abs(v))
        held |= {names[k], minus}
    vmax = sum(vals)  # every potential lies within +-vmax
    # a random spanning tree to ground, then extra resistors
    order = rng.permutation(n)
    edges = [("0", names[order[0]])] + [(names[order[i]], names[order[rng.integers(0, i)]]) for i in range(1, n)]
    edges += [tuple(rng.choice(["0"] + names, 2, replace=False)) for _ in range(int(rng.integers(n // 2, 2 * n)))]
    rvals = np.exp(rng.uniform(np.log(100.0), np.log(1e5), len(edges)))
    for i, ((a, b), r) in enumerate(zip(edges, rvals)):
        ours.append(f"R{i} {a} {b} {float(r)!r}" + (" train" if i == 0 else ""))
        deck.append(f"R{i} {a} {b} {float(r)!r}")
    rmin, rmax = float(rvals.min()), float(rvals.max())
    imax = 2 * vmax / rmin
    n_d = 0 if kind == "resistor" else int(rng.integers(1, max(2, n // 3) + 1))
    n_ideal, models = 0, set()
    for k in range(n_d):
        ideal = kind == "ideal" or (kind == "mixed" and (k == 0 or rng.random() < 0.5))
        if kind == "mixed" and k == 1:
            ideal = False
        for _ in range(50):
            a, b = rng.choice(["0"] + names, 2, replace=False)
            if find(a) == find(b) and (ideal or (a in held and b in held)):
                continue  # no loop of ideal diodes and sources (it could carry infinite current)
            break
        else:
            continue
        if ideal:
            parent[find(a)] = find(b)
            n_ideal += 1
            ours.append(f"D{k} {a} {b} ideal")
            deck.append(f"D{k} {a} {b} dsharp")
            models.add(f".model dsharp D (IS={IS_SHARP!r} N={N_SHARP!r})")
        else:
            i_s, nn = float(np.exp(rng.uniform(np.log(1e-16), np.log(1e-9)))), float(rng.uniform(1.0, 2.0))
            ours.append(f"D{k} {a} {b} m{k}")
            ours.append(f".model m{k} D (IS={i_s!r} N={nn!r})")
            deck.append(f"D{k} {a} {b} m{k}")
            deck.append(f".model m{k} D (IS={i_s!r} N={nn!r})")
    free = [v for v in names if find(v) != find("0")]
    ours.append(f".output {free[0] if free else names[-1]}")
    deck += sorted(models)
    return _circuit(f"random {kind} circuit, seed {seed}", ours, deck, names, vmax, imax, rmax, n_d, n_ideal)


def _circuit(
    title: str,
    ours: list[str],
    deck: list[str],
    names: list[str],
    vmax: float,
    imax: float,
    rmax: float,
    n_d: int,
    n_ideal: int,
) -> SpiceCircuit:
    """The two decks and the derived tolerance (module docstring) of a random circuit."""
    delta = N_SHARP * VT_TNOM * math.log1p(imax / IS_SHARP)
    reltol, vntol = SHARP if n_ideal else TIGHT
    tol = FLOOR + reltol * vmax + vntol + (n_d + n_ideal) * GMIN * vmax * rmax + n_ideal * (delta + IS_SHARP * rmax)
    return SpiceCircuit(
        f"* {title}\n" + "\n".join(ours) + "\n", f"{title}\n" + "\n".join(deck) + "\n", names, tol, reltol, vntol
    )


def random_layered_circuit(seed: int, kind: str) -> SpiceCircuit:
    """A random two-layer circuit of ``kind`` whose coloured sweeps settle without the exact solver.

    1-4 sources of -5 to 5 V; 3-30 hidden nodes, each tied to every source (100 ohm to 10 kohm) and to
    ground by a diode of ``kind`` in a random direction ("resistor": none); 1-5 output nodes tied to
    every hidden node (10 to 100 kohm) and to ground (1 to 10 kohm). The layers are weakly coupled, as
    in a layered network, so the sweeps converge fast."""
    rng = np.random.default_rng(seed)
    n_src, n_h, n_o = int(rng.integers(1, 5)), int(rng.integers(3, 31)), int(rng.integers(1, 6))
    src = [f"s{k}" for k in range(n_src)]
    hid, outs = [f"h{j}" for j in range(n_h)], [f"o{j}" for j in range(n_o)]
    ours, deck, models = [], [], set()
    vals = rng.uniform(-5, 5, n_src)
    for k, v in enumerate(vals):
        line = f"V{k} {src[k]} 0 {float(v)!r}"
        ours.append(line)
        deck.append(line)
    edges = [(a, h, 10 ** rng.uniform(2, 4)) for a in src for h in hid]
    edges += [(h, o, 10 ** rng.uniform(4, 5)) for h in hid for o in outs]
    edges += [(o, "0", 10 ** rng.uniform(3, 4)) for o in outs]
    for i, (a, b, r) in enumerate(edges):
        ours.append(f"R{i} {a} {b} {float(r)!r}" + (" train" if i == 0 else ""))
        deck.append(f"R{i} {a} {b} {float(r)!r}")
    n_ideal = n_d = 0
    for j, h in enumerate(hid if kind != "resistor" else []):
        a, b = (h, "0") if rng.random() < 0.5 else ("0", h)
        ideal = kind == "ideal" or (kind == "mixed" and rng.random() < 0.5)
        n_d += 1
        if ideal:
            n_ideal += 1
            ours.append(f"D{j} {a} {b} ideal")
            deck.append(f"D{j} {a} {b} dsharp")
            models.add(f".model dsharp D (IS={IS_SHARP!r} N={N_SHARP!r})")
        else:
            i_s, nn = float(np.exp(rng.uniform(np.log(1e-16), np.log(1e-9)))), float(rng.uniform(1.0, 2.0))
            ours += [f"D{j} {a} {b} m{j}", f".model m{j} D (IS={i_s!r} N={nn!r})"]
            deck += [f"D{j} {a} {b} m{j}", f".model m{j} D (IS={i_s!r} N={nn!r})"]
    ours.append(".output " + " ".join(outs))
    deck += sorted(models)
    rs = [r for *_, r in edges]
    vmax = float(np.sum(np.abs(vals)))
    title = f"random layered {kind} circuit, seed {seed}"
    return _circuit(title, ours, deck, hid + outs, vmax, 2 * vmax / min(rs), max(rs), n_d, n_ideal)


def ngspice_available() -> str | None:
    """The ngspice executable, or None."""
    return shutil.which("ngspice")


def ngspice_op(
    deck: str, reltol: float, vntol: float, timeout: float = 30.0, nodeset: dict[str, float] | None = None
) -> dict[str, float]:
    """Node voltages (V) of ngspice's DC operating point of ``deck`` (ngspice -b, in a temporary folder).

    ``nodeset``: starting voltages for ngspice's Newton iteration (``.nodeset``); they do not change
    the operating point it converges to, which is unique in a resistor-diode circuit."""
    if nodeset:
        deck += ".nodeset " + " ".join(f"v({k})={v!r}" for k, v in nodeset.items()) + "\n"
    control = (
        f".options gmin={GMIN!r} reltol={reltol!r} vntol={vntol!r} abstol=1e-18 itl1=1000\n"
        ".control\nop\nset filetype=ascii\nwrite op.raw all\n.endc\n.end\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "deck.cir").write_text(deck + control)
        run = subprocess.run(
            ["ngspice", "-b", "deck.cir"], cwd=tmp, capture_output=True, text=True, timeout=timeout, check=False
        )
        raw = Path(tmp, "op.raw")
        if not raw.is_file():  # ngspice -b exits 1 after a successful .control block as well
            raise RuntimeError(f"ngspice failed ({run.returncode}): {(run.stderr or run.stdout).strip()[-300:]}")
        lines = raw.read_text().splitlines()
    names, values, section = [], [], None
    for line in lines:
        if line.startswith("Variables:"):
            section = "vars"
        elif line.startswith("Values:"):
            section = "values"
        elif section == "vars" and line.strip():
            names.append(line.split()[1])
        elif section == "values" and line.strip():
            values.append(float(line.split()[-1]))
    return {nm[2:-1]: v for nm, v in zip(names, values) if nm.startswith("v(")}


def compare(circuit: SpiceCircuit) -> tuple[float, float]:
    """(largest node-voltage difference to ngspice in V, its tolerance in V)."""
    from sim_backends.netlist import NetlistSubstrate

    sub = NetlistSubstrate(text=circuit.ours, g_max=1.0, g_min=0.0)
    sub.clamp(np.zeros((1, 0)))
    ours = {k: float(v[0]) for k, v in sub.node_voltages().items()}
    try:
        ref = ngspice_op(circuit.spice, circuit.reltol, circuit.vntol)
    except RuntimeError:  # a sharp diode can stall ngspice's own start; start it from our answer instead
        ref = ngspice_op(circuit.spice, circuit.reltol, circuit.vntol, nodeset={n: ours[n] for n in circuit.nodes})
    diff = max(abs(ours[n] - ref[n]) for n in circuit.nodes if n in ref)
    return diff, circuit.tolerance
