"""rnnkit.data.batching: padding, length-bucketed batches, order restoration."""

from __future__ import annotations

import random

import pytest
import torch

from rnnkit.data.batching import RankBatches, length_batches, pad_batch, padding_fraction, restore_order


def test_pad_batch_lists_and_tensors():
    x, n = pad_batch([[5, 6, 7], [8], []], pad_id=0)
    assert x.dtype == torch.int64 and n.dtype == torch.int64
    assert x.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert n.tolist() == [3, 1, 0]
    y, m = pad_batch([torch.tensor([1, 2], dtype=torch.int32), torch.tensor([3])], pad_id=9)
    assert y.dtype == torch.int64
    assert y.tolist() == [[1, 2], [3, 9]] and m.tolist() == [2, 1]


def test_pad_batch_random_matches_rows():
    rng = random.Random(1)
    seqs = [[rng.randrange(50) for _ in range(rng.randrange(0, 9))] for _ in range(17)]
    x, n = pad_batch(seqs, pad_id=-1)
    assert x.shape == (17, max(len(s) for s in seqs))
    for b, s in enumerate(seqs):
        assert n[b] == len(s)
        assert x[b, : len(s)].tolist() == s
        assert (x[b, len(s) :] == -1).all()


def test_pad_batch_errors():
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([], pad_id=0)
    with pytest.raises(ValueError, match="1-D tensor, got shape"):
        pad_batch([torch.zeros(2, 2, dtype=torch.long)], pad_id=0)
    with pytest.raises(ValueError, match="integer tensor"):
        pad_batch([torch.zeros(2)], pad_id=0)


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 60) for _ in range(n)]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("bucket", [False, True])
@pytest.mark.parametrize("n, bs", [(0, 4), (1, 4), (37, 4), (40, 8), (103, 7)])
def test_every_index_exactly_once(shuffle, bucket, n, bs):
    lengths = _lengths(n)
    batches = length_batches(lengths, bs, shuffle=shuffle, bucket=bucket, pool=3, seed=5)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert all(1 <= len(b) <= bs for b in batches)
    assert sum(len(b) < bs for b in batches) <= 1  # only one short batch


def test_unshuffled_no_bucket_is_identity_chunks():
    assert length_batches([3, 1, 2, 5, 4], 2, shuffle=False, bucket=False) == [[0, 1], [2, 3], [4]]


def test_bucketing_sorts_within_pools_and_cuts_padding():
    lengths = _lengths(400)
    plain = length_batches(lengths, 10, shuffle=True, bucket=False, seed=3)
    pooled = length_batches(lengths, 10, shuffle=True, bucket=True, pool=5, seed=3)
    assert padding_fraction(pooled, lengths) < padding_fraction(plain, lengths) / 2
    # unshuffled: pools are consecutive blocks of pool * batch_size examples, sorted by decreasing length
    batches = length_batches(lengths, 10, shuffle=False, pool=5)
    flat = [i for b in batches for i in b]
    for start in range(0, 400, 50):
        block = flat[start : start + 50]
        assert sorted(block) == list(range(start, start + 50))
        assert [lengths[i] for i in block] == sorted((lengths[i] for i in block), reverse=True)
    # pool=None: one global sort gives the least padding
    glob = length_batches(lengths, 10, shuffle=False, pool=None)
    assert padding_fraction(glob, lengths) <= padding_fraction(batches, lengths)


def test_shuffle_deterministic_by_seed_and_epoch_without_global_rng():
    lengths = _lengths(200)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = length_batches(lengths, 8, shuffle=True, seed=1, epoch=0)
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched
    torch.manual_seed(123)  # global seed must not matter
    assert length_batches(lengths, 8, shuffle=True, seed=1, epoch=0) == a
    assert length_batches(lengths, 8, shuffle=True, seed=1, epoch=1) != a
    assert length_batches(lengths, 8, shuffle=True, seed=2, epoch=0) != a


def test_shuffle_changes_batch_order():
    lengths = _lengths(200)
    a = length_batches(lengths, 8, shuffle=True, seed=0, pool=100)  # one pool: sorted batches
    maxes = [max(lengths[i] for i in b) for b in a]
    assert maxes != sorted(maxes, reverse=True)


def test_padding_fraction_brute_force():
    lengths = [3, 1, 4, 4]
    batches = [[0, 1], [2, 3]]
    # cells: 2*3 + 2*4 = 14, real: 12
    assert padding_fraction(batches, lengths) == pytest.approx(2 / 14)
    assert padding_fraction([], []) == 0.0
    assert padding_fraction([[0]], [0]) == 0.0


def test_restore_order_round_trip():
    lengths = _lengths(53)
    batches = length_batches(lengths, 6, shuffle=True, seed=4)
    results = [f"out{i}" for b in batches for i in b]  # what a model would emit batch by batch
    assert restore_order(results, batches) == [f"out{i}" for i in range(53)]


def test_restore_order_errors():
    with pytest.raises(ValueError, match="expected 3 items"):
        restore_order([1, 2], [[0, 1], [2]])
    with pytest.raises(ValueError, match="exactly once"):
        restore_order([1, 2, 3], [[0, 1], [1]])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        length_batches([1], 0, shuffle=False)
    with pytest.raises(ValueError, match="pool"):
        length_batches([1], 2, shuffle=False, pool=0)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_rank_batches_share_out_the_one_process_batches(world_size):
    rng = random.Random(5)
    lengths = [rng.randint(1, 30) for _ in range(103)]  # 103 = 12 batches of 8, and 7 left
    whole = RankBatches(lengths, 8, seed=3).epoch(2)
    assert whole == length_batches(lengths, 8, shuffle=True, seed=3, epoch=2)
    shares = [RankBatches(lengths, 8, seed=3, rank=r, world_size=world_size) for r in range(world_size)]
    kept = [b for b in whole if len(b) >= world_size]  # a last batch too small to share is skipped by all
    for i, batch in enumerate(kept):
        assert sorted(j for s in shares for j in s.epoch(2)[i]) == sorted(batch)
        assert [s.epoch(2)[i] for s in shares] == [batch[r::world_size] for r in range(world_size)]
    assert all(len(s) == len(s.epoch(2)) == len(kept) for s in shares)
    assert shares[0].epoch(2) != shares[0].epoch(3)  # every epoch its own shuffle
