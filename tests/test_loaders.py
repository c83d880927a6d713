"Loaders: exactly-once delivery over ranks × workers, equal batch counts, anndata's values, epochs, fork/spawn."
import itertools
import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from spatial_dl.datasets import write_spatial_dataset
from spatial_dl.loaders import AnnDataset, make_dataloader, AnnDataLoader, csr_to_dense
from spatial_dl.shuffle import BlockShuffleStrategy


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('loaders')
    paths = write_spatial_dataset(d / 'spatial', n_samples=3, n_rows=10, n_cols=11, n_genes=60, seed=1)
    adatas = [ad.read_h5ad(p) for p in paths]
    X = np.vstack([a.X.toarray() for a in adatas])
    return paths, adatas, X


def _indices(loader):
    return [b['index'].numpy().copy() for b in loader]


KW = dict(batch_size=16, strategy='block', block_size=4, fetch_factor=2, seed=3)


@pytest.mark.parametrize('num_workers,drop_last', list(itertools.product([0, 1, 2], [False, True])))
def test_exactly_once_over_two_ranks(data, num_workers, drop_last):
    "2 ranks × {0,1,2} workers: every row once (at most once with drop_last), equal batch counts, len() is right."
    paths, adatas, X = data
    n = len(X)                                    # 330 rows: not a multiple of 2 × 16
    per_rank = []
    for rank in range(2):
        ds = AnnDataset(paths, rank=rank, world_size=2, drop_last=drop_last, **KW)
        batches = _indices(make_dataloader(ds, num_workers=num_workers))
        assert len(batches) == len(ds)
        if drop_last: assert all(len(b) == 16 for b in batches)
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1])
    rows = np.concatenate([np.concatenate(b) for b in per_rank])
    assert len(np.unique(rows)) == len(rows)                      # never twice
    if drop_last: assert len(rows) == (n // 32) * 32
    else: np.testing.assert_array_equal(np.sort(rows), np.arange(n))  # all of them


def test_pad_fills_every_batch(data):
    paths, adatas, X = data
    per_rank = [_indices(AnnDataset(paths, rank=r, world_size=2, pad=True, **KW)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1])
    assert all(len(b) == 16 for bs in per_rank for b in bs)
    rows = np.concatenate([np.concatenate(b) for b in per_rank])
    assert set(rows.tolist()) == set(range(len(X)))               # every row at least once


def test_same_order_whatever_num_workers(data):
    paths, adatas, X = data
    orders = []
    for nw in (0, 1, 2):
        ds = AnnDataset(paths, rank=1, world_size=2, **KW)
        orders.append(_indices(make_dataloader(ds, num_workers=nw)))
    for o in orders[1:]:
        assert len(o) == len(orders[0])
        for a, b in zip(o, orders[0]): np.testing.assert_array_equal(a, b)
    direct = _indices(AnnDataset(paths, rank=1, world_size=2, **KW))          # no DataLoader at all
    for a, b in zip(direct, orders[0]): np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('persistent', [False, True])
def test_new_order_per_epoch_reaches_workers(data, persistent):
    paths, adatas, X = data
    ds0 = AnnDataset(paths, **KW)
    ref = {}
    for e in (0, 1, 2):
        ds0.set_epoch(e); ref[e] = np.concatenate(_indices(ds0))
    assert not np.array_equal(ref[0], ref[1]) and not np.array_equal(ref[1], ref[2])
    for e in ref: np.testing.assert_array_equal(np.sort(ref[e]), np.arange(len(X)))
    ds = AnnDataset(paths, **KW)
    dl = make_dataloader(ds, num_workers=2, persistent_workers=persistent)
    for e in (0, 1, 2, 1):
        dl.sampler.set_epoch(e)                                   # what Lightning calls
        np.testing.assert_array_equal(np.concatenate(_indices(dl)), ref[e])
    other_seed = AnnDataset(paths, **{**KW, 'seed': 4})
    assert not np.array_equal(np.concatenate(_indices(other_seed)), ref[0])


@pytest.mark.parametrize('output', ['dense', 'sparse', 'scipy'])
@pytest.mark.parametrize('num_workers', [0, 2])
def test_values_equal_anndata(data, output, num_workers):
    paths, adatas, X = data
    ds = AnnDataset(paths, output=output, obs_keys=['cell_type', 'n_counts'], obsm_keys=['spatial'], **KW)
    spatial = np.vstack([a.obsm['spatial'] for a in adatas]).astype(np.float32)
    ct = np.concatenate([a.obs['cell_type'].astype(str).to_numpy() for a in adatas])
    nc = np.concatenate([a.obs['n_counts'].to_numpy() for a in adatas])
    cats = np.array(ds.obs_categories('cell_type'))
    seen = 0
    for b in make_dataloader(ds, num_workers=num_workers):
        idx = b['index'].numpy()
        x = b['X']
        if output == 'dense': assert x.dtype == torch.float32; x = x.numpy()
        elif output == 'sparse': assert x.layout == torch.sparse_csr; x = x.to_dense().numpy()
        else: assert sp.issparse(x); x = x.toarray()
        np.testing.assert_array_equal(x, X[idx])
        np.testing.assert_array_equal(b['spatial'].numpy(), spatial[idx])
        np.testing.assert_array_equal(cats[b['cell_type'].numpy()], ct[idx])
        np.testing.assert_allclose(b['n_counts'].numpy(), nc[idx])
        assert b['cell_type'].dtype == torch.int64
        seen += len(idx)
    assert seen == len(X)


def _adata(n, genes, seed):
    rng = np.random.default_rng(seed)
    m = sp.random(n, len(genes), density=0.3, format='csr', dtype=np.float32, random_state=rng)
    m.data = np.ceil(m.data * 5)
    a = ad.AnnData(m, obs=pd.DataFrame({'t': pd.Categorical(rng.choice(['x', 'y'], n))}, index=[f'c{seed}_{i}' for i in range(n)]),
                   var=pd.DataFrame(index=genes))
    a.layers['counts'] = (m * 2).tocsr()
    return a


def test_layer_and_gene_alignment(tmp_path):
    a1, a2 = _adata(40, [f'g{i}' for i in range(20)], 0), _adata(30, [f'g{i}' for i in range(10, 35)], 1)
    p1, p2 = tmp_path / 'a1.h5ad', tmp_path / 'a2.h5ad'
    a1.write_h5ad(p1); a2.write_h5ad(p2)
    ds = AnnDataset([p1, p2], batch_size=8, layer='counts', var_join='outer', strategy='random', fetch_factor=3)
    names = list(ds.var_names)
    assert names == [f'g{i}' for i in range(35)]
    ref = np.vstack([pd.DataFrame(a.layers['counts'].toarray(), columns=a.var_names).reindex(columns=names, fill_value=0).to_numpy()
                     for a in (a1, a2)])
    got = list(make_dataloader(ds, num_workers=1))
    for b in got: np.testing.assert_array_equal(b['X'].numpy(), ref[b['index'].numpy()])
    assert sum(len(b['index']) for b in got) == 70


def test_hooks_run_and_tokenizer_skips_densify(data):
    paths, adatas, X = data
    calls = []

    def before(batch):
        assert sp.issparse(batch['X']) and isinstance(batch['index'], np.ndarray)
        batch['total'] = np.asarray(batch['X'].sum(1)).ravel().astype(np.float32)
        return batch

    def after(batch):
        assert isinstance(batch['X'], torch.Tensor); calls.append(1)
        batch['X'] = batch['X'] * 2
        return batch

    for nw in (0, 2):
        for b in make_dataloader(AnnDataset(paths, before_dense=before, after_dense=after, **KW), num_workers=nw):
            idx = b['index'].numpy()
            np.testing.assert_array_equal(b['X'].numpy(), 2 * X[idx])
            np.testing.assert_allclose(b['total'].numpy(), X[idx].sum(1), rtol=1e-6)
    assert len(calls) == 2 * len(AnnDataset(paths, **KW))

    def tokens(batch):
        x = batch.pop('X')
        batch['n_genes'] = np.diff(x.indptr).astype(np.int64)
        return batch
    for nw in (0, 1, 2):
        n = 0
        for b in make_dataloader(AnnDataset(paths, before_dense=tokens, **KW), num_workers=nw):
            assert 'X' not in b
            np.testing.assert_array_equal(b['n_genes'].numpy(), (X[b['index'].numpy()] > 0).sum(1)); n += len(b['index'])
        assert n == len(X)



@pytest.mark.parametrize('num_workers', [0, 2])
def test_gzip_files_and_adata_raw(tmp_path, num_workers):
    "A gzip-compressed file next to a plain one, and layer='raw/X' (adata.raw with its own genes, aligned): anndata's values, each row once."
    a1, a2 = _adata(50, [f'g{i}' for i in range(20)], 2), _adata(35, [f'g{i}' for i in range(20)], 3)
    for a in (a1, a2): a.raw = a.copy(); a.X = a.X * 0.5          # raw counts in adata.raw, a scaled X
    a2.raw = a2[:, 5:].copy()                                     # the second file's raw has fewer genes
    p1, p2 = tmp_path / 'gz.h5ad', tmp_path / 'plain.h5ad'
    a1.write_h5ad(p1, compression='gzip'); a2.write_h5ad(p2)
    for layer, ref, kw in [(None, np.vstack([a1.X.toarray(), a2.X.toarray()]), {}),
                           ('raw/X', np.vstack([a1.raw.X.toarray(), np.hstack([np.zeros((35, 5), np.float32), a2.raw.X.toarray()])]),
                            dict(var_join='outer'))]:
        ds = AnnDataset([p1, p2], batch_size=8, layer=layer, strategy='random', fetch_factor=3, seed=1, **kw)
        got = list(make_dataloader(ds, num_workers=num_workers))
        for b in got: np.testing.assert_array_equal(b['X'].numpy(), ref[b['index'].numpy()])
        np.testing.assert_array_equal(np.sort(np.concatenate([b['index'].numpy() for b in got])), np.arange(85))

@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_workers_fork_and_spawn(data, method):
    "Workers started with fork or spawn (no inherited state) deliver the same batches as in-process loading."
    paths, adatas, X = data
    ds = AnnDataset(paths, rank=0, world_size=2, obs_keys=['cell_type'], **KW)
    ref = _indices(ds)
    got = list(make_dataloader(ds, num_workers=2, multiprocessing_context=method))
    assert len(got) == len(ref)
    for b, r in zip(got, ref):
        np.testing.assert_array_equal(b['index'].numpy(), r)
        np.testing.assert_array_equal(b['X'].numpy(), X[r])


def test_kept_batches_are_never_overwritten(data):
    "Dense buffers are pooled: batches the caller keeps must keep their values."
    paths, adatas, X = data
    kept = list(AnnDataset(paths, **KW))
    for b in kept: np.testing.assert_array_equal(b['X'].numpy(), X[b['index'].numpy()])


def test_csr_to_dense_sums_duplicates():
    m = sp.csr_matrix((np.array([1., 2., 3.], np.float32), np.array([1, 1, 0], np.int32), np.array([0, 2, 3], np.int32)),
                      shape=(2, 3))
    np.testing.assert_array_equal(csr_to_dense(m).numpy(), [[0, 3, 0], [3, 0, 0]])


def test_strategy_object_and_indices(data):
    paths, adatas, X = data
    idx = np.arange(0, len(X), 3)
    ds = AnnDataset(paths, batch_size=10, strategy=BlockShuffleStrategy(block_size=2, fetch_factor=2), indices=idx)
    rows = np.concatenate(_indices(ds))
    np.testing.assert_array_equal(np.sort(rows), idx)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_arguments(data, tmp_path):
    paths, adatas, X = data
    for bs in (0, -3, 2.5, 'a', True):
        with pytest.raises(ValueError, match='batch_size must be a positive integer'): AnnDataset(paths, batch_size=bs)
    with pytest.raises(ValueError, match=r'rank must be in \[0, world_size=2\)'): AnnDataset(paths, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r'rank must be in \[0, world_size=2\)'): AnnDataset(paths, rank=-1, world_size=2)
    with pytest.raises(ValueError, match='world_size must be >= 1'): AnnDataset(paths, rank=0, world_size=0)
    with pytest.raises(ValueError, match='give both rank and world_size'): AnnDataset(paths, world_size=2)
    with pytest.raises(ValueError, match='output must be one of'): AnnDataset(paths, output='numpy')
    with pytest.raises(ValueError, match="strategy must be one of .* did you mean 'random'"): AnnDataset(paths, strategy='randm')
    with pytest.raises(ValueError, match='set them on the BlockShuffleStrategy'):
        AnnDataset(paths, strategy=BlockShuffleStrategy(), fetch_factor=2)
    with pytest.raises(ValueError, match='drop_last and pad are exclusive'): AnnDataset(paths, drop_last=True, pad=True)
    with pytest.raises(ValueError, match='out of range'): AnnDataset(paths, indices=[0, len(X)])
    with pytest.raises(TypeError, match='before_dense must be callable'): AnnDataset(paths, before_dense=3)
    with pytest.raises(KeyError, match="obsm key 'X_umap' not found"): AnnDataset(paths, obsm_keys=['X_umap'])
    with pytest.raises(FileNotFoundError, match='nope.h5ad: no such file'): AnnDataset(tmp_path / 'nope.h5ad')
    with pytest.raises(ValueError, match='drop_last=True leaves no batch'):
        AnnDataset(paths, batch_size=400, drop_last=True)
    ds = AnnDataset(paths, **KW)
    with pytest.raises(TypeError, match='before_dense must return a dict'):
        next(iter(AnnDataset(paths, before_dense=lambda b: None, **KW)))
    for k, v in dict(shuffle=True, batch_size=4, sampler=[0], batch_sampler=[[0]], drop_last=True, collate_fn=list).items():
        with pytest.raises(ValueError, match=f'{k}= is not accepted'): make_dataloader(ds, **{k: v})
    with pytest.raises(ValueError, match='num_workers must be a non-negative integer'): make_dataloader(ds, num_workers=-1)
    with pytest.raises(TypeError, match='dataset must be an AnnDataset'): AnnDataLoader([1, 2])
    with pytest.raises(ValueError, match='epoch must be a non-negative integer'): ds.set_epoch(-1)


def test_threads_keep_plan_order_and_stop_early(data):
    "Any number of reader threads (or none) gives the plan's order; leaving the loop early stops the threads."
    import threading, time
    paths, adatas, X = data
    ref = _indices(AnnDataset(paths, prefetch=False, **KW))
    for t in (1, 2, 3, 5):
        got = _indices(AnnDataset(paths, num_threads=t, **KW))
        assert len(got) == len(ref)
        for a, b in zip(got, ref): np.testing.assert_array_equal(a, b)
    base = threading.active_count()
    it = iter(AnnDataset(paths, num_threads=3, **KW))
    next(it)
    it.close()
    deadline = time.time() + 10
    while threading.active_count() > base and time.time() < deadline: time.sleep(0.05)
    assert threading.active_count() <= base
    with pytest.raises(ValueError, match='num_threads must be a positive integer'): AnnDataset(paths, num_threads=0)


def test_error_in_a_thread_reaches_the_caller(data):
    paths, adatas, X = data
    def boom(batch):
        if batch['index'][0] % 2 == 0: raise RuntimeError('tokenizer failed')
        return batch
    with pytest.raises(RuntimeError, match='tokenizer failed'): list(AnnDataset(paths, before_dense=boom, **KW))
    with pytest.raises(RuntimeError, match='tokenizer failed'):
        list(make_dataloader(AnnDataset(paths, before_dense=boom, **KW), num_workers=1))


def test_plain_dataloader_over_the_dataset(data):
    "A plain torch DataLoader (batch_size=None) over the dataset itself also delivers every row once, with right values."
    from torch.utils.data import DataLoader
    paths, adatas, X = data
    ds = AnnDataset(paths, **KW)
    got = list(DataLoader(ds, batch_size=None, num_workers=2))
    rows = np.concatenate([b['index'].numpy() for b in got])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(X)))
    for b in got: np.testing.assert_array_equal(b['X'].numpy(), X[b['index'].numpy()])


@pytest.mark.parametrize('persistent', [False, True])
def test_worker_buffers_recycled_without_corruption(data, persistent):
    "Many small fetches: workers reuse their shared-memory buffers many times over; every batch keeps its values."
    paths, adatas, X = data
    ds = AnnDataset(paths, batch_size=4, strategy='random', fetch_factor=1, seed=5)
    dl = make_dataloader(ds, num_workers=2, persistent_workers=persistent)
    for epoch in (0, 1):
        dl.set_epoch(epoch)
        kept = list(dl)                                   # keep every batch: nothing may be overwritten later
        assert len(kept) == len(ds) and len(kept) > 4 * 10   # far more fetches than buffers per worker
        for b in kept: np.testing.assert_array_equal(b['X'].numpy(), X[b['index'].numpy()])
        np.testing.assert_array_equal(np.sort(np.concatenate([b['index'].numpy() for b in kept])), np.arange(len(X)))


def test_exit_hook_stops_unfinished_loops_and_workers_persist_by_default(data):
    "An iterator left open (never closed, still referenced) has its threads stopped by the exit hook; workers persist."
    import time
    from spatial_dl import loaders as L
    paths, adatas, X = data
    it = iter(AnnDataset(paths, num_threads=2, **KW))
    next(it)
    live = [t for _, ths in L._LIVE.values() for t in ths]
    assert live and any(t.is_alive() for t in live)
    L._stop_pipelines()
    deadline = time.time() + 10
    while any(t.is_alive() for t in live) and time.time() < deadline: time.sleep(0.05)
    assert not any(t.is_alive() for t in live)
    it.close()
    assert make_dataloader(AnnDataset(paths, **KW), num_workers=1).persistent_workers is True
    assert make_dataloader(AnnDataset(paths, **KW), num_workers=1, persistent_workers=False).persistent_workers is False
    assert make_dataloader(AnnDataset(paths, **KW), num_workers=0).persistent_workers is False


def test_persistent_workers_keep_arenas_across_epochs_and_abandoned_epochs(data):
    "Workers reuse their shared-memory arenas from epoch to epoch; an epoch left after a few batches corrupts nothing later."
    paths, adatas, X = data
    ds = AnnDataset(paths, batch_size=4, strategy='random', fetch_factor=2, seed=7)
    dl = make_dataloader(ds, num_workers=2)
    it = iter(dl)
    first = [next(it) for _ in range(3)]                 # abandon epoch 0 with fetches still in flight
    del it
    for epoch in (1, 2, 3):
        dl.set_epoch(epoch)
        kept = list(dl)
        for b in kept + first: np.testing.assert_array_equal(b['X'].numpy(), X[b['index'].numpy()])
        np.testing.assert_array_equal(np.sort(np.concatenate([b['index'].numpy() for b in kept])), np.arange(len(X)))
    assert dl._held, "the main process keeps the workers' arenas mapped across epochs"


def _compiled_flag(batch):
    from spatial_dl.readers import _Compiled
    batch['compiled'] = np.full(len(batch['index']), _Compiled.kernel is not None)
    return batch


def test_workers_switch_to_the_compiled_reader_after_their_first_fetches(tmp_path):
    "A worker reads its first two large fetches through Python (no load delay), then loads the compiled reader."
    pytest.importorskip('numba')
    from spatial_dl.datasets import write_cells_h5ad
    p = write_cells_h5ad(tmp_path / 'cells.h5ad', n_obs=12_288, n_vars=200, nnz_per_cell=20, progress=False)
    ds = AnnDataset(p, batch_size=256, strategy='random', fetch_factor=4, seed=0, before_dense=_compiled_flag)
    dl = make_dataloader(ds, num_workers=1, multiprocessing_context='spawn')   # nothing inherited from this process
    flags = [bool(b['compiled'][0]) for b in dl]
    assert len(flags) == 48
    assert not any(flags[:8]), flags          # the first batch alone, then fetches 1 and 2 (1,024 rows each): Python
    assert all(flags[-16:]), flags            # later fetches: the compiled loop


def _batches(ds, epoch=None):
    if epoch is not None: ds.set_epoch(epoch)
    return [(b['index'].numpy().copy(), b['X'].numpy().copy()) for b in ds]


@pytest.mark.parametrize('strategy', ['block', 'random', 'sequential'])
def test_next_epoch_read_ahead_gives_the_planned_batches(data, strategy):
    "The next epoch's first fetch, read ahead during the last one, is used when the guess is right and dropped when not."
    paths, adatas, X = data
    kw = dict(batch_size=8, strategy=strategy, fetch_factor=2, seed=11)
    ds = AnnDataset(paths, **kw)
    for epoch in (0, 1, 2, 7, 3):                        # 7 and 3: the read-ahead guessed 3 and 8, wrongly
        got = _batches(ds, epoch)
        ref = _batches(AnnDataset(paths, **kw), epoch)   # a fresh dataset: nothing read ahead
        assert len(got) == len(ref) == len(ds)
        for (i, x), (j, y) in zip(got, ref):
            np.testing.assert_array_equal(i, j); np.testing.assert_array_equal(x, X[i]); np.testing.assert_array_equal(x, y)
        assert ds._ahead is not None and np.array_equal(ds._ahead.rows, ds.plan(epoch + 1).fetches[0])
    plain = AnnDataset(paths, **kw)                      # set_epoch never called: the guess is the same epoch again
    a, b = _batches(plain), _batches(plain)
    assert np.array_equal(plain._ahead.rows, plain.plan(0).fetches[0])
    for (i, x), (j, y) in zip(a, b): np.testing.assert_array_equal(i, j); np.testing.assert_array_equal(x, y)


def test_read_ahead_is_used_and_skipped_batches_are_not(data):
    "A right guess is consumed (no second read of those rows); a resumed epoch (skip) never takes a whole-fetch guess."
    paths, adatas, X = data
    ds = AnnDataset(paths, batch_size=8, strategy='block', block_size=4, fetch_factor=2, seed=2)
    _batches(ds, 0)
    ahead = ds._ahead
    reads = []
    orig = ds.reader.read
    ds.reader.read = lambda rows: reads.append(np.array(rows)) or orig(rows)
    _batches(ds, 1)
    assert ahead.blk is not None and not any(np.array_equal(r, ahead.rows) for r in reads)   # not read twice
    ds.set_epoch(2); ds.skip = 3
    got = [b['index'].numpy().copy() for b in ds]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(ds.plan(2).fetches)[3 * 8:])
    del ds.reader.read
    assert ds._ahead is not None and pickle.loads(pickle.dumps(ds)).__dict__.get('_ahead') is None


def test_failed_read_ahead_falls_back_to_a_normal_read(data):
    "A read-ahead whose read failed is not used: the loop reads the fetch itself (and raises if that fails too)."
    from spatial_dl.loaders import _ReadAhead
    paths, adatas, X = data
    ds = AnnDataset(paths, batch_size=8, strategy='random', fetch_factor=2, seed=1)
    class Broken:
        def read(self, rows): raise OSError('disk went away')
    first = ds.plan(0).fetches[0]
    ahead = _ReadAhead(Broken(), first)
    assert ahead.take(first) is None and isinstance(ahead.exc, OSError)
    assert ahead.take(first[::-1]) is None                   # other rows: never the guess
    ds._ahead = _ReadAhead(Broken(), first)
    got = [(b['index'].numpy(), b['X'].numpy()) for b in ds]
    np.testing.assert_array_equal(np.concatenate([i for i, _ in got]), np.concatenate(ds.plan(0).fetches))
    for i, x in got: np.testing.assert_array_equal(x, X[i])


def test_plans_are_kept_for_reuse_but_follow_every_change(data):
    "The next epoch's plan, made at the end of an epoch, is reused; a new seed/epoch/batch size makes a new one; not pickled."
    paths, adatas, X = data
    ds = AnnDataset(paths, **KW)
    ds.set_epoch(1)
    p1 = ds.plan()
    assert ds.plan(1) is p1 and ds.plan(2) is not p1
    ds.seed = 4; p4 = ds.plan(1)
    assert p4 is not p1 and p4.seed == 4 and not all(np.array_equal(a, b) for a, b in zip(p4.fetches, p1.fetches))
    ds.batch_size = 8; assert ds.plan(1).batch_size == 8
    assert len(ds.__dict__['_plans']) <= 2 and '_plans' not in pickle.loads(pickle.dumps(ds)).__dict__
    list(ds)                                       # an epoch reads ahead into the next one: that plan is then reused
    made = [v for k, v in ds.__dict__['_plans'].items() if k[4] == 2]
    assert len(made) == 1 and ds.plan(2) is made[0]
