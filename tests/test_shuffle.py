"""Property tests for spatial_dl.shuffle: exactly-once delivery, equal batch counts, worker independence, epochs, splits."""
import pickle
import re
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from spatial_dl.core import DistInfo
from spatial_dl.shuffle import (BlockShuffleStrategy, RandomShuffleStrategy, SequentialShuffleStrategy, FetchPlan,
                                SplitInfo, ShuffleStrategy, group_split, plan_world, random_split)

SETTINGS = dict(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

strategies = st.one_of(
    st.builds(SequentialShuffleStrategy, fetch_factor=st.integers(1, 5)),
    st.builds(BlockShuffleStrategy, block_size=st.integers(1, 9), fetch_factor=st.integers(1, 5), stratified=st.booleans()),
    st.builds(RandomShuffleStrategy, fetch_factor=st.integers(1, 5)),
)
modes = st.sampled_from([(False, False), (True, False), (False, True)])


def feasible(n, b, w, drop_last, pad):
    "Whether the mode can be satisfied (mirrors the documented rule)."
    if drop_last: return n // (w * b) >= 1
    return pad or n // w >= -(-n // (w * b))


def batches_of(plan: FetchPlan):
    return [tuple(x.tolist()) for x in plan.batches()]


@settings(**SETTINGS)
@given(strategy=strategies, n=st.integers(1, 300), b=st.integers(1, 17), world=st.sampled_from([1, 2, 3]),
       num_workers=st.sampled_from([0, 1, 2]), mode=modes, seed=st.integers(0, 2**31), epoch=st.integers(0, 5),
       offset=st.integers(0, 1000))
def test_exactly_once_and_equal_batches(strategy, n, b, world, num_workers, mode, seed, epoch, offset):
    drop_last, pad = mode
    indices = np.arange(offset, offset + 2 * n, 2)               # global row ids need not be 0..n-1
    if not feasible(n, b, world, drop_last, pad):
        with pytest.raises(ValueError, match='drop_last|pad=True'):
            strategy.plan(indices, b, seed, epoch, DistInfo(0, world), drop_last, pad)
        return
    plans = plan_world(strategy, indices, b, world, num_workers, seed, epoch, drop_last, pad)
    rows = np.concatenate([p.rows for p in plans.values()])
    u, counts = np.unique(rows, return_counts=True)
    assert set(u.tolist()) <= set(indices.tolist())
    k = strategy.num_batches(n, b, world, drop_last, pad)
    if drop_last:
        assert counts.max() == 1 and len(rows) == k * world * b and n - len(rows) < world * b
    elif pad:
        assert set(u.tolist()) == set(indices.tolist()) and len(rows) == k * world * b
        assert len(rows) - n < world * b                        # padding is less than one batch per rank
    else:
        np.testing.assert_array_equal(np.sort(rows), indices)   # exactly once
    m = max(1, num_workers)
    for r in range(world):
        rank_batches = [bt for w in range(m) for bt in batches_of(plans[r, w])]
        assert len(rank_batches) == k                            # equal on every rank
        assert sum(plans[r, w].n_batches for w in range(m)) == plans[r, 0].rank_batches == k
        sizes = [len(bt) for bt in rank_batches]
        assert min(sizes) >= 1 and max(sizes) <= b
        if drop_last or pad: assert set(sizes) == {b}


@settings(**SETTINGS)
@given(strategy=strategies, n=st.integers(30, 400), b=st.integers(1, 9), world=st.sampled_from([1, 2, 3]),
       mode=modes, seed=st.integers(0, 1000))
def test_rank_sees_same_cells_whatever_num_workers(strategy, n, b, world, mode, seed):
    drop_last, pad = mode
    if not feasible(n, b, world, drop_last, pad): return
    per_workers = {}
    for nw in (0, 1, 2, 3):
        plans = plan_world(strategy, n, b, world, nw, seed, 2, drop_last, pad)
        per_workers[nw] = [sorted(bt for w in range(max(1, nw)) for bt in batches_of(plans[r, w])) for r in range(world)]
    assert per_workers[0] == per_workers[1] == per_workers[2] == per_workers[3]


@settings(**SETTINGS)
@given(strategy=st.one_of(st.builds(BlockShuffleStrategy, block_size=st.integers(1, 4), fetch_factor=st.integers(1, 4),
                                    stratified=st.booleans()),
                          st.builds(RandomShuffleStrategy, fetch_factor=st.integers(1, 4))),
       n=st.integers(200, 2000), b=st.integers(2, 32), seed=st.integers(0, 2**31))
def test_epochs_reproducible_and_different(strategy, n, b, seed):
    same = [strategy.plan(n, b, seed, 3, DistInfo()).rows for _ in range(2)]
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0], strategy.plan(n, b, seed, 4, DistInfo()).rows)
    assert not np.array_equal(same[0], strategy.plan(n, b, seed + 1, 3, DistInfo()).rows)


def test_sequential_is_identity_and_epoch_free():
    s = SequentialShuffleStrategy(fetch_factor=3)
    rows = [s.plan(100, 4, seed=0, epoch=e, dist=DistInfo()).rows for e in (0, 7)]
    np.testing.assert_array_equal(rows[0], np.arange(100))
    np.testing.assert_array_equal(rows[1], np.arange(100))
    ranks = plan_world(s, 100, 4, world_size=2, num_workers=0)
    np.testing.assert_array_equal(np.concatenate([ranks[0, 0].rows, ranks[1, 0].rows]), np.arange(100))


@settings(**SETTINGS)
@given(bs=st.integers(1, 64), ff=st.integers(1, 8), b=st.integers(1, 64), n=st.integers(1, 5000),
       seed=st.integers(0, 100))
def test_block_fetches_keep_blocks_contiguous(bs, ff, b, n, seed):
    "A fetch covers whole blocks, partial ones at its two cuts and maybe the file's short last block: few runs."
    if n < b: return
    p = BlockShuffleStrategy(bs, ff).plan(n, b, seed, 0, DistInfo())
    for f in p.fetches:
        runs = 1 + np.count_nonzero(np.diff(np.sort(f)) != 1)
        assert runs <= -(-len(f) // bs) + 2


@settings(**SETTINGS)
@given(n=st.integers(1, 3000), bs=st.integers(1, 70), seed=st.integers(0, 10**6), data=st.data())
def test_order_range_equals_full_order(n, bs, seed, data):
    "The memory-light range lookup used by plans gives exactly the full order, also cyclically (padding)."
    from spatial_dl.shuffle import _block_order, _block_order_range
    full = _block_order(n, bs, np.random.default_rng(seed))
    assert np.array_equal(np.sort(full), np.arange(n))
    lo = data.draw(st.integers(0, n - 1)); hi = data.draw(st.integers(lo + 1, lo + 3 * n))
    slots = np.arange(lo, hi) % n
    np.testing.assert_array_equal(_block_order_range(n, bs, np.random.default_rng(seed), lo, hi), full[slots])
    b = data.draw(st.integers(1, 64))
    for s in (SequentialShuffleStrategy(), RandomShuffleStrategy(), BlockShuffleStrategy(bs, stratified=False),
              BlockShuffleStrategy(bs, 3), BlockShuffleStrategy(bs, 16)):
        np.testing.assert_array_equal(s.order_range(n, np.random.default_rng(seed), lo, hi, b),
                                      s.order(n, np.random.default_rng(seed), b)[slots])


@settings(**SETTINGS)
@given(nb=st.integers(1, 3000), m=st.integers(1, 300), seed=st.integers(0, 10**6))
def test_stratified_block_perm_windows_cover_every_stratum(nb, m, seed):
    "Any m consecutive blocks of the stratified order come from m different strata (except across the ragged last column)."
    from spatial_dl.shuffle import _block_perm
    perm = _block_perm(nb, np.random.default_rng(seed), m)
    assert np.array_equal(np.sort(perm), np.arange(nb))
    m = min(m, nb)
    stratum = np.searchsorted(np.arange(m) * nb // m, perm, side='right') - 1
    full = (nb // m) * m                                             # blocks before the ragged last column
    for i in range(0, max(0, full - m + 1), max(1, m // 3)):
        assert len(set(stratum[i:i + m].tolist())) == m


def test_stratified_fetches_sample_the_whole_file():
    "On a file sorted by label, stratified fetches carry the file's label mix; plain block fetches do not."
    labels = np.repeat(np.arange(8), 1250)                           # 10,000 rows, 8 equal labels, sorted
    def fetch_tv(s):
        p = s.plan(10_000, 64, seed=0, epoch=0, dist=DistInfo())
        return np.mean([0.5 * np.abs(np.bincount(labels[f], minlength=8) / len(f) - 1 / 8).sum() for f in p.fetches])
    strat, plain = fetch_tv(BlockShuffleStrategy(16, 8)), fetch_tv(BlockShuffleStrategy(16, 8, stratified=False))
    assert strat < 0.02 and plain > 3 * strat


def test_stratified_flag_and_names():
    assert BlockShuffleStrategy().stratified and BlockShuffleStrategy().name == 'block'
    assert BlockShuffleStrategy(stratified=False).name == 'plain block'
    assert 'stratified=False' in repr(BlockShuffleStrategy(stratified=False))
    with pytest.raises(ValueError, match='stratified must be True or False'):
        BlockShuffleStrategy(stratified='yes')


def test_block_size_one_is_a_permutation_with_no_block_structure():
    p = BlockShuffleStrategy(1, 4).plan(1000, 10, seed=0, epoch=0, dist=DistInfo())
    np.testing.assert_array_equal(np.sort(p.rows), np.arange(1000))
    assert p.n_runs > 500                                        # random rows: many separate runs


def test_planning_ten_million_rows_is_vectorised():
    "Correctness at scale (timing targets live in benchmarks): 10^7 rows over 2 ranks × 2 workers, exactly once."
    n, b = 10_000_000, 256
    s = BlockShuffleStrategy(16, 16)
    total = 0
    seen = np.zeros(n, np.uint8)
    for r in range(2):
        for w in range(2):
            rows = s.plan(n, b, 0, 1, DistInfo(r, 2, w, 2)).rows
            seen[rows] += 1                                      # rows within one plan are distinct
            total += len(rows)
    assert total == n and seen.min() == 1 and seen.max() == 1


def test_plan_pickles_and_is_read_only():
    p = BlockShuffleStrategy(4, 2).plan(100, 8, seed=1, epoch=2, dist=DistInfo(1, 2, 1, 2))
    q = pickle.loads(pickle.dumps(p))
    assert q.dist == p.dist and q.epoch == 2
    np.testing.assert_array_equal(q.rows, p.rows)
    with pytest.raises(ValueError, match='read-only'):
        p.fetches[0][0] = 5
    assert 'rank 1/2' in repr(p) and 'worker 1/2' in repr(p)


# ---------------------------------------------------------------- splits

@settings(**SETTINGS)
@given(n=st.integers(1, 3000), fracs=st.lists(st.integers(0, 10), min_size=1, max_size=5).filter(lambda x: sum(x) > 0),
       seed=st.integers(0, 2**31), method=st.sampled_from(['deterministic', 'multinomial', 'stochastic_rounding']))
def test_random_split_disjoint_covering_reproducible(n, fracs, seed, method):
    f = [x / sum(fracs) for x in fracs]
    idx = np.arange(5, 5 + 3 * n, 3)
    parts = random_split(idx, *f, seed=seed, method=method)
    assert len(parts) == len(f)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), idx)
    for p in parts: assert np.all(np.diff(p) > 0)                  # sorted, no repeats
    again = random_split(idx, *f, seed=seed, method=method)
    for a, b in zip(parts, again): np.testing.assert_array_equal(a, b)
    for p, fr in zip(parts, f):
        if fr == 0: assert len(p) == 0
        if method != 'multinomial': assert abs(len(p) - n * fr) < 1 + 1e-9


def test_random_split_methods_differ_in_size_distribution():
    sizes = lambda m: {tuple(len(x) for x in random_split(101, 0.5, 0.5, seed=s, method=m)) for s in range(40)}
    assert sizes('deterministic') == {(51, 50)}                  # always the same sizes
    assert sizes('stochastic_rounding') == {(51, 50), (50, 51)}  # floor or ceil, at random
    assert len(sizes('multinomial')) > 3                         # every row draws its split


def test_random_split_seed_changes_assignment():
    assert not np.array_equal(random_split(1000, .5, .5, seed=0)[0], random_split(1000, .5, .5, seed=1)[0])


@settings(**SETTINGS)
@given(sizes=st.lists(st.integers(1, 50), min_size=3, max_size=20), seed=st.integers(0, 2**31),
       fracs=st.sampled_from([(0.6, 0.2, 0.2), (0.8, 0.2), (0.5, 0.0, 0.5), (1.0,), (0.34, 0.33, 0.33)]))
def test_group_split_never_splits_a_group(sizes, seed, fracs):
    groups = np.repeat([f"slide{i}" for i in range(len(sizes))], sizes)
    parts = group_split(groups, *fracs, seed=seed)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(groups)))
    owner = {}
    for k, p in enumerate(parts):
        for g in set(groups[p].tolist()):
            assert owner.setdefault(g, k) == k                   # no group in two splits
        if fracs[k] > 0: assert len(p) > 0
        else: assert len(p) == 0
    again = group_split(groups, *fracs, seed=seed)
    for a, b in zip(parts, again): np.testing.assert_array_equal(a, b)


def test_group_split_tracks_row_fractions_with_many_groups():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 200, 20_000)
    tr, va, te = group_split(groups, 0.7, 0.2, 0.1, seed=0)
    n = len(groups)
    assert abs(len(tr) / n - 0.7) < 0.03 and abs(len(va) / n - 0.2) < 0.03 and abs(len(te) / n - 0.1) < 0.03


def test_group_split_with_indices_and_categorical():
    import pandas as pd
    g = pd.Categorical(['a'] * 5 + ['b'] * 5 + ['c'] * 5)
    idx = np.arange(100, 115)
    parts = group_split(g, 0.4, 0.3, 0.3, seed=2, indices=idx)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), idx)
    assert all(len(p) == 5 for p in parts)


def test_strategy_split_gives_splitinfo():
    s = BlockShuffleStrategy()
    info = s.split(1000, val_size=0.1, test_size=0.2, seed=3, files=['a.h5ad', 'b.h5ad'], mini_batch_size=64,
                   metadata={'label': 'cell_type'})
    assert isinstance(info, SplitInfo)
    assert (len(info.train_indices), len(info.val_indices), len(info.test_indices)) == (700, 100, 200)
    d = info.to_dict(as_lists=True)
    assert d['files'] == ['a.h5ad', 'b.h5ad'] and d['mini_batch_size'] == 64 and isinstance(d['train_indices'], list)
    groups = np.repeat(np.arange(10), 100)
    ginfo = s.split(1000, val_size=0.2, test_size=0.1, groups=groups)
    assert not set(groups[ginfo.train_indices]) & set(groups[ginfo.val_indices])
    labels = np.repeat(['x', 'y'], [900, 100])
    sinfo = s.split(1000, val_size=0.1, test_size=0.1, stratify=labels)
    assert (labels[sinfo.val_indices] == 'y').sum() == 10 and (labels[sinfo.train_indices] == 'y').sum() == 80
    plan = s.plan(info.train_indices, 64, dist=DistInfo())
    np.testing.assert_array_equal(np.sort(plan.rows), info.train_indices)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('call, message', [
    (lambda: BlockShuffleStrategy(block_size=0), 'block_size must be a positive integer'),
    (lambda: BlockShuffleStrategy(fetch_factor=0), 'fetch_factor must be a positive integer'),
    (lambda: RandomShuffleStrategy(fetch_factor=2.5), 'fetch_factor must be a positive integer'),
    (lambda: SequentialShuffleStrategy().plan(10, 0, dist=DistInfo()), 'batch_size must be a positive integer'),
    (lambda: SequentialShuffleStrategy().plan(10, -3, dist=DistInfo()), 'batch_size must be a positive integer'),
    (lambda: SequentialShuffleStrategy().num_batches(10, 4, 0), 'world_size must be a positive integer'),
    (lambda: SequentialShuffleStrategy().num_batches(0, 4, 1), 'n_indices must be a positive integer'),
    (lambda: SequentialShuffleStrategy().plan([], 4, dist=DistInfo()), 'indices is empty'),
    (lambda: SequentialShuffleStrategy().plan(np.array([1.5]), 4, dist=DistInfo()), 'integer row ids'),
    (lambda: SequentialShuffleStrategy().plan(10, 4, dist=(0, 2)), 'dist must be a core.DistInfo'),
    (lambda: SequentialShuffleStrategy().plan(10, 4, dist=DistInfo(), drop_last=True, pad=True), 'exclusive'),
    (lambda: SequentialShuffleStrategy().plan(10, 4, epoch=-1, dist=DistInfo()), 'epoch must be'),
    (lambda: DistInfo(rank=3, world_size=2), 'rank must be in'),
    (lambda: DistInfo(rank=0, world_size=0), 'world_size must be >= 1'),
    (lambda: random_split(10, 0.7, 0.2), 'fracs must sum to 1'),
    (lambda: random_split(10, 1.2, -0.2), 'fracs must be non-negative'),
    (lambda: random_split(10, float('nan'), 1.0), 'fracs must be finite'),
    (lambda: random_split(10, 1.0, method='nope'), 'method must be one of'),
    (lambda: random_split(10, 1.0, seed=-1), 'seed must be a non-negative integer'),
    (lambda: group_split(['a', 'b'], 1.0, seed=1.5), 'seed must be a non-negative integer'),
    (lambda: group_split(['a'], 0.5, 0.5), '1 distinct groups'),
    (lambda: group_split(['a', 'b'], 1.0, indices=[1, 2, 3]), 'one entry per group label'),
    (lambda: BlockShuffleStrategy().split(10, val_size=0.8, test_size=0.4), 'val_size + test_size must be at most 1'),
    (lambda: BlockShuffleStrategy().split(10, test_size=1.5), 'test_size must be a fraction'),
    (lambda: SequentialShuffleStrategy().plan(10, 4, seed=-2, dist=DistInfo()), 'seed must be a non-negative integer'),
    (lambda: group_split(np.array(['a', np.nan, 'b'], dtype=object), 0.5, 0.5), 'groups has 1 missing labels'),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_base_class_is_abstract():
    with pytest.raises(TypeError):
        ShuffleStrategy()


def test_plan_summary_reports_io_shape():
    p = BlockShuffleStrategy(16, 4).plan(10_000, 64, seed=0, epoch=0, dist=DistInfo(0, 1, 0, 2))
    s = p.summary()
    assert s['fetches'] == len(p.fetches) and s['rows'] == p.n_rows and s['batches'] == p.n_batches
    assert s['max_fetch_rows'] == 256 and 14 <= s['rows_per_run'] <= 16.5       # ~ one run per block
    assert s['rank_batches'] == BlockShuffleStrategy().num_batches(10_000, 64)


def test_strategies_pickle_and_plan_identically():
    for s in (SequentialShuffleStrategy(3), BlockShuffleStrategy(8, 2), BlockShuffleStrategy(8, 2, stratified=False),
              RandomShuffleStrategy(5)):
        t = pickle.loads(pickle.dumps(s))
        assert repr(t) == repr(s) and t.name == s.name
        np.testing.assert_array_equal(t.plan(500, 16, 3, 1, DistInfo(1, 2)).rows, s.plan(500, 16, 3, 1, DistInfo(1, 2)).rows)


@pytest.mark.parametrize('num_workers', [0, 2])
def test_dataloader_workers_discover_themselves_and_deliver_exactly_once(num_workers):
    "Real DataLoader worker processes: plan(dist=...) from core.dist_info() inside each worker; exactly once, same batches."
    import torch.utils.data as tud
    from spatial_dl.core import dist_info

    class PlanBatches(tud.IterableDataset):              # yields this process's planned batches, like the loader
        def __init__(self, strategy, n, b, rank, world):
            self.strategy, self.n, self.b, self.rank, self.world = strategy, n, b, rank, world
        def __iter__(self):
            plan = self.strategy.plan(self.n, self.b, seed=7, epoch=1, dist=dist_info(self.rank, self.world))
            for bt in plan.batches(): yield np.array(bt)  # plan arrays are read-only: copy before torch sees them

    s = BlockShuffleStrategy(4, 2)
    got = {}
    for rank in range(2):
        dl = tud.DataLoader(PlanBatches(s, 203, 8, rank, 2), batch_size=None, num_workers=num_workers)
        got[rank] = [tuple(np.asarray(x).tolist()) for x in dl]
    rows = np.concatenate([np.array(bt) for r in got for bt in got[r]])
    np.testing.assert_array_equal(np.sort(rows), np.arange(203))
    assert len(got[0]) == len(got[1]) == s.num_batches(203, 8, 2)
    ref = plan_world(s, 203, 8, world_size=2, num_workers=0, seed=7, epoch=1)
    for r in range(2):
        assert sorted(got[r]) == sorted(tuple(bt.tolist()) for bt in ref[r, 0].batches())


@settings(**SETTINGS)
@given(counts=st.lists(st.integers(1, 200), min_size=1, max_size=6), seed=st.integers(0, 10**6),
       fracs=st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.5), (0.7, 0.0, 0.3), (1.0,)]),
       method=st.sampled_from(['deterministic', 'stochastic_rounding']))
def test_stratified_random_split_keeps_every_label_mix(counts, seed, fracs, method):
    labels = np.repeat([f"type{i}" for i in range(len(counts))], counts)
    idx = np.arange(100, 100 + len(labels))
    parts = random_split(idx, *fracs, seed=seed, method=method, stratify=labels)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), idx)
    for p, fr in zip(parts, fracs):
        got = {t: int(np.sum(labels[p - 100] == t)) for t in set(labels)}
        for t, c in zip([f"type{i}" for i in range(len(counts))], counts):
            assert abs(got[t] - c * fr) < 1 + 1e-9                      # each label split in proportion, within one row
    again = random_split(idx, *fracs, seed=seed, method=method, stratify=labels)
    for a, b in zip(parts, again): np.testing.assert_array_equal(a, b)


@settings(**SETTINGS)
@given(n=st.integers(1, 200), extra=st.integers(-50, 300), b=st.integers(1, 9), world=st.sampled_from([1, 2, 3]),
       num_workers=st.sampled_from([0, 1, 2]), mode=modes, seed=st.integers(0, 10**6), data=st.data())
def test_weighted_draws_each_slot_exactly_once(n, extra, b, world, num_workers, mode, seed, data):
    "Weighted sampling: the epoch's draw (with replacement) is delivered slot by slot exactly once, equal batches per rank."
    from spatial_dl.shuffle import WeightedShuffleStrategy, _ORDER
    from spatial_dl.core import make_rng
    drop_last, pad = mode
    weights = np.array(data.draw(st.lists(st.floats(0, 5), min_size=n, max_size=n)))
    if weights.sum() <= 0: weights[0] = 1.0
    m = max(1, n + extra)
    s = WeightedShuffleStrategy(weights, samples_per_epoch=m, fetch_factor=data.draw(st.integers(1, 4)))
    indices = np.arange(1000, 1000 + n)
    if not feasible(m, b, world, drop_last, pad):
        with pytest.raises(ValueError, match='drop_last|pad=True'):
            s.plan(indices, b, seed, 1, DistInfo(0, world), drop_last, pad)
        return
    plans = plan_world(s, indices, b, world, num_workers, seed, 1, drop_last, pad)
    rows = np.sort(np.concatenate([p.rows for p in plans.values()]))
    draw = indices[s.order(n, make_rng(seed, 1, _ORDER), b)]
    k = s.num_batches(n, b, world, drop_last, pad)
    expected = np.sort(np.resize(draw, k * world * b)) if (drop_last or pad) else np.sort(draw)
    np.testing.assert_array_equal(rows, expected)
    assert np.all(weights[rows - 1000] > 0)                          # zero-weight rows are never drawn
    for r in range(world):
        assert sum(plans[r, w].n_batches for w in range(max(1, num_workers))) == k


def test_class_balanced_evens_out_labels():
    from spatial_dl.shuffle import WeightedShuffleStrategy
    labels = np.repeat(['a', 'b', 'c'], [9000, 900, 100])
    s = WeightedShuffleStrategy.class_balanced(labels, samples_per_epoch=30_000)
    p = s.plan(10_000, 100, seed=0, epoch=0, dist=DistInfo())
    shares = np.unique(labels[p.rows], return_counts=True)[1] / p.n_rows
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.02)
    assert not np.array_equal(p.rows, s.plan(10_000, 100, seed=0, epoch=1, dist=DistInfo()).rows)
    np.testing.assert_array_equal(p.rows, s.plan(10_000, 100, seed=0, epoch=0, dist=DistInfo()).rows)
    with pytest.raises(ValueError, match='samples_per_epoch must be a positive integer'):
        WeightedShuffleStrategy(np.ones(3), samples_per_epoch=0)
    with pytest.raises(ValueError, match='weights must be a non-empty 1-D array'):
        WeightedShuffleStrategy([])
