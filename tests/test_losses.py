"""linear_cross_entropy against F.cross_entropy(F.linear(...)): loss and every gradient."""

import pytest
import torch
import torch.nn.functional as F

from rnnkit.nn.losses import linear_cross_entropy


def _inputs(n=23, h=7, v=11, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.randint(v, (n,), generator=g)
    return x, w, b, y


def _grads(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("block_rows", [None, 1, 5, 23, 100])
def test_loss_and_grads_match_unfused(bias, block_rows):
    x, w, b, y = _inputs(bias=bias)
    y[[0, 7, 8, 22]] = -100  # padding, in several blocks
    ref = F.cross_entropy(F.linear(x, w, b), y, ignore_index=-100, reduction="sum")
    got = linear_cross_entropy(x, w, b, y, block_rows=block_rows)
    torch.testing.assert_close(got, ref)
    for g_got, g_ref in zip(_grads(2.5 * got, (x, w, b)), _grads(2.5 * ref, (x, w, b))):
        torch.testing.assert_close(g_got, g_ref)
    assert linear_cross_entropy(x, w, b, y, block_rows=block_rows).dtype == torch.float64


def test_only_some_inputs_need_grad():
    x, w, b, y = _inputs()
    w.requires_grad_(False)
    got = linear_cross_entropy(x, w, b, y, block_rows=4)
    ref = F.cross_entropy(F.linear(x, w, b), y, reduction="sum")
    gx, gb = torch.autograd.grad(got, (x, b))
    rx, rb = torch.autograd.grad(ref, (x, b))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gb, rb)


def test_no_grad_and_all_ignored():
    x, w, b, y = _inputs()
    with torch.no_grad():
        got = linear_cross_entropy(x, w, b, y, block_rows=4)
        ref = F.cross_entropy(F.linear(x, w, b), y, reduction="sum")
    torch.testing.assert_close(got, ref)
    assert not got.requires_grad
    y[:] = -100
    loss = linear_cross_entropy(x, w, b, y, block_rows=4)
    assert loss.item() == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in _grads(loss, (x, w, b)))


def test_tied_weight_gets_both_gradients():
    x, w, b, y = _inputs(h=7, v=11)
    tokens = torch.randint(11, (23,))
    # the same (V, H) weight as input embedding and output layer
    got = linear_cross_entropy(x + F.embedding(tokens, w), w, b, y, block_rows=6)
    ref = F.cross_entropy(F.linear(x + F.embedding(tokens, w), w, b), y, reduction="sum")
    torch.testing.assert_close(_grads(got, (w,))[0], _grads(ref, (w,))[0])


def test_workspace_reuse_across_shapes_and_dtypes():
    """Calls of other sizes and dtypes in between (the shared workspace grows and is re-typed) stay exact."""
    f32, f64 = torch.float32, torch.float64
    for n, v, dtype in [(23, 11, f64), (40, 31, f32), (5, 3, f64), (23, 11, f32)]:
        x, w, b, y = _inputs(n=n, v=v)
        x, w, b = (t.detach().to(dtype).requires_grad_() for t in (x, w, b))
        got = linear_cross_entropy(x, w, b, y)
        ref = F.cross_entropy(F.linear(x, w, b), y, reduction="sum")
        torch.testing.assert_close(got, ref)
        for g_got, g_ref in zip(_grads(got, (x, w, b)), _grads(ref, (x, w, b))):
            torch.testing.assert_close(g_got, g_ref)


def test_second_backward_raises_instead_of_double_scaling():
    x, w, b, y = _inputs()
    loss = 3.0 * linear_cross_entropy(x, w, b, y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_shape_and_dtype_errors():
    x, w, b, y = _inputs()
    with pytest.raises(ValueError, match="expected"):
        linear_cross_entropy(x, w, b, y[:-1])
    with pytest.raises(ValueError, match="share a dtype"):
        linear_cross_entropy(x.float(), w, b, y)


@pytest.mark.parametrize("tie", [False, True])
def test_language_model_fused_loss_equals_log_softmax_nll(tie, monkeypatch):
    """LanguageModel.loss takes the fused path on a CPU at large vocabularies: same loss and gradients."""
    from rnnkit.models import lm
    from rnnkit.models.lm import FUSED_LOSS_MIN_VOCAB, LanguageModel
    from rnnkit.tasks.lm import LMConfig

    calls = []
    monkeypatch.setattr(lm, "linear_cross_entropy", lambda *a, **k: calls.append(1) or linear_cross_entropy(*a, **k))

    torch.manual_seed(0)
    v = FUSED_LOSS_MIN_VOCAB + 5
    cfg = LMConfig(emb=8, hidden=8, layers=1, dropout=0.0, tie_weights=tie)
    model = LanguageModel(cfg.model_config(vocab_size=v)).double()
    x, y = torch.randint(v, (3, 5)), torch.randint(v, (3, 5))
    y[0, :2] = -100
    got, _ = model.loss(x, y)
    assert calls == [1]
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    log_probs, _ = model(x)
    ref = F.nll_loss(log_probs.reshape(-1, v), y.reshape(-1), ignore_index=-100, reduction="sum")
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(got, ref)
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r)
