"""rnnkit.models.classifier, rnnkit.models.transfer and the classification plots."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import (
    POOLINGS,
    Classifier,
    ClassifierConfig,
    SelfAttentivePooling,
    attention_penalty,
    balanced_class_weights,
    choose_threshold,
    classification_loss,
    collate_classified,
)
from rnnkit.models.lm import LanguageModel, LMModelConfig
from rnnkit.models.transfer import GradualUnfreezing, discriminative_param_groups, init_from_lm, layer_groups
from rnnkit.plot import plot_confusion, plot_word_weights


def _config(**kw) -> ClassifierConfig:
    base = dict(num_words=30, num_classes=3, num_chars=12, cell="lstm", emb=6, hidden=5, layers=2,
                bidirectional=True, pooling="max", attention_hidden=4, attention_heads=2, use_chars=True,
                char_emb=4, char_hidden=3, char_cell="lstm", dropout=0.0, multi_label=False, word_pad_id=0,
                char_pad_id=0)
    return ClassifierConfig(**{**base, **kw})


def _texts(seed: int = 0, sizes=(5, 1, 3)):
    g = torch.Generator().manual_seed(seed)
    words = [torch.randint(1, 30, (n,), generator=g).tolist() for n in sizes]
    chars = [[torch.randint(1, 12, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
              for _ in w] for w in words]
    return words, chars


def _model(**kw) -> Classifier:
    torch.manual_seed(0)
    return Classifier(_config(**kw)).double().eval()


def _logits(model, batch):
    return model(batch.words, batch.chars, batch.lengths, batch.char_lengths).logits


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_text_alone_equals_it_in_a_padded_batch(pooling, cell, bidirectional):
    model = _model(pooling=pooling, cell=cell, bidirectional=bidirectional)
    words, chars = _texts()
    batch = _logits(model, collate_classified(words, chars))
    for i in range(len(words)):
        alone = _logits(model, collate_classified(words[i:i + 1], chars[i:i + 1]))
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_contents_change_nothing(pooling):
    model = _model(pooling=pooling)
    words, chars = _texts(1)
    batch = collate_classified(words, chars)
    out = model(batch.words, batch.chars, batch.lengths, batch.char_lengths)
    pad = torch.arange(batch.words.size(1))[None, :] >= batch.lengths[:, None]  # (B, T)
    noisy_words = batch.words.masked_fill(pad, 17)
    noisy_chars = batch.chars.clone()
    noisy_chars[pad] = 5  # padded words get characters
    char_pad = torch.arange(batch.chars.size(2))[None, None, :] >= batch.char_lengths[:, :, None]
    noisy_chars[char_pad & ~pad[:, :, None]] = 7  # padded characters of real words too
    noisy = model(noisy_words, noisy_chars, batch.lengths, batch.char_lengths)
    torch.testing.assert_close(out.logits, noisy.logits, rtol=0, atol=0)
    if pooling == "attention":
        torch.testing.assert_close(out.attention, noisy.attention, rtol=0, atol=0)


def _pooled(model, batch):
    """The pooled vector itself: the output layer made the identity."""
    size = model.output.in_features
    model.output = torch.nn.Linear(size, size).double()
    with torch.no_grad():
        model.output.weight.copy_(torch.eye(size))
        model.output.bias.zero_()
    return _logits(model, batch)


def test_last_pooling_takes_the_forward_last_step_and_the_backward_first_step():
    for bidirectional in (False, True):
        model = _model(pooling="last", use_chars=False, num_classes=2, bidirectional=bidirectional)
        words, _ = _texts(2)
        batch = collate_classified(words)
        x = model.word_embedding(batch.words)
        _, (h_n, _) = model.rnn(x, lengths=batch.lengths)  # (L*D, B, H): state after each text's last step
        expected = torch.cat([h_n[-2], h_n[-1]], 1) if bidirectional else h_n[-1]
        torch.testing.assert_close(_pooled(model, batch), expected, rtol=1e-12, atol=1e-12)


def test_max_and_mean_pooling_over_real_steps_only():
    for pooling in ("max", "mean"):
        model = _model(pooling=pooling, use_chars=False)
        words, _ = _texts(3)
        batch = collate_classified(words)
        h, _ = model.encode(batch.words, None, batch.lengths, None)
        expected = torch.stack([getattr(h[i, :n], "amax" if pooling == "max" else "mean")(0)
                                for i, n in enumerate(batch.lengths.tolist())])
        torch.testing.assert_close(_pooled(model, batch), expected, rtol=1e-12, atol=1e-12)


def test_self_attentive_pooling_matches_lin_et_al():
    torch.manual_seed(1)
    pool = SelfAttentivePooling(4, 3, 2).double()
    h = torch.randn(2, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    z, a = pool(h, mask)
    assert z.shape == (2, 8) and a.shape == (2, 2, 5)
    # row 1 by hand, on its 2 real steps: A = softmax(W2 tanh(W1 H^T))
    H = h[1, :2]  # (2, 4)
    A = torch.softmax(pool.w2.weight @ torch.tanh(pool.w1.weight @ H.T), dim=1)  # (r, n)
    torch.testing.assert_close(a[1, :, :2], A)
    assert torch.all(a[1, :, 2:] == 0)
    torch.testing.assert_close(a.sum(2), torch.ones(2, 2, dtype=torch.float64))
    torch.testing.assert_close(z[1], (A @ H).flatten())


def test_attention_penalty():
    a = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    # two heads on the same word: A A^T = ones, ||ones - I||^2 = 2; orthogonal heads: 0
    torch.testing.assert_close(attention_penalty(a), torch.tensor([2.0, 0.0]))
    model = _model(pooling="attention")
    words, chars = _texts()
    batch = collate_classified(words, chars, targets=[0, 1, 2])
    plain, n = model.loss(batch)
    out = model(batch.words, batch.chars, batch.lengths, batch.char_lengths)
    penalised, _ = model.loss(batch, penalty=0.5)
    torch.testing.assert_close(penalised, plain + 0.5 * attention_penalty(out.attention).sum())
    with pytest.raises(ValueError, match="penalty needs attention pooling"):
        _model(pooling="max").loss(batch, penalty=0.5)


def test_multiclass_loss_smoothing_and_class_weights_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    logp = torch.log_softmax(logits, 1)
    weights = balanced_class_weights([2, 1, 1])  # n / (K * count) = 4 / (3 * [2, 1, 1])
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 4 / 3, 4 / 3]))
    nll = -(logp[0, 0] * weights[0] + logp[1, 2] * weights[2])
    torch.testing.assert_close(classification_loss(logits, targets, multi_label=False, class_weights=weights),
                               nll.to(torch.float64))
    eps = 0.1  # smoothed target: (1 - eps) one-hot + eps / K
    smooth = -sum(((1 - eps) * logp[i, t] + eps / 3 * logp[i].sum()) for i, t in enumerate(targets.tolist()))
    torch.testing.assert_close(classification_loss(logits, targets, multi_label=False, label_smoothing=eps), smooth)
    with pytest.raises(ValueError, match="every class needs at least one training example"):
        balanced_class_weights([3, 0])


def test_multilabel_loss_and_batch():
    model = _model(multi_label=True, num_classes=4)
    words, chars = _texts()
    batch = collate_classified(words, chars, targets=[[0, 3], [], [1]], num_classes=4)
    assert batch.targets.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    logits = _logits(model, batch)
    p = torch.sigmoid(logits)
    y = batch.targets.double()
    by_hand = -(y * p.log() + (1 - y) * (1 - p).log()).sum()
    loss, n = model.loss(batch)
    torch.testing.assert_close(loss, by_hand)
    assert n == 3
    probs, _ = model.probabilities(batch)
    torch.testing.assert_close(probs, p)
    with pytest.raises(ValueError, match="label_smoothing and class_weights are for multi-class data"):
        model.loss(batch, label_smoothing=0.1)


def test_choose_threshold_maximises_micro_f1():
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.4]])
    gold = torch.tensor([[1, 0], [1, 1]])
    # predicting the top 1, 2, 3, 4 scores: F1 = 2/4, 4/5, 6/6, 6/7 -> keep 0.4, cut between 0.4 and 0.2
    assert choose_threshold(probs, gold) == pytest.approx(0.3)
    # ties in score are cut together: 0.5 0.5 can't be split
    assert choose_threshold(torch.tensor([[0.5, 0.5, 0.1]]), torch.tensor([[1, 0, 0]])) == pytest.approx(0.3)
    # keeping every score is best: the cut lies halfway to 0
    assert choose_threshold(torch.tensor([[0.2, 0.1]]), torch.tensor([[1, 1]])) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no gold label"):
        choose_threshold(probs, torch.zeros(2, 2))


def test_config_validation_and_round_trip():
    cfg = _config(pooling="attention")
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
    for change, message in [({"cell": "tcn"}, "cell: unknown cell 'tcn'"),
                            ({"pooling": "sum"}, "pooling must be one of last, max, mean, attention"),
                            ({"num_classes": 1}, "num_classes must be >= 2, got 1"),
                            ({"pooling": "attention", "attention_heads": 0}, "attention_heads must be >= 1")]:
        with pytest.raises(ValueError, match=message):
            _config(**change)
    with pytest.raises(ValueError, match=r"missing fields \['word_pad_id'\]"):
        ClassifierConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "word_pad_id"})
    # no field has a default: the task config holds them
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(ClassifierConfig))


def test_training_step_reduces_the_loss():
    torch.manual_seed(0)
    model = Classifier(_config(pooling="attention", dropout=0.1))
    words, chars = _texts()
    batch = collate_classified(words, chars, targets=[0, 1, 2])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        loss, n = model.loss(batch, label_smoothing=0.05)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    model.eval()
    probs, weights = model.probabilities(batch)
    assert float(model.loss(batch)[0].detach()) < first / 4
    assert probs.argmax(1).tolist() == [0, 1, 2]
    assert weights.shape == (3, 2, 5)


# -- ULMFiT transfer --------------------------------------------------------------------------------

def _lm(cell="lstm", layers=2, vocab_size=20):
    torch.manual_seed(3)
    config = LMModelConfig(vocab_size=vocab_size, model=cell, emb=6, hidden=5, layers=layers, dropout=0.0,
                           dropout_emb=0.0, dropout_hidden=0.0, weight_dropout=0.0, tie_weights=False,
                           softmax="full", cutoffs=(), init_range=None)
    return LanguageModel(config).double().eval()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_init_from_lm_gives_the_lm_hidden_states(cell):
    lm_vocab = Vocab([f"w{i}" for i in range(18)])  # 20 symbols
    clf_vocab = Vocab(["w3", "w7", "new", "w1"] + [f"x{i}" for i in range(24)])  # 30 symbols
    lm = _lm(cell)
    model = _model(cell=cell, bidirectional=False, use_chars=False)
    assert init_from_lm(model, lm, lm_vocab, clf_vocab) == 4  # <unk>, w3, w7, w1 (<pad> is never copied)
    tokens = ["w3", "w7", "w1", "w3"]
    h_lm, _ = lm.hidden_states(torch.tensor([lm_vocab.encode(tokens)]))
    h, _ = model.encode(torch.tensor([clf_vocab.encode(tokens)]), None, torch.tensor([4]), None)
    torch.testing.assert_close(h, h_lm, rtol=1e-12, atol=1e-12)
    # a token the LM never saw starts at the mean of the LM's rows; padding stays zero
    torch.testing.assert_close(model.word_embedding.weight[clf_vocab.stoi["new"]], lm.embedding.weight.mean(0))
    assert torch.all(model.word_embedding.weight[0] == 0)


def test_init_from_lm_bidirectional_with_chars_initialises_the_forward_direction():
    lm_vocab = clf_vocab = Vocab([f"w{i}" for i in range(28)])
    lm = _lm(vocab_size=30)
    model = _model(bidirectional=True, use_chars=True)
    reverse = model.rnn.weight_hh_l0_reverse.clone()
    init_from_lm(model, lm, lm_vocab, clf_vocab)
    ids = [4, 9, 2]
    h_lm, _ = lm.hidden_states(torch.tensor([ids]))
    batch = collate_classified([ids], [[[1, 2], [3], [4, 5]]])
    h, _ = model.encode(batch.words, batch.chars, batch.lengths, batch.char_lengths)
    torch.testing.assert_close(h[..., :5], h_lm, rtol=1e-12, atol=1e-12)  # forward half
    assert torch.equal(model.rnn.weight_hh_l0_reverse, reverse)  # backward direction untouched
    assert torch.all(model.rnn.weight_ih_l1[:, 5:] == 0)  # forward layer 2 ignores the backward outputs at first


def test_init_from_lm_mismatches_name_the_field():
    vocab = Vocab([f"w{i}" for i in range(28)])
    cases = [(dict(cell="gru"), "init_from: cell: the language model has 'lstm', the classifier 'gru'"),
             (dict(emb=8), "init_from: emb: the language model has 6, the classifier 8"),
             (dict(hidden=7), "init_from: hidden: the language model has 5, the classifier 7"),
             (dict(layers=1), "init_from: layers: the language model has 2, the classifier 1")]
    for change, message in cases:
        with pytest.raises(ConfigError) as info:
            init_from_lm(_model(**change), _lm(vocab_size=30), vocab, vocab)
        assert str(info.value) == message + " (they must match)"
    with pytest.raises(ConfigError, match="no token of the classifier's vocabulary is in the language model's"):
        other = Vocab([f"c{i}" for i in range(28)], specials=("<p>", "<u>"), unk="<u>")
        init_from_lm(_model(), _lm(vocab_size=30), vocab, other)


def test_discriminative_learning_rates_and_gradual_unfreezing():
    model = _model(pooling="attention", layers=2)
    groups = layer_groups(model)
    assert [name for name, _ in groups] == ["embedding", "rnn.0", "rnn.1", "head"]
    assert sum(len(ps) for _, ps in groups) == len(list(model.parameters()))
    assert all(n.endswith(("_l0", "_l0_reverse")) for n, p in model.rnn.named_parameters()
               if any(p is q for q in groups[1][1]))
    lrs = [g["lr"] for g in discriminative_param_groups(model, 1e-2, decay=2.6)]
    assert lrs == pytest.approx([1e-2 / 2.6 ** 3, 1e-2 / 2.6 ** 2, 1e-2 / 2.6, 1e-2])
    schedule = GradualUnfreezing(num_groups=4, epochs_per_group=2)
    assert [schedule.trainable(e) for e in range(8)] == [1, 1, 2, 2, 3, 3, 4, 4]
    schedule.apply(groups, 2)
    trainable = [all(p.requires_grad for p in ps) for _, ps in groups]
    frozen = [not any(p.requires_grad for p in ps) for _, ps in groups]
    assert trainable == [False, False, True, True] and frozen == [True, True, False, False]
    # a step changes only the trainable groups
    before = [p.detach().clone() for _, ps in groups for p in ps]
    opt = torch.optim.SGD([p for _, ps in groups for p in ps], lr=0.1)
    words, chars = _texts()
    model.train()
    loss, _ = model.loss(collate_classified(words, chars, targets=[0, 1, 2]))
    loss.backward()
    opt.step()
    after = [p for _, ps in groups for p in ps]
    sizes = [len(ps) for _, ps in groups]
    changed = [not torch.equal(b, a) for b, a in zip(before, after)]
    assert not any(changed[: sizes[0] + sizes[1]]) and all(changed[sizes[0] + sizes[1]:])


# -- plots ----------------------------------------------------------------------------------------

def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plots_write_pngs(tmp_path):
    width, height = _png_size(plot_confusion([[5, 1, 0], [2, 7, 1], [0, 0, 4]], ["a", "b", "c"], tmp_path / "cm.png"))
    assert 300 <= width <= 2000 and 300 <= height <= 2000
    out = plot_word_weights([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]], ["not", "bad", "!"], tmp_path / "w.png")
    width, height = _png_size(out)
    assert 300 <= width <= 2000 and 200 <= height <= 2000
    with pytest.raises(ValueError, match="expected rows of 3 weights"):
        plot_word_weights([[0.5, 0.5]], ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="expected 2 x 2 counts"):
        plot_confusion([[1, 2]], ["a", "b"], tmp_path / "y.png")
