"""Greedy and beam search: exhaustive optimum, beam 1 == greedy, input order, batching, attention."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch

from rnnkit.decode import beam_search, greedy_search
from rnnkit.decode.search import length_penalty_factor, max_lengths
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig


@dataclass
class FakeEnc:
    key: torch.Tensor  # (N,) per-sentence constant derived from the source
    mask: torch.Tensor  # (N, S)

    def index_select(self, index):
        return FakeEnc(self.key[index], self.mask[index])


class FakeModel:
    """A deterministic, history-dependent next-token distribution that follows the search protocol.

    The state is a hash of the sentence and the prefix; the log-probabilities are a fixed pseudo-random
    function of that hash, so every prefix of every sentence has its own distribution.
    """

    bos_id, eos_id = 0, 1

    def __init__(self, vocab: int, sharpness: float = 2.0) -> None:
        self.vocab, self.sharpness = vocab, sharpness

    def encode(self, src, src_lengths):
        mask = torch.arange(src.shape[1])[None, :] < src_lengths[:, None]
        key = (src * mask * torch.arange(1, src.shape[1] + 1)).sum(dim=1) * 7919 + src_lengths
        return FakeEnc(key, mask)

    def initial_state(self, enc):
        return enc.key.clone()

    def reorder(self, state, index):
        return state.index_select(index) if isinstance(state, FakeEnc) else state[index]

    def log_probs_of(self, state):
        phase = state[:, None].double() * 0.618 + torch.arange(self.vocab, dtype=torch.float64) * 1.37
        return torch.log_softmax(self.sharpness * torch.sin(phase * 12.9898) * 3.3, dim=-1)

    def decode_step(self, prev, state, enc):
        state = (state * 1000003 + prev * 7 + 3) % 2147483647  # new hash of the prefix
        scores = torch.cos(state[:, None].double() + torch.arange(enc.mask.shape[1])).masked_fill(
            ~enc.mask, float("-inf")
        )
        return self.log_probs_of(state), state, torch.softmax(scores, dim=-1)


def sequence_log_prob(model, src, length, tokens):
    """log p(tokens + <eos> | src) by stepping the model on one sentence."""
    enc = model.encode(src[None, :length], torch.tensor([length]))
    state = model.initial_state(enc)
    prev, total = torch.tensor([model.bos_id]), 0.0
    for tok in [*tokens, model.eos_id]:
        log_probs, state, _ = model.decode_step(prev, state, enc)
        total += float(log_probs[0, tok])
        prev = torch.tensor([tok])
    return total


def exhaustive(model, src, length, allowed, max_tokens, alpha):
    """All hypotheses of up to ``max_tokens`` tokens, best first, as (tokens, normalised score)."""
    hyps = []
    for n in range(max_tokens + 1):
        for tokens in itertools.product(allowed, repeat=n):
            score = sequence_log_prob(model, src, length, list(tokens))
            hyps.append((list(tokens), score / float(length_penalty_factor(n + 1, alpha))))
    return sorted(hyps, key=lambda h: -h[1])


def batch():
    src = torch.tensor([[5, 3, 0, 0], [2, 4, 6, 3], [7, 0, 0, 0]])
    return src, torch.tensor([2, 4, 1])  # unsorted lengths


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
def test_wide_beam_returns_every_hypothesis_in_exhaustive_order(alpha):
    model = FakeModel(vocab=4)  # tokens 2, 3 plus <bos>=0 and <eos>=1: bos is generated too
    src, lengths = batch()
    # at most 3 tokens: 1 + 3 + 9 + 27 = 40 hypotheses over {0, 2, 3}; 40 * 4 candidates fit in the beam
    results = beam_search(model, src, lengths, beam=200, nbest=40, length_penalty=alpha, max_len_a=0.0,
                          max_len_b=3)
    for i in range(3):
        expected = exhaustive(model, src[i], int(lengths[i]), [0, 2, 3], 3, alpha)
        got = results[i]
        assert len(got) == len(expected) == 40
        assert [h.tokens for h in got] == [tokens for tokens, _ in expected]
        torch.testing.assert_close([h.score for h in got], [score for _, score in expected], rtol=0, atol=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_wide_beam_with_nbest_1_finds_the_exhaustive_optimum(alpha):
    # nbest=1 fills the pool of finished hypotheses early, so the early-stop bound decides when to stop
    model = FakeModel(vocab=5, sharpness=0.5)  # flat distributions: greedy is often not optimal
    src, lengths = batch()
    allowed = [0, 2, 3, 4]
    max_tokens = 3
    n_all = sum(4**n for n in range(max_tokens + 1))  # 85 hypotheses
    results = beam_search(model, src, lengths, beam=n_all * 5, nbest=1, length_penalty=alpha, max_len_a=0,
                          max_len_b=max_tokens)
    greedy = greedy_search(model, src, lengths, max_len_a=0, max_len_b=max_tokens)
    differs = 0
    for i in range(3):
        best_tokens, best_score = exhaustive(model, src[i], int(lengths[i]), allowed, max_tokens, alpha)[0]
        assert results[i][0].tokens == best_tokens
        assert results[i][0].score == pytest.approx(best_score, abs=1e-9)
        differs += greedy[i][0].tokens != best_tokens
    assert differs >= 1  # the test exercises search, not just the greedy path


def test_early_stop_when_no_live_hypothesis_can_win():
    model = FakeModel(vocab=4)
    calls = []
    step = model.decode_step
    model.decode_step = lambda *args: calls.append(1) or step(*args)
    model.log_probs_of = lambda state: torch.log_softmax(  # <eos> first is far more likely than anything
        torch.tensor([0.0, 10.0, 1.0, 0.5], dtype=torch.float64).expand(state.shape[0], 4), dim=-1
    )
    src, lengths = batch()
    results = beam_search(model, src, lengths, beam=4, nbest=1, max_len_b=20)
    assert [r[0].tokens for r in results] == [[], [], []]
    assert len(calls) == 1  # without the bound, 4 finished hypotheses per sentence would take more steps


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_beam_one_equals_greedy(alpha):
    model = FakeModel(vocab=7, sharpness=1.0)
    src = torch.randint(2, 9, (12, 6))
    lengths = torch.randint(1, 7, (12,))
    greedy = greedy_search(model, src, lengths, max_len_a=1.0, max_len_b=3)
    beam = beam_search(model, src, lengths, beam=1, length_penalty=alpha, max_len_a=1.0, max_len_b=3)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        n = len(g[0].tokens) + 1
        assert b[0].score == pytest.approx(g[0].score / float(length_penalty_factor(n, alpha)), abs=1e-9)
    for i, g in enumerate(greedy):
        expected = sequence_log_prob(model, src[i], int(lengths[i]), g[0].tokens)
        assert g[0].score == pytest.approx(expected, abs=1e-9)
    lengths_out = {len(g[0].tokens) for g in greedy}
    assert len(lengths_out) > 1  # some stop early at <eos>, some at the maximum length


def test_maximum_length_is_per_sentence_and_forces_eos():
    model = FakeModel(vocab=4)
    model.log_probs_of = lambda state: torch.log_softmax(  # <eos> is very unlikely
        torch.tensor([0.0, -20.0, 1.0, 0.5], dtype=torch.float64).expand(state.shape[0], 4), dim=-1
    )
    src, lengths = batch()  # lengths 2, 4, 1
    limits = max_lengths(lengths, 1.5, 1).tolist()
    assert limits == [4, 7, 2]
    for results in (
        greedy_search(model, src, lengths, max_len_a=1.5, max_len_b=1),
        beam_search(model, src, lengths, beam=3, nbest=3, max_len_a=1.5, max_len_b=1),
    ):
        assert len(results) == 3 and all(results)
        for i, hyps in enumerate(results):
            assert all(len(h.tokens) == limits[i] for h in hyps)
    assert [r[0].tokens for r in greedy_search(model, src, lengths, max_len_a=1.5, max_len_b=1)] == [
        [2] * 4, [2] * 7, [2] * 2
    ]


def test_batched_and_unsorted_equals_one_sentence_at_a_time():
    model = FakeModel(vocab=6, sharpness=1.0)
    src = torch.randint(2, 9, (7, 5))
    lengths = torch.tensor([3, 5, 1, 4, 2, 5, 3])
    for search, kwargs in ((greedy_search, {}), (beam_search, {"beam": 4, "nbest": 3, "length_penalty": 0.6})):
        together = search(model, src, lengths, max_len_a=1.0, max_len_b=2, return_attention=True, **kwargs)
        for i in range(7):
            alone = search(model, src[i : i + 1, : int(lengths[i])], lengths[i : i + 1], max_len_a=1.0,
                           max_len_b=2, return_attention=True, **kwargs)[0]
            assert [h.tokens for h in together[i]] == [h.tokens for h in alone]
            assert [h.score for h in together[i]] == pytest.approx([h.score for h in alone], abs=1e-9)
            for a, b in zip(together[i], alone):
                torch.testing.assert_close(a.attention, b.attention)


def test_nbest_is_sorted_distinct_and_validated():
    model = FakeModel(vocab=6, sharpness=1.0)
    src, lengths = batch()
    results = beam_search(model, src, lengths, beam=5, nbest=5, length_penalty=0.5, max_len_b=4)
    assert len(results) == 3
    for i, hyps in enumerate(results):
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5
        for h in hyps:  # each score is the model's own normalised log-probability
            assert model.eos_id not in h.tokens
            expected = sequence_log_prob(model, src[i], int(lengths[i]), h.tokens)
            expected /= float(length_penalty_factor(len(h.tokens) + 1, 0.5))
            assert h.score == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="nbest must be in"):
        beam_search(model, src, lengths, beam=2, nbest=3)
    with pytest.raises(ValueError, match="beam must be >= 1"):
        beam_search(model, src, lengths, beam=0)
    with pytest.raises(ValueError, match="max_len_a and max_len_b"):
        greedy_search(model, src, lengths, max_len_b=-1)


def tiny_seq2seq(attention="general", cell="gru", seed=0):
    torch.manual_seed(seed)
    config = Seq2SeqConfig(src_vocab_size=7, tgt_vocab_size=5, pad_id=0, bos_id=1, eos_id=2, cell=cell,
                           attention=attention, emb=6, enc_hidden=4, hidden=8, layers=1, dropout=0.3,
                           share_embeddings=False, tie_weights=False)
    model = Seq2Seq(config)
    with torch.no_grad():  # sharpen the random distributions a little
        model.output.weight.mul_(4.0)
    return model


def seq2seq_exhaustive(model, src, length, max_tokens, alpha):
    """Score every hypothesis over the allowed tokens {3, 4} with teacher-forced logits."""
    model.eval()
    hyps = []
    for n in range(max_tokens + 1):
        for tokens in itertools.product([3, 4], repeat=n):
            tgt_in = torch.tensor([[1, *tokens]])
            tgt_out = torch.tensor([[*tokens, 2]])
            with torch.no_grad():
                logits = model(src[None, :length], torch.tensor([length]), tgt_in)[0]
            log_probs = torch.log_softmax(logits.masked_fill(model.banned, float("-inf")).double(), dim=-1)
            score = float(log_probs.gather(1, tgt_out.T).sum())
            hyps.append((list(tokens), score / float(length_penalty_factor(n + 1, alpha))))
    return sorted(hyps, key=lambda h: -h[1])


@pytest.mark.parametrize("attention, cell", [("general", "gru"), ("additive", "lstm"), ("none", "lstm")])
def test_wide_beam_on_a_random_seq2seq_is_exhaustive(attention, cell):
    model = tiny_seq2seq(attention, cell)
    model.train()  # the search switches to eval mode and back
    src = torch.tensor([[3, 4, 5, 0], [6, 3, 4, 5], [4, 0, 0, 0]])
    lengths = torch.tensor([3, 4, 1])
    results = beam_search(model, src, lengths, beam=64, nbest=15, length_penalty=0.7, max_len_a=0, max_len_b=3)
    assert model.training
    for i in range(3):
        expected = seq2seq_exhaustive(model, src[i], int(lengths[i]), 3, 0.7)
        assert len(results[i]) == len(expected) == 15
        assert [h.tokens for h in results[i]] == [tokens for tokens, _ in expected]
        torch.testing.assert_close([h.score for h in results[i]], [s for _, s in expected], rtol=0, atol=1e-5)


def test_seq2seq_attention_weights_shapes_and_sums():
    model = tiny_seq2seq("additive", "lstm")
    src = torch.tensor([[3, 4, 5, 0], [6, 3, 4, 5], [4, 0, 0, 0]])
    lengths = torch.tensor([3, 4, 1])
    for results in (
        greedy_search(model, src, lengths, max_len_b=5, return_attention=True),
        beam_search(model, src, lengths, beam=3, nbest=2, max_len_b=5, return_attention=True),
    ):
        assert len(results) == 3 and all(results)
        for i, hyps in enumerate(results):
            for h in hyps:
                assert h.attention.shape == (len(h.tokens) + 1, int(lengths[i]))
                torch.testing.assert_close(h.attention.sum(dim=1), torch.ones(len(h.tokens) + 1))
    greedy = greedy_search(model, src, lengths, max_len_b=5)
    assert all(h.attention is None for hyps in greedy for h in hyps)
    no_attention = tiny_seq2seq("none", "gru")
    results = beam_search(no_attention, src, lengths, beam=2, return_attention=True)
    assert len(results) == 3
    for hyps in results:
        assert hyps[0].attention is None
