"""``device="cuda"`` end to end: the same History and results as on the CPU.

Runs the models through their public API under numba's CUDA simulator (or a GPU with ``--gpu``).
"""

import warnings

import numpy as np
import pytest

import neurosim as ns

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():  # pragma: no cover
    pytest.skip("no CUDA device and no simulator", allow_module_level=True)

from test_cuda_kernels import reliable_simulator  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

HISTORY_FIELDS = ("loss", "test_loss", "accuracy", "test_accuracy", "steps", "step_loss",
                  "grad_norms", "delta_norms", "signal_norms", "update_norms", "angles")


@pytest.fixture(autouse=True, scope="module")
def simulator():
    with reliable_simulator():
        yield


def rtol(dtype):
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-10


def assert_same_history(h_cpu, h_gpu, dtype):
    for name in HISTORY_FIELDS:
        a, b = getattr(h_cpu, name), getattr(h_gpu, name)
        assert np.shape(a) == np.shape(b), name
        scale = np.nanmax(np.abs(a)) if np.size(a) else 1.0
        np.testing.assert_allclose(b, a, rtol=rtol(dtype), atol=rtol(dtype) * scale,
                                   err_msg=name)
    for name in ("diverged", "diverged_step", "epochs_run", "rule"):
        assert getattr(h_gpu, name) == getattr(h_cpu, name), name


def toy_task(n_in, n_out, n=10, seed=0, classify=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in))
    Y = np.eye(n_out)[rng.integers(0, n_out, n)] if classify else rng.normal(size=(n, n_out))
    kind = "classification" if classify else "regression"
    return ns.Task("toy", X, Y, X[: n // 2], Y[: n // 2], kind, {})


@pytest.mark.parametrize("dtype,n,batch_size", [("float32", 10, 4), ("float64", 37, 32)])
def test_mlp_training_history_matches_cpu(dtype, n, batch_size):
    # batches of 32 and more run in two shards on the CPU (tests/test_train_shards.py): the
    # device, which computes each batch whole, must agree with that path too
    task = toy_task(4, 3, n=n, classify=True)
    kw = dict(activation="tanh", seed=3, sigma_w=1.4, dtype=dtype)
    net_cpu = ns.MLP([4, 6, 5, 3], **kw)
    net_gpu = ns.MLP([4, 6, 5, 3], device="cuda", **kw)
    train = dict(optimizer="adam", lr=0.05, epochs=2, batch_size=batch_size,
                 loss="cross_entropy", clip_norm=1.0, record_every=2, seed=5)
    h_cpu = ns.train(net_cpu, task, **train)
    h_gpu = ns.train(net_gpu, task, **train)
    assert_same_history(h_cpu, h_gpu, dtype)
    np.testing.assert_allclose(net_gpu.params, net_cpu.params, rtol=rtol(dtype),
                               atol=rtol(dtype))
    if batch_size >= 32:
        from neurosim.train import MLPTrainer

        assert MLPTrainer(net_cpu, task.X_train, task.Y_train, batch_size=batch_size).shards > 1


def test_mlp_divergence_is_recorded_like_the_cpu():
    task = toy_task(3, 2, n=8)
    task = ns.Task("big", task.X_train * 50, task.Y_train * 50, task.X_test, task.Y_test,
                   "regression", {})
    kw = dict(activation="relu", seed=1, sigma_w=3.0)
    net_cpu, net_gpu = ns.MLP([3, 5, 2], **kw), ns.MLP([3, 5, 2], device="cuda", **kw)
    train = dict(optimizer="sgd", lr=30.0, epochs=3, batch_size=4)
    h_cpu, h_gpu = ns.train(net_cpu, task, **train), ns.train(net_gpu, task, **train)
    assert h_cpu.diverged and h_gpu.diverged
    assert h_gpu.diverged_step == h_cpu.diverged_step
    np.testing.assert_array_equal(h_gpu.steps, h_cpu.steps)
    assert np.all(np.isfinite(net_gpu.params))


def test_mlp_training_with_batchnorm_and_prelu_matches_cpu():
    # a tail batch (7 = 3 + 3 + 1: batch norm of a single row), running statistics copied back,
    # learnable slopes, weight decay, value clipping and a stateful optimizer
    task = toy_task(4, 2, n=7)
    kw = dict(activation="prelu", residual=True, batchnorm=True, seed=4, sigma_w=1.2)
    net_cpu, net_gpu = ns.MLP([4, 5, 5, 2], **kw), ns.MLP([4, 5, 5, 2], device="cuda", **kw)
    train = dict(optimizer="momentum", momentum=0.8, lr=0.05, epochs=1, batch_size=3,
                 weight_decay=0.01, clip_value=0.5, seed=2)
    h_cpu, h_gpu = ns.train(net_cpu, task, **train), ns.train(net_gpu, task, **train)
    assert_same_history(h_cpu, h_gpu, "float64")
    np.testing.assert_allclose(net_gpu.params, net_cpu.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net_gpu.bn_state, net_cpu.bn_state, rtol=1e-10, atol=1e-12)
    assert not np.array_equal(net_gpu.bn_state, ns.MLP([4, 5, 5, 2], **kw).bn_state)


def test_mlp_training_with_dropout_is_seeded():
    # the device draws its own masks, so only reproducibility can be compared
    task = toy_task(3, 2, n=4)
    runs = []
    for seed in (7, 7, 8):
        net = ns.MLP([3, 6, 2], dropout=0.5, seed=0, device="cuda")
        h = ns.train(net, task, lr=0.1, epochs=1, batch_size=4, seed=seed)
        assert np.all(np.isfinite(h.step_loss)) and np.all(np.isfinite(net.params))
        runs.append(net.params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_cuda_trainer_checks_its_arguments_before_any_transfer():
    from neurosim._cuda_models import CudaMLPTrainer

    net = ns.MLP([3, 4, 2], device="cuda")
    assert repr(net).endswith("device='cuda')")
    X, Y = np.ones((5, 3)), np.ones((5, 2))
    with pytest.raises(ValueError, match="lr must be > 0"):
        CudaMLPTrainer(net, X, Y, lr=0.0)
    with pytest.raises(ValueError, match="Y has 3 columns"):
        CudaMLPTrainer(net, X, np.ones((5, 3)))
    with pytest.raises(ValueError, match="threads"):
        ns.train(net, (X, Y), threads=0)
    with pytest.raises(TypeError, match="net must be a neurosim MLP"):
        CudaMLPTrainer("net", X, Y)


@pytest.mark.parametrize("options", [dict(residual=True, batchnorm=True, activation="prelu"),
                                     dict(dropout=0.4)])
def test_mlp_forward_and_gradients_match_cpu(options):
    kw = dict(seed=2, **options)
    net_cpu = ns.MLP([4, 4, 4, 2], **kw)
    net_gpu = ns.MLP([4, 4, 4, 2], device="cuda", **kw)
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    np.testing.assert_allclose(net_gpu.forward(X), net_cpu.forward(X), rtol=1e-12, atol=1e-12)
    masks = None
    if options.get("dropout"):
        masks = [rng.random((5, 4)) > 0.4 for _ in range(2)]
    l_cpu, g_cpu = net_cpu.gradients(X, Y, dropout_mask=masks)
    l_gpu, g_gpu = net_gpu.gradients(X, Y, dropout_mask=masks)
    assert abs(l_gpu - l_cpu) < 1e-12
    np.testing.assert_allclose(g_gpu.flat, g_cpu.flat, rtol=1e-10, atol=1e-12)
    for d_cpu, d_gpu in zip(g_cpu.deltas, g_gpu.deltas, strict=True):
        np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-10, atol=1e-12)
    pre_cpu, post_cpu = net_cpu.layer_outputs(X)
    pre_gpu, post_gpu = net_gpu.layer_outputs(X)
    for a, b in zip(pre_cpu + post_cpu, pre_gpu + post_gpu, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,rule", [("float64", "backprop"),
                                        ("float64", "feedback_alignment"),
                                        ("float32", "direct_feedback_alignment")])
def test_rate_network_training_history_matches_cpu(dtype, rule):
    task = toy_task(3, 2, n=6, classify=True)  # batches of 4 and 2
    kw = dict(seed=1, dtype=dtype, sigma_w=1.5, w_bounds=(-0.8, 0.8), bound_mode="soft")
    rn_cpu = ns.RateNetwork([3, 5, 4, 2], **kw)
    rn_gpu = ns.RateNetwork([3, 5, 4, 2], device="cuda", **kw)
    train = dict(rule=rule, lr=0.5, epochs=2, batch_size=4, record_every=2, momentum=0.5)
    h_cpu, h_gpu = ns.train(rn_cpu, task, **train), ns.train(rn_gpu, task, **train)
    assert_same_history(h_cpu, h_gpu, dtype)
    np.testing.assert_allclose(rn_gpu._params, rn_cpu._params, rtol=rtol(dtype),
                               atol=rtol(dtype))


def test_rate_network_cuda_refuses_rules_it_does_not_run():
    rn = ns.RateNetwork([3, 4, 2], device="cuda")
    with pytest.raises(ValueError, match="node_perturbation.*device=.cuda."):
        ns.train(rn, toy_task(3, 2), rule="node_perturbation")


def test_rate_network_dynamics_match_cpu():
    kw = dict(seed=4, sigma_w=1.2, feedback="symmetric", integrator="exponential", dt=0.004)
    rn_cpu, rn_gpu = ns.RateNetwork([3, 4, 2], **kw), ns.RateNetwork([3, 4, 2], device="cuda",
                                                                       **kw)
    X = np.random.default_rng(2).random((2, 3))
    t_cpu, t_gpu = rn_cpu.simulate(X, steps=6, record_every=3), rn_gpu.simulate(X, steps=6,
                                                                                record_every=3)
    for a, b in zip(t_cpu.rates, t_gpu.rates, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s_cpu = rn_cpu.steady_state(X, tol=1e-2, max_steps=60)
        s_gpu = rn_gpu.steady_state(X, tol=1e-2, max_steps=60)
    assert s_gpu.steps == s_cpu.steps and s_gpu.converged == s_cpu.converged
    for a, b in zip(s_cpu.rates, s_gpu.rates, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    ff_cpu, ff_gpu = (ns.RateNetwork([3, 4, 2], seed=4, device=d) for d in ("cpu", "cuda"))
    pre_cpu, post_cpu = ff_cpu.layer_outputs(X)
    pre_gpu, post_gpu = ff_gpu.layer_outputs(X)
    for a, b in zip(pre_cpu + post_cpu, pre_gpu + post_gpu, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)


def test_recurrent_network_simulation_matches_cpu():
    kw = dict(n=6, gain=0.8, activation="tanh", seed=3)
    rec_cpu = ns.RecurrentRateNetwork(**kw)
    rec_gpu = ns.RecurrentRateNetwork(device="cuda", **kw)
    a = rec_cpu.simulate(steps=5, trials=2, seed=1)
    b = rec_gpu.simulate(steps=5, trials=2, seed=1)
    np.testing.assert_allclose(b.states, a.states, rtol=1e-12, atol=1e-13)
