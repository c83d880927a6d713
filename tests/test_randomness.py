"""Tests for spatial_dl.randomness: exact ideals against brute force and scipy, batch metrics, reports, plots, widget."""
import json
import re
import os
os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from scipy.stats import hypergeom

from spatial_dl.core import DistInfo, make_rng
from spatial_dl.shuffle import BlockShuffleStrategy, RandomShuffleStrategy, SequentialShuffleStrategy
from spatial_dl.randomness import (batch_composition, batch_mixing, default_strategies, ideal_mixing,
                                   load_bench_results, mixing_explorer, mixing_grid, mixing_report, plot_composition,
                                   plot_mixing_grid, predicted_tv, simulated_ideal)


def sorted_labels(n=20_000, k=20, seed=0):
    rng = make_rng(seed, 7)
    return np.sort(rng.choice(k, n, p=rng.dirichlet(np.full(k, 2.0))))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(0, 60), min_size=1, max_size=8).filter(lambda c: sum(c) > 0),
       frac=st.floats(0.01, 1.0))
def test_ideal_matches_scipy_hypergeometric(counts, frac):
    labels = np.repeat(np.arange(len(counts)), counts)
    N = len(labels)
    b = max(1, int(frac * N))
    got = ideal_mixing(labels, b)
    n_k = np.bincount(labels)
    n_k = n_k[n_k > 0]
    x = np.arange(b + 1)[:, None]
    pmf = hypergeom.pmf(x, N, n_k[None, :], b)
    q = x / b
    ent = np.where(x > 0, -q * np.log(np.where(x > 0, q, 1)), 0)
    assert got['tv'] == pytest.approx(0.5 * (pmf * np.abs(q - n_k / N)).sum(), abs=1e-9)
    assert got['entropy'] == pytest.approx((pmf * ent).sum(), abs=1e-9)
    assert got['distinct'] == pytest.approx((1 - pmf[0]).sum(), abs=1e-9)


@pytest.mark.parametrize('k, b', [(3, 8), (20, 256), (50, 64)])
def test_ideal_matches_brute_force(k, b):
    labels = sorted_labels(20_000, k, seed=k)
    exact, sim = ideal_mixing(labels, b), simulated_ideal(labels, b, n_perms=10, seed=1)
    for key in exact:
        assert sim[key] == pytest.approx(exact[key], rel=0.02, abs=2e-3), key


def test_issue_three_ideal_tv():
    "Issue 3 quotes TV ideal 0.103 for batches of 256 on a 100,000-cell, 20-cell-type file."
    rng = make_rng(0, 100)
    labels = rng.choice(20, 100_000, p=rng.dirichlet(np.full(20, 2.0)))
    assert ideal_mixing(labels, 256)['tv'] == pytest.approx(0.103, abs=0.005)


def test_batch_mixing_by_hand_and_label_types():
    glob = ['a'] * 6 + ['b'] * 3 + ['c'] * 1          # p = .6 .3 .1
    r = batch_mixing([['a', 'a'], ['b', 'c'], ['a', 'b', 'c', 'a', 'a', 'b', 'a', 'a', 'b', 'a']], glob)
    tvs = [0.5 * (0.4 + 0.3 + 0.1), 0.5 * (0.6 + 0.2 + 0.4), 0.0]
    assert r['tv'] == pytest.approx(np.mean(tvs))
    assert r['distinct'] == pytest.approx((1 + 2 + 3) / 3)
    assert r['entropy'] == pytest.approx(np.mean([0, np.log(2), -(.6 * np.log(.6) + .3 * np.log(.3) + .1 * np.log(.1))]))
    assert r['n_batches'] == 3
    codes = {'a': 0, 'b': 1, 'c': 2}
    r2 = batch_mixing([[codes[x] for x in bt] for bt in [['a', 'a'], ['b', 'c'], list('abcaababaa')]],
                      [codes[x] for x in glob])
    assert r2 == pytest.approx(r)
    r3 = batch_mixing([pd.Categorical(['a', 'a'])], pd.Categorical(glob))
    assert r3['tv'] == pytest.approx(tvs[0])


def test_batch_mixing_ideal_per_batch_size():
    "A short last batch gets the ideal of its own size."
    labels = sorted_labels(1000, 5)
    r = batch_mixing([labels[:100], labels[100:110]], labels)
    assert r['tv_ideal'] == pytest.approx((ideal_mixing(labels, 100)['tv'] + ideal_mixing(labels, 10)['tv']) / 2)


def test_orders_rank_as_expected_on_sorted_file():
    labels = sorted_labels()
    tv = {name: mixing_report(s, labels, 256).attrs['summary']['tv'] for name, s in default_strategies(16, 16).items()}
    ideal = ideal_mixing(labels, 256)['tv']
    seq, plain, strat, rnd = (tv['sequential'], tv['plain block 16 / fetch 16'], tv['block 16 / fetch 16 (stratified)'],
                              tv['random'])
    assert seq > 0.7 and plain < 0.5 * seq and abs(rnd - ideal) < 0.01 and plain > rnd + 0.02
    assert abs(strat - ideal) < 0.01                                  # stratified blocks mix like a permutation


@pytest.mark.parametrize('bs, ff', [(4, 16), (16, 16), (16, 64), (8, 32), (2, 4)])
def test_predicted_tv_close_to_measured(bs, ff):
    labels = sorted_labels(50_000)
    ideal = ideal_mixing(labels, 256)['tv']
    measured = np.mean([mixing_report(BlockShuffleStrategy(bs, ff, stratified=False), labels, 256, seed=s).attrs['summary']['tv']
                        for s in range(2)])
    assert measured == pytest.approx(predicted_tv(ideal, bs, ff), rel=0.08)


def test_mixing_report_columns_and_consistency():
    labels = np.array(list('abcd') * 250)
    rep = mixing_report(RandomShuffleStrategy(fetch_factor=2), labels, 64, seed=3, epoch=1)
    assert list(rep.columns) == ['batch', 'fetch', 'size', 'tv', 'entropy', 'distinct', 'runs_per_fetch']
    assert len(rep) == RandomShuffleStrategy().num_batches(1000, 64) and rep['size'].sum() == 1000
    assert rep['fetch'].max() == -(-len(rep) // 2) - 1
    plan = RandomShuffleStrategy(fetch_factor=2).plan(1000, 64, 3, 1, DistInfo())
    direct = batch_mixing([labels[bt] for bt in plan.batches()], labels)
    assert rep['tv'].mean() == pytest.approx(direct['tv']) and rep.attrs['ideal']['tv'] == pytest.approx(direct['tv_ideal'])
    sub = mixing_report(RandomShuffleStrategy(), labels, 32, indices=np.arange(0, 1000, 2))   # only a, c
    assert sub['size'].sum() == 500 and sub['distinct'].max() == 2


def test_batch_composition_shares():
    labels = np.repeat(['x', 'y'], [30, 10])
    comp = batch_composition(SequentialShuffleStrategy(), labels, 10)
    assert list(comp.columns) == ['x', 'y'] and comp.shape == (4, 2)
    np.testing.assert_allclose(comp.to_numpy(), [[1, 0], [1, 0], [1, 0], [0, 1]])


def test_grid_and_plots():
    import matplotlib.pyplot as plt
    labels = sorted_labels(5000, 8)
    grid = mixing_grid(labels, 64, block_sizes=(1, 8, 64), fetch_factors=(1, 8))
    assert len(grid) == 12 and {'stratified', 'tv', 'tv_predicted_plain', 'rows_per_run', 'blocks_per_fetch'} <= set(grid.columns)
    g = grid.set_index(['stratified', 'block_size', 'fetch_factor'])
    for st in (False, True):
        assert g.loc[(st, 64, 1), 'tv'] > g.loc[(st, 1, 1), 'tv'] and g.loc[(st, 64, 1), 'rows_per_run'] > 20
    assert g.loc[(True, 8, 8), 'tv'] < g.loc[(False, 8, 8), 'tv']
    fig = plot_mixing_grid(grid)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 5          # 2 fetch factors × plain/stratified + ideal
    fig2 = plot_composition(labels, 64, n_batches=10)
    assert len(fig2.axes) == 4 and all(len(ax.images) == 1 for ax in fig2.axes)
    assert fig2.axes[0].images[0].get_array().shape[1] == 10
    plt.close('all')


def test_explorer_redraws_on_slider_change():
    import matplotlib.pyplot as plt
    box = mixing_explorer(sorted_labels(3000, 6), batch_sizes=(32, 64), n_batches=8)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ['block size', 'fetch factor', 'batch size']
    sliders[1].value = 4
    sliders[2].value = 32
    assert box.drawn[-1] == (16, 4, 32) and len(box.drawn) == 3
    plt.close('all')


def test_load_bench_results(tmp_path, monkeypatch):
    assert load_bench_results(tmp_path / 'missing.json') is None
    p = tmp_path / 'bench' / 'results' / 'loaders.json'
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({'rows': [{'candidate': 'x', 'cells_per_s': 1.0}], 'ratios': {}}))
    assert load_bench_results(p)['rows'][0]['candidate'] == 'x'
    monkeypatch.chdir(tmp_path / 'bench')
    assert load_bench_results()['rows'][0]['cells_per_s'] == 1.0
    assert load_bench_results()['_path'].endswith('loaders.json')


def test_bench_table_and_tradeoff_plot():
    import matplotlib.pyplot as plt
    from spatial_dl.randomness import bench_table, plot_bench_tradeoff
    doc = {'medians': [dict(name='spatial_dl block', cells_per_s=3e4, tv=0.12, tv_ideal=0.1, extra=1),
                       dict(name='naive', cells_per_s=5e3, tv=0.10, tv_ideal=0.1),
                       dict(name='broken', cells_per_s=None, tv=None)]}
    t = bench_table(doc)
    assert list(t.columns) == ['cells_per_s', 'tv', 'tv_ideal'] and t.loc['naive', 'cells_per_s'] == 5e3
    fig = plot_bench_tradeoff(doc)
    assert len(fig.axes[0].collections) == 2                         # rows without numbers are left out
    assert len(plot_bench_tradeoff({'rows': []}).axes[0].collections) == 0
    plt.close('all')


@pytest.mark.parametrize('call, message', [
    (lambda: batch_mixing([], [0, 1]), 'label_batches is empty'),
    (lambda: batch_mixing([[5]], [0, 1]), 'label 5 that is not in global_labels'),
    (lambda: batch_mixing([[0]], []), 'global_labels must be a non-empty'),
    (lambda: batch_mixing([[0, 0, 0]], [0, 1]), 'more than global_labels'),
    (lambda: ideal_mixing([0, 1], 0), 'batch_size must be a positive integer'),
    (lambda: ideal_mixing([0, 1], 3), 'batch_size must be at most the number of rows'),
    (lambda: simulated_ideal([0, 1], 1, n_perms=0), 'n_perms must be a positive integer'),
    (lambda: predicted_tv(0.1, 4, 0), 'fetch_factor must be a positive integer'),
    (lambda: mixing_report(BlockShuffleStrategy(), [0, 1, 2], 2, indices=[5]), 'indices must be < len(labels)'),
    (lambda: mixing_report(BlockShuffleStrategy(), [0, 1, 2], 0), 'batch_size must be a positive integer'),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_plan_image_lanes_partition_the_file():
    from spatial_dl.randomness import plan_image, plot_plans
    import matplotlib.pyplot as plt
    for s in default_strategies(4, 2).values():
        img, lanes = plan_image(s, 300, 8, world_size=3, num_workers=2, drop_last=False)
        assert img.shape == (6, 300) and lanes[-1] == 'rank 2 worker 1'
        assert ((~np.isnan(img)).sum(0) == 1).all()
    fig = plot_plans(n=128, batch_size=8, world_size=2, num_workers=1)
    assert len(fig.axes) == 4
    plt.close('all')
