"""Attention modules: masking, padding invariance, query batching, gradients, torch reference, formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnkit.nn.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    ScaledDotAttention,
    length_mask,
)

B, T_K, T_Q, D = 3, 5, 4, 6  # dot-style modules need D_q == D_k
D_Q, D_K, D_V, H = 7, 6, 3, 5
LENGTHS = torch.tensor([5, 2, 1])

KINDS = ["additive", "dot", "general", "scaled"]


def make(kind: str) -> tuple[torch.nn.Module, int, int]:
    """Return (module in float64, query size, key size)."""
    torch.manual_seed(0)
    if kind == "additive":
        return AdditiveAttention(D_Q, D_K, H).double(), D_Q, D_K
    if kind == "general":
        return GeneralAttention(D_Q, D_K).double(), D_Q, D_K
    if kind == "dot":
        return DotAttention(), D, D
    return ScaledDotAttention(), D, D


def inputs(d_q: int, d_k: int, t_q: int | None = T_Q, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    shape_q = (B, d_q) if t_q is None else (B, t_q, d_q)
    query = torch.randn(*shape_q, generator=g, dtype=torch.float64)
    keys = torch.randn(B, T_K, d_k, generator=g, dtype=torch.float64)
    values = torch.randn(B, T_K, D_V, generator=g, dtype=torch.float64)
    return query, keys, values, length_mask(LENGTHS, T_K)


def test_length_mask():
    mask = length_mask(torch.tensor([3, 0, 1]), 4)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True, False], [False] * 4, [True, False, False, False]]
    assert length_mask(torch.tensor([2, 1])).shape == (2, 2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t_q", [None, T_Q])
def test_shapes_sum_to_one_and_zero_on_padding(kind, t_q):
    attn, d_q, d_k = make(kind)
    query, keys, values, mask = inputs(d_q, d_k, t_q)
    context, weights = attn(query, keys, values, mask=mask)
    lead = (B,) if t_q is None else (B, t_q)
    assert context.shape == (*lead, D_V)
    assert weights.shape == (*lead, T_K)
    w = weights if t_q is not None else weights[:, None, :]
    torch.testing.assert_close(w.sum(-1), torch.ones(B, w.shape[1], dtype=torch.float64))
    assert (w[~mask[:, None, :].expand_as(w)] == 0).all()  # exactly zero, not merely small
    assert (w[mask[:, None, :].expand_as(w)] > 0).all()
    # values default to keys
    ctx_k, _ = attn(query, keys, mask=mask)
    assert ctx_k.shape == (*lead, d_k)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_contents_do_not_matter(kind):
    attn, d_q, d_k = make(kind)
    query, keys, values, mask = inputs(d_q, d_k)
    context, weights = attn(query, keys, values, mask=mask)
    pad = ~mask[:, :, None]  # (B, T_k, 1)
    keys2 = torch.where(pad, 1e3 * torch.randn_like(keys), keys)
    values2 = torch.where(pad, 1e6 * torch.randn_like(values), values)
    context2, weights2 = attn(query, keys2, values2, mask=mask)
    torch.testing.assert_close(weights2, weights, rtol=0, atol=0)
    torch.testing.assert_close(context2, context)


@pytest.mark.parametrize("kind", KINDS)
def test_query_batch_equals_one_at_a_time(kind):
    attn, d_q, d_k = make(kind)
    query, keys, values, mask = inputs(d_q, d_k)
    context, weights = attn(query, keys, values, mask=mask)
    for i in range(T_Q):
        c_i, w_i = attn(query[:, i], keys, values, mask=mask)
        torch.testing.assert_close(c_i, context[:, i])
        torch.testing.assert_close(w_i, weights[:, i])


@pytest.mark.parametrize("kind", KINDS)
def test_projected_keys_path_equals_plain_path(kind):
    attn, d_q, d_k = make(kind)
    query, keys, values, mask = inputs(d_q, d_k)
    projected = attn.project_keys(keys)
    for q in (query, query[:, 0]):
        c1, w1 = attn(q, keys, values, mask=mask)
        c2, w2 = attn(q, keys, values, mask=mask, projected_keys=projected)
        torch.testing.assert_close(c2, c1, rtol=0, atol=0)
        torch.testing.assert_close(w2, w1, rtol=0, atol=0)


def test_projected_keys_skip_the_key_projection():
    attn, d_q, d_k = make("additive")
    query, keys, values, mask = inputs(d_q, d_k, t_q=None)
    projected = attn.project_keys(keys)
    calls = []
    attn.key_proj.register_forward_hook(lambda *args: calls.append(1))
    attn(query, keys, values, mask=mask, projected_keys=projected)
    assert calls == []


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    attn, d_q, d_k = make(kind)
    query, keys, values, mask = inputs(d_q, d_k, t_q=2)
    args = [t.clone().requires_grad_() for t in (query, keys, values)]

    def fn(q, k, v):
        return attn(q, k, v, mask=mask)

    assert torch.autograd.gradcheck(fn, args)
    # and through the parameters, for the modules that have them
    if list(attn.parameters()):
        names = [n for n, _ in attn.named_parameters()]
        params = [p.detach().clone().requires_grad_() for p in attn.parameters()]

        def fp(*ps):
            state = dict(zip(names, ps))
            return torch.func.functional_call(attn, state, (query, keys, values), {"mask": mask})

        assert torch.autograd.gradcheck(fp, params)


@pytest.mark.parametrize("t_q", [None, T_Q])
def test_scaled_dot_matches_torch_sdpa(t_q):
    attn, d_q, d_k = make("scaled")
    query, keys, values, mask = inputs(d_q, d_k, t_q)
    context, weights = attn(query, keys, values, mask=mask)
    q = query[:, None, :] if t_q is None else query  # (B, T_q, D)
    expected = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None, :])
    if t_q is None:
        expected = expected[:, 0]
    torch.testing.assert_close(context, expected)
    expected_w = torch.softmax(
        (q @ keys.transpose(1, 2) / math.sqrt(D)).masked_fill(~mask[:, None, :], float("-inf")), -1
    )
    torch.testing.assert_close(weights, expected_w if t_q is not None else expected_w[:, 0])


def test_additive_equals_formula_by_hand():
    attn, d_q, d_k = make("additive")
    query, keys, values, mask = inputs(d_q, d_k, t_q=None)
    with torch.no_grad():
        context, weights = attn(query, keys, values, mask=mask)
        w1, w2, b = attn.key_proj.weight.clone(), attn.query_proj.weight.clone(), attn.query_proj.bias.clone()
        v = attn.v.weight[0].clone()
    for n in range(B):
        valid = int(LENGTHS[n])
        scores = [float(v @ torch.tanh(w1 @ keys[n, j] + w2 @ query[n] + b)) for j in range(valid)]
        exps = [math.exp(s) for s in scores]
        expected_w = [e / sum(exps) for e in exps] + [0.0] * (T_K - valid)
        expected_c = sum(expected_w[j] * values[n, j] for j in range(valid))
        torch.testing.assert_close(weights[n], torch.tensor(expected_w, dtype=torch.float64))
        torch.testing.assert_close(context[n], expected_c)


def test_general_and_dot_equal_formula_by_hand():
    query, keys, values, mask = inputs(D_Q, D_K, t_q=None)
    general = make("general")[0]
    _, weights = general(query, keys, values, mask=mask)
    w = general.key_proj.weight  # (D_q, D_k)
    n = 0  # full-length row
    scores = torch.stack([query[n] @ w @ keys[n, j] for j in range(T_K)])
    torch.testing.assert_close(weights[n], torch.softmax(scores, 0))

    query, keys, values, mask = inputs(D, D, t_q=None)
    _, weights = DotAttention()(query, keys, values, mask=mask)
    scores = torch.stack([query[n] @ keys[n, j] for j in range(T_K)])
    torch.testing.assert_close(weights[n], torch.softmax(scores, 0))


def test_no_mask_means_all_valid():
    attn, d_q, d_k = make("general")
    query, keys, values, _ = inputs(d_q, d_k)
    full = torch.ones(B, T_K, dtype=torch.bool)
    c1, w1 = attn(query, keys, values)
    c2, w2 = attn(query, keys, values, mask=full)
    torch.testing.assert_close(c1, c2, rtol=0, atol=0)
    torch.testing.assert_close(w1, w2, rtol=0, atol=0)


def test_all_masked_row_raises():
    attn, d_q, d_k = make("dot")
    query, keys, values, mask = inputs(d_q, d_k)
    mask[1] = False
    with pytest.raises(ValueError, match=r"no valid key in batch rows \[1\]"):
        attn(query, keys, values, mask=mask)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, k, v, m, p: (q[..., :-1], k, v, m, None), "expected query features 7, got 6"),
        (lambda q, k, v, m, p: (q, k[..., :-1], v, m, None), "expected key features 6, got 5"),
        (lambda q, k, v, m, p: (q[:1], k, v, m, None), "query batch size 1 != keys batch size 3"),
        (lambda q, k, v, m, p: (q[0, 0], k, v, m, None), r"expected query of shape \(B, D_q\)"),
        (lambda q, k, v, m, p: (q, k[0], v, m, None), r"expected keys of shape \(B, T_k, D_k\)"),
        (lambda q, k, v, m, p: (q, k, v[:, :-1], m, None), r"expected values of shape \(3, 5, D_v\)"),
        (lambda q, k, v, m, p: (q, k, v, m[:, :-1], None), r"expected mask of shape \(3, 5\), got \(3, 4\)"),
        (lambda q, k, v, m, p: (q, k, v, m.long(), None), "expected a bool mask"),
        (lambda q, k, v, m, p: (q, k, v, m, p[..., :-1]), r"expected projected_keys of shape \(3, 5, 5\)"),
    ],
)
def test_shape_errors_state_expected_and_got(change, message):
    attn, d_q, d_k = make("additive")
    query, keys, values, mask = inputs(d_q, d_k)
    q, k, v, m, p = change(query, keys, values, mask, attn.project_keys(keys))
    with pytest.raises(ValueError, match=message):
        attn(q, k, v, mask=m, projected_keys=p)


def test_dot_needs_equal_sizes_and_constructor_checks():
    query, keys, values, mask = inputs(4, 5)
    with pytest.raises(ValueError, match="expected query features equal to key features 5, got 4"):
        ScaledDotAttention()(query, keys, values, mask=mask)
    with pytest.raises(ValueError, match="hidden_size must be positive, got 0"):
        AdditiveAttention(3, 3, 0)
    with pytest.raises(ValueError, match="key_size must be positive, got -1"):
        GeneralAttention(3, -1)
