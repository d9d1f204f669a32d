"""Streaming LM inference (rnnkit.decode.stream through LMRun): step, chunked scoring, saved states."""

from __future__ import annotations

import pytest
import torch

from rnnkit.decode import stream
from rnnkit.errors import DataError
from rnnkit.tasks import lm
from tests.test_lm_task import make_text


def tiny_lm(tmp_path, level: str, model: str = "lstm"):
    train = tmp_path / "train.txt"
    train.write_text(make_text(200, 1))
    return lm.train(out=str(tmp_path / f"run-{level}-{model}"), train=str(train), level=level, model=model,
                    max_steps=3, hidden=16, emb=8, layers=2, batch_size=4, bptt=12, time_budget=None, threads=1,
                    progress=False, seed=3)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    return tiny_lm(tmp_path_factory.mktemp("stream"), "char")


@pytest.mark.parametrize("level,model", [("char", "gru"), ("word", "lstm"), ("char", "ln-lstm"), ("char", "mingru")])
def test_score_equals_model_loss_and_chunked_score(tmp_path, level, model):
    run = tiny_lm(tmp_path, level, model)
    text = make_text(12, 5)
    total, _ = run.score(text)
    ids = torch.tensor([run.tokenizer.encode_stream(text)])  # (1, T): one stream, read from a zero state
    with torch.no_grad():
        nll, _ = run.model.loss(ids[:, :-1], ids[:, 1:])
    assert total == pytest.approx(-float(nll), rel=1e-5)
    lines = text.splitlines(keepends=True)
    cuts = [0, 3, 4, 9, len(lines)]  # word level splits at line ends, as encode_stream does
    state, chunked = None, 0.0
    for a, b in zip(cuts, cuts[1:]):
        part, state = run.score("".join(lines[a:b]), state)
        chunked += part
    assert chunked == pytest.approx(total, abs=1e-5 * abs(total))


def test_char_chunks_anywhere_and_step_loop(char_run):
    text = make_text(6, 7)
    total, _ = char_run.score(text)
    state, chunked = None, 0.0
    for a in range(0, len(text), 17):  # cuts inside words
        part, state = char_run.score(text[a:a + 17], state)
        chunked += part
    assert chunked == pytest.approx(total, abs=1e-5 * abs(total))
    ids = char_run.tokenizer.encode_stream(text)
    state, stepped = char_run.initial_state(1), 0.0
    for prev, nxt in zip(ids, ids[1:]):
        log_probs, state = char_run.step(torch.tensor([prev]), state)
        stepped += float(log_probs[0, nxt])
    assert stepped == pytest.approx(total, abs=1e-5 * abs(total))


def test_batched_steps_equal_single_streams(char_run):
    ids = torch.tensor([[3, 5, 7, 9], [4, 4, 8, 2]])  # (B=2, T)
    both = char_run.initial_state(2)
    singles = [char_run.initial_state(1), char_run.initial_state(1)]
    for t in range(ids.shape[1]):
        out, both = char_run.step(ids[:, t], both)
        for b in range(2):
            one, singles[b] = char_run.step(ids[b:b + 1, t], singles[b])
            torch.testing.assert_close(out[b:b + 1], one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_generation_continues_from_a_saved_state(char_run, tmp_path, temperature):
    _, state = char_run.score("the cat sat")
    gen = torch.Generator().manual_seed(11)
    straight, _ = stream.sample(char_run.model, state, 20, temperature=temperature, generator=gen)
    gen = torch.Generator().manual_seed(11)
    first, mid = stream.sample(char_run.model, state, 8, temperature=temperature, generator=gen)
    stream.save_state(mid, tmp_path / "state.safetensors")
    torch.save(gen.get_state(), tmp_path / "rng.pt")  # the test's own RNG, so that sampling can continue
    restored = stream.load_state(tmp_path / "state.safetensors")
    assert set(restored) == {"h", "c", "log_probs"}
    gen2 = torch.Generator()
    gen2.set_state(torch.load(tmp_path / "rng.pt"))
    rest, _ = stream.sample(char_run.model, restored, 12, temperature=temperature, generator=gen2)
    assert first[0] + rest[0] == straight[0]


def test_greedy_stream_equals_run_generate(char_run):
    prompt = "the dog"
    _, state = char_run.score(prompt)
    ids, _ = stream.sample(char_run.model, state, 15, temperature=0.0)
    assert char_run.tokenizer.decode_stream(ids[0]) == char_run.generate(prompt, 15, temperature=0.0)[0]


def test_bad_state_files(tmp_path, char_run):
    bad = tmp_path / "junk.safetensors"
    bad.write_text("not a tensor file")
    with pytest.raises(DataError, match=r"junk.safetensors: cannot read a stream state"):
        stream.load_state(bad)
    other = tmp_path / "other.safetensors"
    stream.save_state({"x": torch.zeros(1)}, other)
    with pytest.raises(DataError, match=r"other.safetensors: not a stream state: expected tensors h\[, c, s2, ...\]"):
        stream.load_state(other)
    with pytest.raises(ValueError, match=r"sample: the state has read no token yet"):
        stream.sample(char_run.model, char_run.initial_state(1), 3)


@pytest.mark.parametrize("prompt", ["the dog", "the dog\n", ""])
def test_prompt_ids_read_as_run_generate_reads_them(tmp_path, prompt):
    run = tiny_lm(tmp_path, "word")
    _, state = stream.score_ids(run.model, stream.prompt_ids(run.tokenizer, prompt))
    ids, _ = stream.sample(run.model, state, 10, temperature=0.0)
    assert run.tokenizer.decode_stream(ids[0]) == run.generate(prompt, 10, temperature=0.0)[0]


@pytest.mark.parametrize("level,model", [("char", "lstm"), ("word", "gru"), ("char", "mingru")])
def test_score_many_equals_scoring_each_text_alone(tmp_path, level, model):
    """One padded batch of texts of different lengths (a single token, nothing at all, several lines) gives
    each text's own total, as scoring it alone from a fresh state does."""
    run = tiny_lm(tmp_path, level, model)
    texts = [make_text(3, 1), "a", "", make_text(9, 2), make_text(1, 3)]
    alone = [run.score(t)[0] for t in texts]
    assert run.score_many(texts) == pytest.approx(alone, rel=1e-5, abs=1e-6)
    ids = [run.tokenizer.encode_stream(t) for t in texts]
    assert stream.score_many(run.model, ids, chunk=3) == pytest.approx(alone, rel=1e-5, abs=1e-6)
    assert run.score_many([]) == []
