"Tests for spatial_dl.collate: masking statistics and rules, padding, the length-grouped sampler over ranks and epochs."
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from spatial_dl.collate import MLMCollator, LengthGroupedSampler
from spatial_dl.tokenizers import TokenDictionary

TD = TokenDictionary.build([f"G{i}" for i in range(50)], cls_token=True, eos_token=True)   # genes 4..53
SPECIAL = {0, 1, 2, 3}


def _seqs(n, rng, lo=5, hi=120):
    return [[2] + rng.integers(4, 54, int(k)).tolist() + [3] for k in rng.integers(lo, hi, n)]


def test_masking_rates_over_many_batches():
    rng, coll = np.random.default_rng(0), MLMCollator(TD, seed=0)
    chosen = masked = rand = kept = eligible = 0
    for _ in range(30):
        seqs = _seqs(64, rng)
        b, orig = coll(seqs), coll.pad(seqs)['input_ids']
        c = b['labels'] != -100
        el = (b['attention_mask'] == 1) & ~torch.isin(orig, torch.tensor([2, 3]))
        assert not (c & ~el).any()                                     # never a special token or padding
        assert torch.equal(b['labels'][c], orig[c])
        chosen += int(c.sum()); eligible += int(el.sum())
        masked += int((c & (b['input_ids'] == 1)).sum())
        kept += int((c & (b['input_ids'] == orig)).sum())
        r = c & (b['input_ids'] != 1) & (b['input_ids'] != orig)
        rand += int(r.sum())
        assert ((b['input_ids'][r] >= 4) & (b['input_ids'][r] <= 53)).all()   # random replacements are genes
    assert abs(chosen / eligible - 0.15) < 0.005
    assert abs(masked / chosen - 0.8) < 0.01
    # a random gene equal to the original counts as kept: expected kept share = 0.1 + 0.1/50
    assert abs(rand / chosen - 0.1 * 49 / 50) < 0.01 and abs(kept / chosen - (0.1 + 0.1 / 50)) < 0.01


@settings(max_examples=50, deadline=None)
@given(lens=st.lists(st.integers(0, 40), min_size=1, max_size=8), p=st.floats(0, 1), seed=st.integers(0, 100))
def test_specials_never_masked_and_padding_consistent(lens, p, seed):
    rng = np.random.default_rng(seed)
    seqs = [rng.choice([0, 1, 2, 3] + list(range(4, 54)), k).tolist() for k in lens]   # specials anywhere
    b = MLMCollator(TD, mlm_probability=p, seed=seed)(seqs)
    orig = MLMCollator(TD).pad(seqs)['input_ids']
    special = torch.isin(orig, torch.tensor(sorted(SPECIAL))) | (b['attention_mask'] == 0)
    assert (b['labels'][special] == -100).all() and torch.equal(b['input_ids'][special], orig[special])
    assert b['attention_mask'].sum(1).tolist() == lens
    assert b['input_ids'].shape == (len(lens), max(lens))
    if p == 1.0: assert (b['labels'][~special] != -100).all()


def test_padded_batch_input_and_pad_to_multiple():
    coll = MLMCollator(TD, pad_to_multiple_of=8, seed=1)
    b = coll({'input_ids': torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]), 'attention_mask': torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])})
    assert b['input_ids'].shape == (2, 8) and b['attention_mask'].sum().item() == 7
    assert (b['labels'][:, 4:] == -100).all()
    with pytest.raises(ValueError, match='more than max_length=3'): MLMCollator(TD, max_length=3)([[4, 5, 6, 7]])
    with pytest.raises(ValueError, match='mlm_probability'): MLMCollator(TD, mlm_probability=1.5)


def test_seeded_collator_reproducible_and_differs_across_seeds():
    seqs = _seqs(16, np.random.default_rng(2))
    a, b, c = MLMCollator(TD, seed=5)(seqs), MLMCollator(TD, seed=5)(seqs), MLMCollator(TD, seed=6)(seqs)
    assert torch.equal(a['input_ids'], b['input_ids']) and not torch.equal(a['labels'], c['labels'])


def test_works_as_hf_style_tokenizer_helpers():
    coll = MLMCollator(TD)
    assert coll.convert_tokens_to_ids(['<pad>', '<mask>', 'G3']) == [0, 1, 7]
    assert coll.convert_ids_to_tokens([2, 3, 53]) == ['<cls>', '<eos>', 'G49']
    assert coll.get_special_tokens_mask([2, 9, 3], [0, 1]) == [1, 0, 1, 1, 1]
    assert (coll.pad_token_id, coll.mask_token_id, len(coll)) == (0, 1, 54)


# ------------------------------------------------------------------------------------------------ sampler
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), bs=st.integers(1, 16), mult=st.integers(1, 8), world=st.integers(1, 4),
       drop_last=st.booleans(), seed=st.integers(0, 5))
def test_sampler_covers_every_index_across_ranks(n, bs, mult, world, drop_last, seed):
    lengths = np.random.default_rng(seed).integers(1, 500, n)
    per_rank = [LengthGroupedSampler(lengths, bs, mult, seed=seed, rank=r, world_size=world, drop_last=drop_last).batches()
                for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1                     # same number of batches on every rank
    flat = [i for bs_ in per_rank for b in bs_ for i in b]
    if drop_last:
        assert len(flat) == len(set(flat))                          # nothing twice
        assert all(len(b) == bs for bs_ in per_rank for b in bs_)
    else:
        assert set(flat) == set(range(n))                            # everything at least once
        assert len(flat) - n < world * bs                            # padding is less than one round of batches


def test_sampler_groups_lengths_and_changes_each_epoch():
    lengths = np.random.default_rng(0).integers(10, 4000, 2000)
    s = LengthGroupedSampler(lengths, batch_size=16, megabatch_mult=20, seed=0, rank=0, world_size=1)
    e0 = s.batches()
    assert lengths[e0[0]].max() == lengths.max()
    assert np.mean([np.ptp(lengths[b]) for b in e0]) < 0.2 * np.mean([np.ptp(lengths[i:i + 16]) for i in range(0, 2000, 16)])
    s.set_epoch(1)
    assert s.batches() != e0 and sorted(i for b in s.batches() for i in b) == list(range(2000))
    s.set_epoch(0)
    assert s.batches() == e0 and len(s) == 2000 and list(iter(s)) == [i for b in e0 for i in b]


def test_sampler_with_dataloader():
    lengths = [3, 9, 1, 7, 5, 2]
    seqs = [[4] * k for k in lengths]
    s = LengthGroupedSampler(lengths, batch_size=2, megabatch_mult=3, seed=0, rank=0, world_size=1)
    dl = torch.utils.data.DataLoader(seqs, batch_sampler=s.batches(), collate_fn=MLMCollator(TD, seed=0))
    widths = [b['input_ids'].shape[1] for b in dl]
    assert sorted(widths, reverse=True)[0] == 9 and widths[0] == 9 and sum(len(b) for b in s.batches()) == 6
