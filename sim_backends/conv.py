"""Convolutional Hopfield network (Ernoult et al. 2019; Laborieux et al. 2021) as a simulated substrate.

Layers ``s_0 = x`` (an image, C x H x W, clamped), conv layers ``s_1 .. s_c``
(channels x height x width), dense layers, and the outputs. Each layer map
``A_l`` (:mod:`sim_backends.conv_ops`: valid correlation with a k x k kernel then
p x p average pooling, or a matrix) couples neighbours; per sample::

    E = sum_l 1/2 ||s_l||^2 - sum_l s_l . (A_l(s_(l-1)) + b_l)

with b_l one bias per channel. E is bilinear, so as in the dense network the
exact minimiser of a layer given its neighbours is a clipped closed form,
``s_l = clip(A_l(s_(l-1)) + b_l + A_(l+1)^T(s_(l+1)))`` (outputs:
``(A_L(s_(L-1)) + b_L + beta y) / (1 + beta)``), and alternating odd and even
layers is exact block coordinate descent: F never rises. Boxes: hidden [0, 1],
outputs [-1, 2]. ``dE/dK_l = -mean_batch d(s_l . A_l(s_(l-1)))/dK``. Being linear in
theta, the floating parameters (Aeqprop) are exact as in
:mod:`sim_backends.floating`. ``cost="cross-entropy"`` reads the top layer through
a softmax readout (:mod:`sim_backends.readout`).

The oracle (:mod:`sim_backends.conv_oracle`) solves ``H lambda = dC/ds`` by conjugate
gradients on the free units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from sim_backends.conv_ops import Conv, Dense, add_bias, bias_gradient, bias_shape
from sim_backends.conv_oracle import ConvOracle
from sim_backends.floating import FloatingParameters, per_tensor, within_bounds
from sim_backends.readout import check_beta, check_cost, cross_entropy, predict, readout_gradients

HIDDEN_BOX = (0.0, 1.0)
#: The entry for layer 0 (the clamped input) in per-layer lists: indices are layer numbers.
NO_LAYER = np.empty(0)
NO_LAYER.flags.writeable = False
OUTPUT_BOX = (-1.0, 2.0)


class ConvHopfieldSubstrate(ConvOracle, FloatingParameters):
    """A batched convolutional Hopfield network.

    Example: ``ConvHopfieldSubstrate((784, 10), input_shape=(1, 28, 28), channels=(16, 32),
    kernel=5, pool=2)``: 1x28x28 -> 16x12x12 -> 32x4x4 -> 10.

    Parameters
    ----------
    layers:
        ``(n_inputs, dense hidden..., n_outputs)``; ``n_inputs`` must be C * H * W of
        ``input_shape``. The conv layers come between the input and the dense ones.
    input_shape:
        (C, H, W) of an input image (a run passes the dataset's).
    channels, kernel, pool:
        Channels of each conv layer; the kernel size k (a square k x k window,
        "valid", stride 1); the average-pooling block p after each conv (1: none).
    cost:
        ``"squared"`` or ``"cross-entropy"`` (softmax readout of the top layer).
    eps, bound, tol, max_sweeps, seed, init_gain, max_batch, joint_rtol, max_joint_updates:
        As :class:`~sim_backends.hopfield.HopfieldSubstrate`.
    """

    def __init__(
        self,
        layers: Sequence[int] = (784, 10),
        input_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (16, 32),
        kernel: int = 5,
        pool: int = 2,
        cost: str = "squared",
        eps: float | Mapping[str, float] = 0.1,
        bound: float = 1.0,
        tol: float = 1e-3,
        max_sweeps: int = 100,
        seed: int = 0,
        init_gain: float = 0.5,
        max_batch: int | None = 1024,
        joint_rtol: float = 1e-6,
        max_joint_updates: int = 500,
    ):
        layers = tuple(int(n) for n in layers)
        if input_shape is None:
            side = int(round(np.sqrt(layers[0])))
            if side * side != layers[0]:
                raise ConfigurationError(
                    f"the conv substrate needs input_shape = [C, H, W] for {layers[0]} inputs (not a square image)"
                )
            input_shape = (1, side, side)
        given = tuple(int(v) for v in input_shape)
        if len(given) != 3 or int(np.prod(given)) != layers[0]:
            raise ConfigurationError(
                f"input_shape={given} has {int(np.prod(given))} values, "
                f"the inputs are {layers[0]}; give [C, H, W] with C * H * W = {layers[0]}"
            )
        image = (given[0], given[1], given[2])
        if not channels or min(channels) < 1 or kernel < 1 or pool < 1:
            raise ConfigurationError(
                f"channels={list(channels)}, kernel={kernel}, pool={pool}: need at least one conv layer, all sizes >= 1"
            )
        for name, value, ok in (
            ("bound", bound, bound > 0),
            ("tol", tol, tol > 0),
            ("max_sweeps", max_sweeps, max_sweeps >= 1),
        ):
            if not ok:
                raise ConfigurationError(f"{name}={value}: must be {'>= 1' if name == 'max_sweeps' else '> 0'}")
        self.readout = check_cost(cost, 1 + len(channels) + len(layers) - 1)
        self.maps: dict[int, Conv | Dense] = {}  # the layer map A_l of each layer l = 1..L
        for c in channels:
            conv = Conv(image, c, kernel, pool)
            if not conv.valid:
                raise ConfigurationError(
                    f"a {kernel}x{kernel} conv then {pool}x{pool} pooling does not fit a {image[1]}x{image[2]} "
                    f"layer (after the conv it must be >= 1 and divisible by {pool}); use fewer channels layers, "
                    "a smaller kernel or pool"
                )
            self.maps[len(self.maps) + 1] = conv
            image = conv.out_shape
        shape: tuple[int, ...] = image
        for n in layers[1:]:
            self.maps[len(self.maps) + 1] = Dense(shape, n)
            shape = (n,)
        self.L = len(self.maps)
        self.T = self.L - 1 if self.readout else self.L
        self.shapes: list[tuple[int, ...]] = [given, *(self.maps[l].out_shape for l in range(1, self.L + 1))]
        self.tol, self.max_sweeps = float(tol), int(max_sweeps)
        self.joint_rtol, self.max_joint_updates = float(joint_rtol), int(max_joint_updates)
        names = [f"{k}{l}" for l in range(1, self.L + 1) for k in ("W", "b")]
        shapes: dict[str, tuple[int, ...]] = {}
        for l in range(1, self.L + 1):
            shapes[f"W{l}"] = self.maps[l].weight_shape
            shapes[f"b{l}"] = bias_shape(self.maps[l].out_shape)
        self.info = SubstrateInfo(
            n_inputs=layers[0],
            n_outputs=layers[-1],
            parameter_shapes=shapes,
            parameter_bounds={n: (-float(bound), float(bound)) for n in names},
            max_batch=max_batch,
            capabilities=frozenset({"eqprop", "aeqprop", "homeostasis", "oracle"}),
            description="conv Hopfield network "
            + " -> ".join("x".join(map(str, s)) for s in self.shapes)
            + (", softmax readout" if self.readout else ""),
        )
        self.eps = per_tensor("eps", eps, names)
        rng = np.random.default_rng(seed)
        self.W: list[np.ndarray] = [NO_LAYER]  # indices are layer numbers: no W_0, b_0
        for l in range(1, self.L + 1):
            fan_in, fan_out = self.maps[l].fan()
            limit = init_gain * np.sqrt(6.0 / (fan_in + fan_out))
            self.W.append(np.clip(rng.uniform(-limit, limit, self.maps[l].weight_shape), -bound, bound))
        self.b = [NO_LAYER] + [np.zeros(shapes[f"b{l}"]) for l in range(1, self.L + 1)]
        self._u = self.parameters()
        self._x = np.zeros((1, *given))
        self._drive: np.ndarray | None = None  # A_1(x) + b_1, kept while x and theta_1 stay
        self._reset_state(1)
        self._beta = 0.0
        self._y: np.ndarray | None = None
        self._stale = True
        self.total_sweeps = 0

    # -- state ----------------------------------------------------------------
    def _reset_state(self, batch: int) -> None:
        self._s = [self._x] + [np.zeros((batch, *self.shapes[l])) for l in range(1, self.L + 1)]

    def _box(self, l: int) -> tuple[float, float]:
        return OUTPUT_BOX if l == self.L and not self.readout else HIDDEN_BOX

    def clamp(self, x: np.ndarray) -> None:
        """Set the inputs, shape (batch, C * H * W) (flattened images); the state restarts from zero."""
        x = check_array("x", x, (None, self.info.n_inputs))
        self.info.check_batch(x.shape[0])
        self._x = x.reshape(x.shape[0], *self.shapes[0])
        self._drive = None
        self._reset_state(x.shape[0])
        if self._y is not None and self._y.shape[0] != x.shape[0]:
            self._beta, self._y = 0.0, None
        self._stale = True

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        """Nudging toward y with strength beta (0 removes it); with the squared cost beta <= -1 is refused."""
        beta = check_beta(beta, self.readout)
        if beta != 0.0 and y is None:
            raise ConfigurationError("nudge with beta != 0 needs a target y")
        if y is not None:
            y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        self._beta, self._y = beta, y
        self._stale = True

    def _pre(self, l: int, s: list[np.ndarray]) -> np.ndarray:
        """The unconstrained minimiser of layer l given its neighbours (before the box)."""
        W, b, L = self.W, self.b, self.L
        if l == 1:
            if self._drive is None:
                self._drive = add_bias(self.maps[1].forward(s[0], W[1]), b[1])
            pre = self._drive.copy()
        else:
            pre = add_bias(self.maps[l].forward(s[l - 1], W[l]), b[l])
        if l < self.T:
            pre += self.maps[l + 1].adjoint(s[l + 1], W[l + 1])
        beta, y = self._beta, self._y
        if y is not None and beta != 0.0 and l == self.T:
            if self.readout:
                err = predict(_flat(s[l]), W[L], b[L]) - y
                pre -= beta * (err @ W[L].T).reshape(pre.shape)
            else:
                pre += beta * y
                pre /= 1.0 + beta
        return pre

    def _relax(self, tol: float, max_sweeps: int) -> RelaxReport:
        """Exact block coordinate descent, odd layers then even; stops when no unit moves by more than tol."""
        s, T = self._s, self.T
        order = list(range(1, T + 1, 2)) + list(range(2, T + 1, 2))
        change, sweeps = np.inf, 0
        while sweeps < max_sweeps:
            sweeps += 1
            change = 0.0
            for l in order:
                lo, hi = self._box(l)
                new = np.clip(self._pre(l, s), lo, hi)
                change = max(change, float(np.max(np.abs(new - s[l]))))
                s[l] = new
            if not np.isfinite(change):
                raise RelaxationError("the state became non-finite during relaxation; check the parameters")
            if change <= tol:
                break
        return self._settled(sweeps, change, tol)

    def outputs(self) -> np.ndarray:
        """The output units, or with the readout the class probabilities."""
        self._settle()
        if self.readout:
            return predict(_flat(self._s[self.T]), self.W[self.L], self.b[self.L])
        return self._s[self.L].copy()

    def state(self) -> list[np.ndarray]:
        """The settled layers ``[x, s_1, ..., s_L]`` (copies, in their shapes)."""
        self._settle()
        return [a.copy() for a in self._s]

    def energy(self) -> float:
        """F = E + beta C at the current state, batch mean."""
        s, e = self._s, 0.0
        for l in range(1, self.T + 1):
            drive = add_bias(self.maps[l].forward(s[l - 1], self.W[l]), self.b[l])
            e += 0.5 * np.sum(s[l] ** 2) - np.sum(s[l] * drive)
        e /= s[0].shape[0]
        if self._y is not None and self._beta != 0.0:
            if self.readout:
                e += self._beta * cross_entropy(self.outputs(), self._y)
            else:
                e += self._beta * 0.5 * np.sum((s[self.L] - self._y) ** 2) / s[0].shape[0]
        return float(e)

    # -- parameters (capability "eqprop") -------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        out = {}
        for l in range(1, self.L + 1):
            out[f"W{l}"], out[f"b{l}"] = self.W[l].copy(), self.b[l].copy()
        return out

    def _assign(self, theta: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, int]:
        clipped = {}
        for name, value in theta.items():
            if name not in self.info.parameter_shapes:
                raise ConfigurationError(f"unknown parameter {name!r}; valid: {sorted(self.info.parameter_shapes)}")
            kept, clipped[name] = within_bounds(
                name, value, self.info.parameter_shapes[name], self.info.parameter_bounds[name], copy
            )
            (self.W if name[0] == "W" else self.b)[int(name[1:])] = kept
            self._drive = None
        self._stale = True
        return clipped

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program theta; values past the bounds are clipped. Returns entries clipped per tensor."""
        return self._assign(theta)

    def energy_gradients(self) -> dict[str, np.ndarray]:
        """dE/dtheta at the current equilibrium, batch mean (readout: beta dC/dtheta)."""
        self._settle()
        s, B, out = self._s, self._s[0].shape[0], {}
        for l in range(1, self.T + 1):
            out[f"W{l}"] = self.maps[l].gradient(s[l - 1], s[l]) * (-1.0 / B)
            out[f"b{l}"] = bias_gradient(s[l]) * (-1.0 / B)
        if self.readout:
            L = self.L
            out[f"W{L}"], out[f"b{L}"] = readout_gradients(_flat(s[self.T]), self.W[L], self.b[L], self._y, self._beta)
        return out

    def close(self) -> None:
        """Nothing to switch off in simulation; removes nudging."""
        self._beta, self._y = 0.0, None


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)
