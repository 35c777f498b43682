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

Max pooling (``pooling="max"``, per conv layer; Ernoult et al. 2019, Laborieux et al. 2021):
``A_l(a)`` is the max over each p x p block of the correlation, so the coupling
``s_l . A_l(s_(l-1))`` (s_l >= 0) is convex in s_(l-1) and E is no longer bilinear. A
layer's update at the current *route* (the argmax of each block of the layer above)
takes ``A_(l+1)^T`` of that linear map: it is the exact minimiser of a quadratic upper
bound of F that touches F at the current state (the concave term replaced by its
tangent), so F still never rises (majorize-minimize), and its fixed points are F's
stationary points. Each route is recomputed from the layer below when the layer above is
updated, so each update uses the route at the current state; layer 1's route depends
only on x and theta_1 and comes with the drive. ``dE/dK`` routes through the argmax,
and near an equilibrium without ties the maps are the linear maps of its routes: the
oracle differentiates those.

Speed, as the dense network's (:mod:`sim_backends.hopfield`): the sweeps are the
heavy-ball accelerated block coordinate descent of :mod:`sim_backends.hopfield_relax`
(the same fixed points; the free phase's measured contraction is reused by the nudged
phases, and the second phase of centered nudging starts from the free equilibrium);
each conv map is one strided correlation with its pooled kernel, built once per
relaxation (:mod:`sim_backends.conv_ops`); the input's patches and drive
``A_1(x) + b_1`` are computed once per clamp (and change of theta_1), shared by every
phase and by ``dE/dK_1``; the sweeps write into buffers kept per batch size;
``dtype="float32"`` halves the memory traffic and the products' time.

The oracle (:mod:`sim_backends.conv_oracle`) solves ``H lambda = dC/ds`` by conjugate
gradients on the free units, always in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import SubstrateInfo, check_array
from sim_backends.conv_ops import POOLINGS, Conv, Dense, MaxConv, add_bias, bias_gradient, bias_shape, conv_map
from sim_backends.conv_oracle import ConvOracle
from sim_backends.conv_relax import ConvRelaxation
from sim_backends.floating import FloatingParameters, per_tensor, within_bounds
from sim_backends.hopfield_relax import Acceleration
from sim_backends.readout import check_beta, check_cost, cross_entropy, predict, readout_gradients

DTYPES = ("float64", "float32")

HIDDEN_BOX = (0.0, 1.0)
#: The entry for layer 0 (the clamped input) in per-layer lists: indices are layer numbers.
NO_LAYER = np.empty(0)
NO_LAYER.flags.writeable = False
OUTPUT_BOX = (-1.0, 2.0)


class ConvHopfieldSubstrate(ConvOracle, ConvRelaxation, FloatingParameters):
    """A batched convolutional Hopfield network, float64 (or float32) compute.

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
        "valid", stride 1); the pooling block p after each conv (1: none).
    pooling:
        ``"average"`` (the energy stays bilinear) or ``"max"`` (Ernoult et al. 2019, Laborieux et
        al. 2021: the coupling goes through the max of each block, see below), or one of them
        per conv layer (``["max", "average"]``: max pooling costs nothing per sweep on layer 1,
        whose input is clamped, and about 2.8x the products of average pooling on the others).
    cost:
        ``"squared"`` or ``"cross-entropy"`` (softmax readout of the top layer).
    dtype:
        ``"float64"`` or ``"float32"``: the precision of the state, parameters and every
        product (the oracle computes in float64 either way).
    acceleration:
        Heavy-ball acceleration of the sweeps (:class:`~sim_backends.hopfield_relax.Acceleration`,
        or a dict of its fields, True / False): the same equilibria in fewer sweeps.
    eps, bound, tol, max_sweeps, seed, init_gain, max_batch, joint_rtol, max_joint_updates:
        As :class:`~sim_backends.hopfield.HopfieldSubstrate`. The sweep cap is 1000 here (100
        there): a trained conv network's relaxation takes more than 100 sweeps in a few per cent
        of the steps, and a relaxation cut off at the cap gives a step that is not the gradient's
        (README, benchmarks/conv_settling.py).
    eval_batch:
        The width held-out data is relaxed in (``evaluate``; None: max_batch). A relaxation runs
        until its slowest sample settles, so a wide batch sweeps every sample as long as its
        slowest: 16 evaluates a trained network's validation images 5.4 times faster than 1024,
        to the same accuracy (README, benchmarks/conv_eval_width.py).
    """

    def __init__(
        self,
        layers: Sequence[int] = (784, 10),
        input_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (16, 32),
        kernel: int = 5,
        pool: int = 2,
        pooling: str | Sequence[str] = "average",
        cost: str = "squared",
        eps: float | Mapping[str, float] = 0.1,
        bound: float = 1.0,
        tol: float = 1e-3,
        max_sweeps: int = 1000,
        seed: int = 0,
        init_gain: float = 0.5,
        max_batch: int | None = 1024,
        eval_batch: int | None = 16,
        joint_rtol: float = 1e-6,
        max_joint_updates: int = 500,
        dtype: str = "float64",
        acceleration: Acceleration | Mapping[str, Any] | bool | None = None,
    ) -> None:
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
        poolings = [pooling] * len(channels) if isinstance(pooling, str) else list(pooling)
        if len(poolings) != len(channels) or any(p not in POOLINGS for p in poolings):
            raise ConfigurationError(
                f"pooling={pooling!r}: valid: {', '.join(POOLINGS)}, or a list of them, one per conv layer "
                f"({len(channels)} here)"
            )
        if str(dtype) not in DTYPES:
            raise ConfigurationError(f"dtype={dtype!r}: valid: {', '.join(DTYPES)}")
        self.dtype = np.dtype(str(dtype))
        self.acceleration = Acceleration.of(acceleration)
        self.readout = check_cost(cost, 1 + len(channels) + len(layers) - 1)
        self.maps: dict[int, Conv | Dense] = {}  # the layer map A_l of each layer l = 1..L
        for c, kind in zip(channels, poolings):
            conv = conv_map(image, c, kernel, pool, kind)
            if not conv.valid:
                raise ConfigurationError(
                    f"a {kernel}x{kernel} conv then {pool}x{pool} pooling does not fit a {image[1]}x{image[2]} "
                    f"layer (after the conv it must be >= 1 and divisible by {pool}); use fewer channels layers, "
                    "a smaller kernel or pool"
                )
            self.maps[len(self.maps) + 1] = conv
            image = (conv.out_shape[0], conv.out_shape[1], conv.out_shape[2])
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
            eval_batch=eval_batch,
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
            w = np.clip(rng.uniform(-limit, limit, self.maps[l].weight_shape), -bound, bound)
            self.W.append(w.astype(self.dtype))
        self.b = [NO_LAYER] + [np.zeros(shapes[f"b{l}"], dtype=self.dtype) for l in range(1, self.L + 1)]
        self._u = self.parameters()
        self._x = np.zeros((1, *given), dtype=self.dtype)
        self._cols: np.ndarray | None = None  # the patches of x under layer 1 (a conv map), per clamp
        self._routes: dict[int, np.ndarray] = {}  # the argmax of each max-pooling layer's blocks
        self._drive: np.ndarray | None = None  # A_1(x) + b_1, kept while x and theta_1 stay
        self._buffers: dict[tuple[str, int], np.ndarray] = {}  # work arrays of the sweeps, per batch size
        self._rho: float | None = None  # the plain contraction measured by the free phase on the clamped x
        self._reset_state(1)
        self._beta = 0.0
        self._y: np.ndarray | None = None
        self._stale = True
        self.total_sweeps = 0
        # Each parity class is an exact function of the other: only the smaller one is watched.
        odd, even = list(range(1, self.T + 1, 2)), list(range(2, self.T + 1, 2))
        self._classes = (odd, even)
        units = {l: int(np.prod(self.shapes[l])) for l in range(1, self.T + 1)}
        self._watched = 1 if 0 < sum(units[l] for l in even) <= sum(units[l] for l in odd) else 0

    # -- state ----------------------------------------------------------------
    def _reset_state(self, batch: int) -> None:
        self._s = [self._x] + [np.zeros((batch, *self.shapes[l]), dtype=self.dtype) for l in range(1, self.L + 1)]
        self._routes = {
            l: np.zeros((batch, *self.shapes[l]), dtype=np.intp) for l, m in self.maps.items() if isinstance(m, MaxConv)
        }
        self._free: list[np.ndarray] | None = None  # the free equilibrium on these inputs, once settled
        self._state_beta: float | None = None  # the nudging the state last settled under

    def _box(self, l: int) -> tuple[float, float]:
        return OUTPUT_BOX if l == self.L and not self.readout else HIDDEN_BOX

    def clamp(self, x: np.ndarray) -> None:
        """Set the inputs, shape (batch, C * H * W) (flattened images); the state restarts from zero."""
        x = check_array("x", x, (None, self.info.n_inputs))
        self.info.check_batch(x.shape[0])
        self._x = x.reshape(x.shape[0], *self.shapes[0]).astype(self.dtype, copy=False)
        self._drive = self._cols = None
        self._rho = None
        if self._buffers and next(iter(self._buffers.values())).shape[0] != x.shape[0]:
            self._buffers = {}
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
            y = check_array("y", y, (self._x.shape[0], self.info.n_outputs)).astype(self.dtype, copy=False)
        self._beta, self._y = beta, y
        self._stale = True

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
        """F = E + beta C at the current state, batch mean (computed in float64)."""
        s = [a.astype(np.float64) for a in self._s]
        e = 0.0
        for l in range(1, self.T + 1):
            W, b = self.W[l].astype(np.float64), self.b[l].astype(np.float64)
            drive = add_bias(self.maps[l].forward(s[l - 1], W), b)
            e += 0.5 * np.sum(s[l] ** 2) - np.sum(s[l] * drive)
        e /= s[0].shape[0]
        if self._y is not None and self._beta != 0.0:
            y = self._y.astype(np.float64)
            if self.readout:
                p = predict(_flat(s[self.T]), self.W[self.L].astype(np.float64), self.b[self.L].astype(np.float64))
                e += self._beta * cross_entropy(p, y)
            else:
                e += self._beta * 0.5 * np.sum((s[self.L] - y) ** 2) / s[0].shape[0]
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
                name, value, self.info.parameter_shapes[name], self.info.parameter_bounds[name], copy, self.dtype
            )
            (self.W if name[0] == "W" else self.b)[int(name[1:])] = kept
            if name in ("W1", "b1"):
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
            m = self.maps[l]
            if isinstance(m, Conv):
                cols = self._input_patches() if l == 1 else m.patches(s[l - 1])
                route = None
                if isinstance(m, MaxConv):  # routed at the current state
                    if l == 1:
                        self._input_drive()  # layer 1's route comes with the drive (fresh for theta_1)
                    route = self._routes[1] if l == 1 else m.route(s[l - 1], self.W[l])
                g = m.gradient_from(cols, s[l], route)
            else:
                g = m.gradient(s[l - 1], s[l])
            g *= -1.0 / B
            out[f"W{l}"] = g
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
