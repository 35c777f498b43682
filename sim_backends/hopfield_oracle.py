"""The oracle of the layered Hopfield network: dL/dtheta by implicit differentiation.

At the free equilibrium, solve ``H lambda = dC/ds`` on the units not held at a
box bound (H = d2E/ds2 there; bound units have lambda = 0), then
``grad L = -(d2E/dtheta ds) lambda``. H has identity diagonal blocks and
couplings -W_l between layers l-1 and l, so the solve is a block-tridiagonal
(block Thomas) elimination from layer 1 upward; D_1 = I, so the dense solves
are only of the sizes of layers 2..L.
"""

from __future__ import annotations

import numpy as np


def implicit_gradient(W: list, s: list, boxes: list, dC_ds: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients ``W1, b1 .. WL, bL`` of the batch-mean loss, all in float64.

    ``W[l]`` (l = 1..L) are the weights, ``s`` the settled layers ``[x, s_1..s_L]``,
    ``boxes[l]`` the (lo, hi) box of layer l, and ``dC_ds`` the cost's gradient with
    respect to the top layer s_L, per sample (shape (batch, n_L)).
    """
    L = len(s) - 1
    s = [np.asarray(a, dtype=np.float64) for a in s]
    W = [None] + [np.asarray(w, dtype=np.float64) for w in W[1:L + 1]]
    masks = [None] + [((s[l] > boxes[l][0]) & (s[l] < boxes[l][1])).astype(np.float64) for l in range(1, L + 1)]
    rhs = [None] + [np.zeros_like(s[l]) for l in range(1, L + 1)]
    rhs[L] = np.asarray(dC_ds, dtype=np.float64) * masks[L]
    D: list = [None, None]  # D_1 = I on the free units (identity on the bound ones too)
    red = [None, rhs[1]]
    for l in range(2, L + 1):
        A = masks[l - 1][:, :, None] * W[l][None] * masks[l][:, None, :]  # (B, n_(l-1), n_l)
        DinvA = A if D[l - 1] is None else np.linalg.solve(D[l - 1], A)
        Dinv_r = red[l - 1] if D[l - 1] is None else np.linalg.solve(D[l - 1], red[l - 1][:, :, None])[:, :, 0]
        D.append(np.eye(W[l].shape[1])[None] - np.einsum("bij,bik->bjk", A, DinvA))
        red.append(rhs[l] + np.einsum("bij,bi->bj", A, Dinv_r))
    lams = [np.zeros_like(s[0])] + [None] * L
    for l in range(L, 0, -1):
        r = red[l] if l == L else red[l] + np.einsum(
            "bij,bj->bi", masks[l][:, :, None] * W[l + 1][None] * masks[l + 1][:, None, :], lams[l + 1])
        lams[l] = r if D[l] is None else np.linalg.solve(D[l], r[:, :, None])[:, :, 0]
    B = s[0].shape[0]
    grads = {}
    for l in range(1, L + 1):
        gw = s[l - 1].T @ lams[l]
        if l > 1:
            gw = gw + lams[l - 1].T @ s[l]
        grads[f"W{l}"] = gw / B
        grads[f"b{l}"] = lams[l].mean(axis=0)
    return grads
