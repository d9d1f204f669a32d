"""CRF: forward algorithm and Viterbi against brute-force enumeration, batching, gradients, constraints."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnkit.nn.crf import CRF, DISALLOWED, bio_constraints


def _random_crf(k: int, seed: int, **constraints) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(k, **constraints).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _path_score(crf: CRF, em: torch.Tensor, path: tuple[int, ...]) -> float:
    """Score of one path by the textbook sum, over the raw (unmasked) parameters."""
    s = crf.start_transitions.detach()[path[0]] + crf.end_transitions.detach()[path[-1]]
    s = s + sum(em[t, y] for t, y in enumerate(path))
    s = s + sum(crf.transitions.detach()[a, b] for a, b in zip(path, path[1:]))
    return s.item() if torch.is_tensor(s) else float(s)


def _allowed(crf: CRF, path: tuple[int, ...]) -> bool:
    return (
        bool(crf.allowed_start[path[0]])
        and bool(crf.allowed_end[path[-1]])
        and all(bool(crf.allowed_transitions[a, b]) for a, b in zip(path, path[1:]))
    )


def _brute(crf: CRF, em: torch.Tensor) -> tuple[float, tuple[int, ...], float]:
    """(log Z, best path, best score) over all allowed paths of one unpadded sequence (T, K)."""
    t, k = em.shape
    paths = [p for p in itertools.product(range(k), repeat=t) if _allowed(crf, p)]
    scores = torch.tensor([_path_score(crf, em, p) for p in paths], dtype=torch.float64)
    best = int(scores.argmax())
    return float(torch.logsumexp(scores, 0)), paths[best], float(scores[best])


def _constraints_k3() -> dict:
    # tags O, B, I of one type (BIO): I only after B or I, not at the start
    trans, start, end = bio_constraints(["O", "B-X", "I-X"], "BIO")
    end = end.clone()
    end[1] = False  # extra end constraint so that mask is exercised too
    return {"allowed_transitions": trans, "allowed_start": start, "allowed_end": end}


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_log_partition_and_viterbi_equal_brute_force(constrained, length):
    kw = _constraints_k3() if constrained else {}
    for seed in range(5):
        crf = _random_crf(3, seed, **kw)
        em = torch.randn(1, length, 3, dtype=torch.float64) * 2
        mask = torch.ones(1, length, dtype=torch.bool)
        log_z, best_path, best_score = _brute(crf, em[0])
        assert crf.log_partition(em, mask).item() == pytest.approx(log_z, abs=1e-10)
        (decoded,) = crf.decode(em, mask)
        assert tuple(decoded) == best_path
        # score() of an allowed path is its textbook score
        tags = torch.tensor([best_path])
        assert crf.score(em, tags, mask).item() == pytest.approx(best_score, abs=1e-10)


def test_probabilities_sum_to_one():
    crf = _random_crf(3, 0)
    em = torch.randn(1, 3, 3, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    nll = [crf.neg_log_likelihood(em, torch.tensor([p]), mask) for p in itertools.product(range(3), repeat=3)]
    assert torch.exp(-torch.cat(nll)).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_disallowed_path_scores_large_negative():
    crf = _random_crf(3, 1, **_constraints_k3())
    em = torch.randn(1, 2, 3, dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    bad = torch.tensor([[0, 2]])  # O -> I-X is disallowed
    assert crf.score(em, bad, mask).item() < DISALLOWED / 2
    assert torch.isfinite(crf.neg_log_likelihood(em, bad, mask)).all()


@pytest.mark.parametrize("constrained", [False, True])
def test_batched_padded_equals_one_at_a_time(constrained):
    kw = _constraints_k3() if constrained else {}
    crf = _random_crf(3, 2, **kw)
    lengths = [4, 1, 3, 2, 4]
    b, t = len(lengths), max(lengths)
    torch.manual_seed(3)
    em = torch.randn(b, t, 3, dtype=torch.float64)
    tags = torch.randint(0, 3, (b, t))
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    em_junk = em.masked_fill(~mask.unsqueeze(2), 1e3)  # padded emissions must not matter
    tags_junk = tags.masked_fill(~mask, -100)  # nor padded tags
    log_z = crf.log_partition(em_junk, mask)
    score = crf.score(em_junk, tags_junk, mask)
    paths = crf.decode(em_junk, mask)
    for i, n in enumerate(lengths):
        one = torch.ones(1, n, dtype=torch.bool)
        assert log_z[i].item() == pytest.approx(crf.log_partition(em[i : i + 1, :n], one).item(), abs=1e-10)
        assert score[i].item() == pytest.approx(
            crf.score(em[i : i + 1, :n], tags[i : i + 1, :n], one).item(), abs=1e-10
        )
        assert paths[i] == crf.decode(em[i : i + 1, :n], one)[0]
        assert len(paths[i]) == n


def test_gradcheck_float64():
    crf = _random_crf(3, 4, **_constraints_k3())
    em = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    tags = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    names = ["start_transitions", "end_transitions", "transitions"]

    def nll(em, *params):
        return torch.func.functional_call(crf, dict(zip(names, params)), (em, tags, mask))

    params = tuple(getattr(crf, n).detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(nll, (em, *params))


def test_parameter_gradients_match_expected_counts():
    """d NLL / d transitions = expected transition counts - observed counts (float64, no masks)."""
    crf = _random_crf(3, 5)
    em = torch.randn(1, 3, 3, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    tags = torch.tensor([[0, 2, 1]])
    crf.neg_log_likelihood(em, tags, mask).sum().backward()
    paths = list(itertools.product(range(3), repeat=3))
    probs = torch.softmax(torch.tensor([_path_score(crf, em[0], p) for p in paths]), 0)
    expected = torch.zeros(3, 3, dtype=torch.float64)
    for p, pr in zip(paths, probs):
        for a, b in zip(p, p[1:]):
            expected[a, b] += pr
    expected[0, 2] -= 1
    expected[2, 1] -= 1
    torch.testing.assert_close(crf.transitions.grad, expected)


def test_bio_constraints():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    trans, start, end = bio_constraints(labels, "BIO")
    ok = {(a, b) for a in labels for b in labels if trans[labels.index(a), labels.index(b)]}
    assert ("O", "I-PER") not in ok and ("B-LOC", "I-PER") not in ok and ("I-LOC", "I-PER") not in ok
    assert ("B-PER", "I-PER") in ok and ("I-PER", "I-PER") in ok and ("I-PER", "B-PER") in ok
    assert ("I-PER", "O") in ok and ("O", "B-LOC") in ok
    assert start.tolist() == [True, True, False, True, False]
    assert end.all()


def test_bioes_constraints():
    labels = ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "E-Y"]
    trans, start, end = bio_constraints(labels, "BIOES")
    idx = labels.index
    ok = lambda a, b: bool(trans[idx(a), idx(b)])
    assert ok("B-X", "I-X") and ok("B-X", "E-X") and ok("I-X", "E-X") and ok("E-X", "O") and ok("S-X", "B-Y")
    assert not ok("B-X", "O") and not ok("B-X", "E-Y") and not ok("O", "I-X") and not ok("E-X", "E-X")
    assert not ok("S-X", "I-X") and not ok("I-X", "B-X")
    assert start.tolist() == [True, True, False, False, True, True, False]
    assert end.tolist() == [True, False, False, True, True, False, True]


def test_bio_constraints_reject_foreign_labels():
    with pytest.raises(ValueError, match="'NOUN' is not a BIO label"):
        bio_constraints(["O", "NOUN"], "BIO")
    with pytest.raises(ValueError, match="'E-X' is not a BIO label"):
        bio_constraints(["O", "E-X"], "BIO")
    with pytest.raises(ValueError, match="scheme"):
        bio_constraints(["O"], "IOB2")


def test_decode_respects_constraints_against_strong_emissions():
    labels = ["O", "B-X", "I-X", "E-X", "S-X"]
    trans, start, end = bio_constraints(labels, "BIOES")
    crf = CRF(5, allowed_transitions=trans, allowed_start=start, allowed_end=end)
    torch.manual_seed(6)
    em = torch.randn(20, 6, 5) * 1e5  # emissions far above DISALLOWED
    lengths = torch.randint(1, 7, (20,))
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    paths = crf.decode(em, mask)
    assert [len(p) for p in paths] == lengths.tolist()
    for path in paths:
        assert bool(start[path[0]]) and bool(end[path[-1]])
        assert all(bool(trans[a, b]) for a, b in zip(path, path[1:]))


def test_decode_raises_when_no_sequence_is_allowed():
    # a single tag that may start and end but never follow itself: no sequence of length 2
    crf = CRF(1, allowed_transitions=torch.zeros(1, 1, dtype=torch.bool))
    assert crf.decode(torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool)) == [[0]]
    with pytest.raises(ValueError, match="no tag sequence of length 2"):
        crf.decode(torch.zeros(1, 2, 1), torch.ones(1, 2, dtype=torch.bool))


def test_shape_and_mask_errors():
    crf = CRF(3)
    em = torch.zeros(2, 3, 3)
    good = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"expected shape \(B, T, 3\), got \(2, 3, 4\)"):
        crf.log_partition(torch.zeros(2, 3, 4), good)
    with pytest.raises(ValueError, match="mask: expected a bool tensor of shape"):
        crf.log_partition(em, good.long())
    with pytest.raises(ValueError, match="at least one token"):
        crf.log_partition(em, torch.tensor([[True] * 3, [False] * 3]))
    with pytest.raises(ValueError, match="padding must be on the right"):
        crf.decode(em, torch.tensor([[True, False, True], [True] * 3]))
    with pytest.raises(ValueError, match="tags: expected shape"):
        crf.score(em, torch.zeros(2, 2, dtype=torch.long), good)
    with pytest.raises(ValueError, match="allowed_transitions: expected a bool tensor of shape"):
        CRF(3, allowed_transitions=torch.ones(2, 2, dtype=torch.bool))
