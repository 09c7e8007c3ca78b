"""minibertgen.optim against torch.optim.AdamW, LambdaLR, clip_grad_norm_ and transformers' schedule."""
import numpy as np
import pytest

from conftest import require_module

from minibertgen.optim import AdamW, LambdaLR, clip_grad_norm_, get_linear_schedule_with_warmup

torch = require_module("torch")


class Param:
    """The minimal parameter: an array and its gradient."""

    def __init__(self, data):
        self.data, self.grad = data, None


def problem(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((8, 5)).astype(dtype)
    y = rng.standard_normal((8, 3)).astype(dtype)
    w = rng.standard_normal((5, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    return a, y, w, b


def numpy_loss_and_grads(a, y, w, b):
    """L = mean((a w + b - y)^2): dL/dw = a^T r 2/n, dL/db = sum(r) 2/n, r = a w + b - y."""
    r = a @ w + b - y
    n = r.size
    return float((r ** 2).mean()), a.T @ r * (2 / n), r.sum(0) * (2 / n)


def run_both(steps, make_ours, make_torch, clip=None, schedule=None, dtype=np.float32):
    a, y, w0, b0 = problem(dtype=dtype)
    w, b = Param(w0.copy()), Param(b0.copy())
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    ours, theirs = make_ours([w, b]), make_torch([tw, tb])
    ours_sched = schedule(ours, LambdaLR, get_linear_schedule_with_warmup) if schedule else None
    transformers = require_module("transformers")
    theirs_sched = schedule(theirs, torch.optim.lr_scheduler.LambdaLR,
                            transformers.get_linear_schedule_with_warmup) if schedule else None
    losses = []
    for _ in range(steps):
        loss, w.grad, b.grad = numpy_loss_and_grads(a, y, w.data, b.data)
        t_loss = ((torch.tensor(a) @ tw + tb - torch.tensor(y)) ** 2).mean()
        t_loss.backward()
        if clip:
            norm = clip_grad_norm_([w, b], clip)
            t_norm = torch.nn.utils.clip_grad_norm_([tw, tb], clip)
            np.testing.assert_allclose(float(norm), float(t_norm), rtol=1e-5)
        ours.step()
        theirs.step()
        if schedule:
            ours_sched.step()
            theirs_sched.step()
            assert ours_sched.get_last_lr() == pytest.approx(theirs_sched.get_last_lr(), rel=1e-12)
        ours.zero_grad()
        theirs.zero_grad()
        losses.append((loss, float(t_loss.detach())))
    return w, b, tw, tb, losses


def assert_same_run(w, b, tw, tb, losses):
    for step, (ours, theirs) in enumerate(losses):
        assert ours == pytest.approx(theirs, rel=1e-4), f"step {step}"
    np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_adamw_defaults_twenty_steps_equal_torch():
    run = run_both(20, lambda p: AdamW(p), lambda p: torch.optim.AdamW(p))
    assert_same_run(*run)


def test_adamw_hyperparameters_schedule_and_clipping_equal_torch():
    kwargs = dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    run = run_both(20, lambda p: AdamW(p, **kwargs), lambda p: torch.optim.AdamW(p, **kwargs), clip=0.5,
                   schedule=lambda opt, lambda_lr, linear: linear(opt, 5, 20))
    assert_same_run(*run)


def test_adamw_parameter_groups_and_custom_lambda_equal_torch():
    def groups(params):
        return [{"params": [params[0]]}, {"params": [params[1]], "weight_decay": 0.0, "lr": 1e-2}]

    run = run_both(20, lambda p: AdamW(groups(p), lr=3e-3), lambda p: torch.optim.AdamW(groups(p), lr=3e-3),
                   clip=1.0, schedule=lambda opt, lambda_lr, linear: lambda_lr(
                       opt, lambda s: min(1.0, (s + 1) / 5) * (1 - s / 20)))
    assert_same_run(*run)


def test_shared_array_is_updated_once():
    data = np.ones(3, dtype=np.float32)
    first, second = Param(data), Param(data)  # a tied weight seen twice
    first.grad = second.grad = np.full(3, 0.5, dtype=np.float32)
    optimizer = AdamW([first, second], lr=0.1, weight_decay=0.0)
    assert len(optimizer.param_groups[0]["params"]) == 1
    optimizer.step()
    # one Adam step moves each weight by lr (m / sqrt(v) = 1 after bias correction)
    np.testing.assert_allclose(data, 0.9, rtol=1e-6)


def test_clip_grad_norm_inf_and_no_clipping_equal_torch():
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    for max_norm, norm_type in [(100.0, 2.0), (0.3, float("inf")), (0.3, 1.0)]:
        ours = [Param(np.zeros_like(g)) for g in grads]
        theirs = [torch.zeros(g.shape, requires_grad=True) for g in grads]
        for p, t, g in zip(ours, theirs, grads):
            p.grad, t.grad = g.copy(), torch.tensor(g)
        norm = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
        t_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
        np.testing.assert_allclose(float(norm), float(t_norm), rtol=1e-6)
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6)


def test_bad_arguments_are_named():
    p = Param(np.zeros(2))
    with pytest.raises(ValueError, match="amsgrad=True"):
        AdamW([p], amsgrad=True)
    with pytest.raises(ValueError, match="lr=-1"):
        AdamW([p], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        AdamW([p], betas=(0.9, 1.5))
    with pytest.raises(TypeError, match="ndarray"):
        AdamW([np.zeros(2)])
    with pytest.raises(ValueError, match="num_warmup_steps=-2"):
        get_linear_schedule_with_warmup(AdamW([p]), -2, 10)
    with pytest.raises(ValueError, match="non-finite"):
        p.grad = np.array([np.inf, 0.0])
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_read_only_weights_are_refused_with_what_to_do():
    data = np.zeros(2, dtype=np.float32)
    data.flags.writeable = False
    p = Param(data)
    p.grad = np.ones(2, dtype=np.float32)
    with pytest.raises(ValueError, match="read-only"):
        AdamW([p]).step()
