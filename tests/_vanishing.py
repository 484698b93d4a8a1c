"""Shared test case: a float32 MLP whose error signal vanishes below float32's squared range.

80 tanh layers at sigma_w = 0.5 shrink the deltas near the input to about 1e-27, whose squares
(1e-54) underflow float32; norms of them must be summed in float64.
"""

import numpy as np

import neurosim as ns


def vanishing_float32_case():
    """``net, X, Y, grad_ref, delta_ref``: the net, a batch of 48, and float64 references for
    ``||dL/dW_l||_F`` and the batch-mean ``||delta_l||`` computed from ``net.gradients``."""
    net = ns.MLP([16] + [32] * 80 + [4], sigma_w=0.5, seed=1, dtype="float32")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 16)).astype(np.float32)
    Y = rng.standard_normal((48, 4)).astype(np.float32)
    _, grads = net.gradients(X, Y)
    grad_ref = [np.sqrt(np.sum(np.square(w, dtype=np.float64))) for w in grads.weights]
    delta_ref = [np.mean(np.sqrt(np.sum(np.square(d, dtype=np.float64), axis=1)))
                 for d in grads.deltas]
    assert max(delta_ref[:3]) < 1e-24  # the regime the tests are about
    return net, X, Y, grad_ref, delta_ref
