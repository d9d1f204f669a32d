"""Seq2Seq model: shapes, padding invariance, teacher forcing == incremental decoding, masked loss, overfit."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.decode import greedy_search
from rnnkit.errors import ConfigError
from rnnkit.models.seq2seq import ATTENTION_TYPES, Seq2Seq, Seq2SeqConfig

PAD, BOS, EOS = 0, 1, 2
ALL = [(attention, cell) for attention in ATTENTION_TYPES for cell in ("lstm", "gru")]


def make(attention="additive", cell="lstm", layers=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    fields = dict(src_vocab_size=11, tgt_vocab_size=13, pad_id=PAD, bos_id=BOS, eos_id=EOS, cell=cell,
                  attention=attention, emb=8, enc_hidden=5, hidden=10, layers=layers, dropout=0.3,
                  share_embeddings=False, tie_weights=False)
    fields.update(kwargs)
    return Seq2Seq(Seq2SeqConfig(**fields))


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    src_lengths = torch.tensor([4, 6, 1, 3])  # unsorted, one single-token source
    src = torch.randint(3, 11, (4, 6), generator=g).masked_fill(torch.arange(6) >= src_lengths[:, None], PAD)
    tgt_lengths = torch.tensor([3, 5, 2, 1])  # tokens before <eos>
    body = torch.randint(3, 13, (4, 5), generator=g)
    tgt_in = torch.full((4, 6), PAD)
    tgt_out = torch.full((4, 6), PAD)
    for i, n in enumerate(tgt_lengths.tolist()):
        tgt_in[i, : n + 1] = torch.tensor([BOS, *body[i, :n].tolist()])
        tgt_out[i, : n + 1] = torch.tensor([*body[i, :n].tolist(), EOS])
    return src, src_lengths, tgt_in, tgt_out


@pytest.mark.parametrize("attention, cell", ALL)
def test_shapes_for_every_attention_and_cell(attention, cell):
    model = make(attention, cell)
    src, src_lengths, tgt_in, tgt_out = data()
    assert model(src, src_lengths, tgt_in).shape == (4, 6, 13)
    loss, n_tokens = model.loss(src, src_lengths, tgt_in, tgt_out)
    assert loss.shape == () and loss.requires_grad and int(n_tokens) == 3 + 5 + 2 + 1 + 4
    enc = model.encode(src, src_lengths)
    assert enc.memory.shape == (4, 6, 10) and enc.mask.tolist() == (torch.arange(6) < src_lengths[:, None]).tolist()
    state = model.initial_state(enc)
    rnn = state.rnn if cell == "gru" else state.rnn[0]
    assert rnn.shape == (2, 4, 10)
    log_probs, state, weights = model.decode_step(torch.full((4,), BOS), state, enc)
    assert log_probs.shape == (4, 13)
    if attention == "none":
        assert weights is None and state.feed is None and enc.projected_keys is None
    else:
        assert weights.shape == (4, 6) and state.feed.shape == (4, 10)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
        assert bool((weights[~enc.mask] == 0).all())


@pytest.mark.parametrize("attention, cell", ALL)
def test_source_padding_never_changes_outputs(attention, cell):
    model = make(attention, cell).eval()
    src, src_lengths, tgt_in, _ = data()
    altered = src.clone()
    pad_positions = torch.arange(6) >= src_lengths[:, None]
    altered[pad_positions] = torch.randint(3, 11, (int(pad_positions.sum()),))
    longer = torch.cat([altered, torch.randint(3, 11, (4, 3))], dim=1)  # extra padded columns
    with torch.no_grad():
        reference = model(src, src_lengths, tgt_in)
        torch.testing.assert_close(model(altered, src_lengths, tgt_in), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(model(longer, src_lengths, tgt_in), reference, rtol=0, atol=1e-6)
        for i in range(4):  # each sentence alone, unpadded
            n = int(src_lengths[i])
            alone = model(src[i : i + 1, :n], src_lengths[i : i + 1], tgt_in[i : i + 1])
            torch.testing.assert_close(alone[0], reference[i], rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention, cell", ALL)
def test_teacher_forcing_equals_step_by_step_decoding(attention, cell):
    model = make(attention, cell).eval()
    src, src_lengths, tgt_in, _ = data()
    with torch.no_grad():
        logits = model(src, src_lengths, tgt_in)  # (B, T, V)
        expected = torch.log_softmax(logits.masked_fill(model.banned, float("-inf")), dim=-1)
        enc = model.encode(src, src_lengths)
        state = model.initial_state(enc)
        for t in range(tgt_in.shape[1]):
            log_probs, state, _ = model.decode_step(tgt_in[:, t], state, enc)
            torch.testing.assert_close(log_probs, expected[:, t], rtol=0, atol=1e-5)
    assert bool(torch.isinf(expected[..., PAD]).all() and torch.isinf(expected[..., BOS]).all())


def test_reorder_selects_and_repeats_rows():
    model = make("general", "lstm").eval()
    src, src_lengths, tgt_in, _ = data()
    index = torch.tensor([2, 0, 0, 3, 1])
    with torch.no_grad():
        enc = model.encode(src, src_lengths)
        state = model.initial_state(enc)
        _, state, _ = model.decode_step(tgt_in[:, 0], state, enc)
        got, _, got_w = model.decode_step(tgt_in[index, 1], model.reorder(state, index), model.reorder(enc, index))
        want, _, want_w = model.decode_step(tgt_in[:, 1], state, enc)
    torch.testing.assert_close(got, want[index])
    torch.testing.assert_close(got_w, want_w[index])


def test_loss_masks_padding_and_smooths_labels():
    model = make("additive", "gru").eval()
    src, src_lengths, tgt_in, tgt_out = data()
    with torch.no_grad():
        logits = model(src, src_lengths, tgt_in)
        log_probs = torch.log_softmax(logits, dim=-1)
        real = tgt_out != PAD
        nll = -log_probs.gather(2, tgt_out[..., None]).squeeze(-1)[real].sum()
        loss, n_tokens = model.loss(src, src_lengths, tgt_in, tgt_out)
        torch.testing.assert_close(loss, nll)
        assert int(n_tokens) == int(real.sum())
        eps = 0.1
        uniform = -log_probs.mean(dim=-1)[real].sum()
        smoothed, _ = model.loss(src, src_lengths, tgt_in, tgt_out, label_smoothing=eps)
        torch.testing.assert_close(smoothed, (1 - eps) * nll + eps * uniform)
        # whatever the decoder reads after a target's end does not change the loss
        noisy_in = tgt_in.masked_fill(~real, 7)
        torch.testing.assert_close(model.loss(src, src_lengths, noisy_in, tgt_out)[0], loss)


def test_gradients_reach_every_parameter():
    for attention in ("additive", "none"):
        model = make(attention, "lstm", tie_weights=True, emb=10)
        src, src_lengths, tgt_in, tgt_out = data()
        loss, _ = model.loss(src, src_lengths, tgt_in, tgt_out, label_smoothing=0.1)
        loss.backward()
        for name, param in model.named_parameters():
            assert param.grad is not None and bool(param.grad.abs().sum() > 0), name


def test_tied_and_shared_embeddings():
    model = make(tie_weights=True, emb=10, share_embeddings=True, src_vocab_size=13)
    assert model.output.weight is model.tgt_embedding.weight is model.src_embedding.weight
    names = [name for name, _ in model.named_parameters()]
    assert "output.weight" not in names and "tgt_embedding.weight" not in names
    fresh = make(tie_weights=True, emb=10, share_embeddings=True, src_vocab_size=13, seed=5)
    fresh.load_state_dict(model.state_dict())
    assert fresh.output.weight is fresh.src_embedding.weight
    src, src_lengths, tgt_in, _ = data()
    torch.testing.assert_close(fresh.eval()(src, src_lengths, tgt_in), model.eval()(src, src_lengths, tgt_in))


def test_config_round_trip_and_errors():
    config = make().config
    assert Seq2SeqConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    base = config.to_dict()
    bad = [
        ({"attention": "bahdanau"}, "attention must be one of additive, dot, general, scaled, none"),
        ({"cell": "foo"}, "cell: unknown cell 'foo' \\(choose from rnn, lstm, gru, ln-lstm, ln-gru"),
        ({"attention": "dot", "enc_hidden": 4, "hidden": 10}, "attention=dot needs hidden == 2 \\* enc_hidden"),
        ({"tie_weights": True, "emb": 8, "hidden": 10}, "tie_weights needs emb == hidden"),
        ({"share_embeddings": True}, "share_embeddings needs one vocabulary"),
        ({"eos_id": 13}, "eos_id must be an id in \\[0, 13\\)"),
        ({"bos_id": 0}, "must differ"),
        ({"dropout": 1.0}, "dropout must be in \\[0, 1\\)"),
        ({"layers": 0}, "layers must be a positive integer"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            Seq2SeqConfig(**{**base, **change})
    with pytest.raises(ConfigError, match="unknown Seq2SeqConfig field"):
        Seq2SeqConfig.from_dict({**base, "heads": 4})


def test_shape_errors_are_value_errors():
    model = make()
    src, src_lengths, tgt_in, tgt_out = data()
    with pytest.raises(ValueError, match="expected src_lengths of shape \\(4,\\)"):
        model(src, src_lengths[:3], tgt_in)
    with pytest.raises(ValueError, match="expected tgt_in of shape \\(4, T\\)"):
        model(src, src_lengths, tgt_in[:2])
    with pytest.raises(ValueError, match="expected tgt_out of shape"):
        model.loss(src, src_lengths, tgt_in, tgt_out[:, :3])


@pytest.mark.parametrize("attention, cell", [("additive", "lstm"), ("dot", "gru")])
def test_overfits_a_tiny_reversal_task(attention, cell):
    """Learn to reverse 64 sequences of 6 symbols (ids 3..8), lengths 2..5, in 120 full-batch steps."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = 64
    lengths = torch.randint(2, 6, (n,), generator=g)
    body = torch.randint(3, 9, (n, 5), generator=g)
    src = body.masked_fill(torch.arange(5) >= lengths[:, None], PAD)
    tgt_in, tgt_out = torch.full((n, 6), PAD), torch.full((n, 6), PAD)
    targets = []
    for i, m in enumerate(lengths.tolist()):
        rev = body[i, :m].flip(0).tolist()
        targets.append(rev)
        tgt_in[i, : m + 1] = torch.tensor([BOS, *rev])
        tgt_out[i, : m + 1] = torch.tensor([*rev, EOS])
    config = Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=9, pad_id=PAD, bos_id=BOS, eos_id=EOS, cell=cell,
                           attention=attention, emb=16, enc_hidden=16, hidden=32, layers=1, dropout=0.0,
                           share_embeddings=False, tie_weights=False)
    model = Seq2Seq(config)

    def n_correct():
        hyps = greedy_search(model, src, lengths, max_len_a=1.0, max_len_b=2)
        return sum(h[0].tokens == t for h, t in zip(hyps, targets))

    assert n_correct() <= 0.1 * n
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(120):
        loss, n_tokens = model.loss(src, lengths, tgt_in, tgt_out)
        optimizer.zero_grad()
        (loss / n_tokens).backward()
        optimizer.step()
    assert float(loss.detach() / n_tokens) < 0.05
    assert n_correct() >= 0.95 * n
