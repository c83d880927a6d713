"Tests for spatial_dl.tokenizers: rules against per-cell references, medians, neighbourhoods, stFormer rules, writers, bad input."
import os, pickle, json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import anndata as ad
from hypothesis import given, settings, strategies as st, HealthCheck

import spatial_dl.tokenizers as T
from spatial_dl.tokenizers import (TokenDictionary, RankValueTokenizer, BinnedTokenizer, MedianAccumulator, TokenizerError,
                                   gene_medians, save_gene_medians, load_gene_medians, tokenize_h5ad, load_example_lengths,
                                   TokenizeTransform, BinnedTransform, tokenize_main, spatial_graph, value_key)
from spatial_dl.readers import H5adCollection
from spatial_dl.datasets import write_spatial_dataset, simulate_spatial, hex_neighbors


# ------------------------------------------------------------------------------------------------ helpers
def reference_tokens(X, genes, td, med, L, totals=None, target=1e4):
    "Per-cell reference of the documented rule: value = count*(target/total)*(1/median), desc by value_key, ties by token id."
    X = sp.csr_matrix(X)
    tot = np.asarray(X.sum(1, dtype=np.float64)).ravel() if totals is None else np.asarray(totals, float)
    tok = td.lookup(genes)
    out = []
    for i in range(X.shape[0]):
        a, b = X.indptr[i], X.indptr[i + 1]
        if tot[i] <= 0: out.append([]); continue
        c, d = X.indices[a:b], X.data[a:b].astype(np.float64)
        ok = np.array([tok[j] >= 0 and genes[j] in med for j in c], bool) & (d > 0)
        c, d = c[ok], d[ok]
        v = d * (target / tot[i]) * np.array([1.0 / med[genes[j]] for j in c])
        t = tok[c]
        out.append(t[np.lexsort((t, -value_key(v)))][:L].tolist())
    return out


@pytest.fixture(scope='module')
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp('slides')
    return write_spatial_dataset(d, n_samples=2, n_rows=12, n_cols=12, n_genes=200, seed=1)


@pytest.fixture(scope='module')
def vocab(slides):
    med = gene_medians(slides, progress=False)
    return TokenDictionary.build(sorted(med), True, True), med


@pytest.fixture(params=['numpy'] + (['numba'] if T._numba_fill() is not None else []))
def engine(request, monkeypatch):
    "Run a test with the pure numpy steps and (when numba is importable) the fused numba pass."
    if request.param == 'numpy': monkeypatch.setattr(T, '_NUMBA', False)
    return request.param


# ------------------------------------------------------------------------------------------------ rank-value rules
counts = st.integers(0, 5)

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_block_matches_per_cell_reference(data, engine):
    n, g = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 15))
    X = np.array(data.draw(st.lists(st.lists(counts, min_size=g, max_size=g), min_size=n, max_size=n)), np.float32)
    genes = [f"g{j}" for j in range(g)]
    med = {f"g{j}": float(data.draw(st.sampled_from([0.5, 1.0, 2.0, 3.0]))) for j in range(g) if data.draw(st.booleans()) or j == 0}
    td = TokenDictionary.build(data.draw(st.permutations(genes)))
    L = data.draw(st.integers(1, 20))
    tok = RankValueTokenizer(td, med, L)
    got = [a.tolist() for a in tok.tokenize_block(sp.csr_matrix(X), genes)]
    assert got == reference_tokens(X, genes, td, med, L)
    assert tok.stats['zero_cells'] == int((X.sum(1) == 0).sum())


def test_column_order_and_block_split_do_not_matter(vocab, slides, engine):
    td, med = vocab
    a = ad.read_h5ad(slides[0])
    tok = RankValueTokenizer(td, med, 64)
    full = tok.tokenize_adata(a)
    perm = np.random.default_rng(0).permutation(a.n_vars)
    permuted = tok.tokenize_block(a.X[:, perm], a.var_names[perm])
    halves = tok.tokenize_block(a.X[:50], a.var_names) + tok.tokenize_block(a.X[50:], a.var_names)
    assert all(np.array_equal(x, y) for x, y in zip(full, permuted))
    assert all(np.array_equal(x, y) for x, y in zip(full, halves))
    assert full == full and all(len(x) == min(64, np.diff(a.X.indptr)[i]) for i, x in enumerate(full))


def test_truncation_framing_and_unknown_genes():
    td = TokenDictionary.build(['a', 'b', 'c'], cls_token=True, eos_token=True)      # a=4, b=5, c=6
    med = {'a': 1.0, 'b': 1.0, 'c': 1.0}
    X = sp.csr_matrix(np.array([[3, 2, 1, 7]], np.float32))                         # 'zz' is unknown
    genes = ['a', 'b', 'c', 'zz']
    assert RankValueTokenizer(td, med, 2).tokenize_block(X, genes)[0].tolist() == [4, 5]
    assert RankValueTokenizer(td, med, 4, special_tokens=True).tokenize_block(X, genes)[0].tolist() == [2, 4, 5, 3]
    assert RankValueTokenizer(td, med, 3, special_tokens=True).tokenize_block(X, genes)[0].tolist() == [2, 4, 3]
    t = RankValueTokenizer(td, med, 8); t.tokenize_block(X, genes)
    assert t.stats['unknown_genes'] == 1
    # the total includes the unknown gene's counts (whole-transcriptome total), as Geneformer's n_counts does
    assert t.tokenize_block(X, genes, totals=[13.0])[0].tolist() == [4, 5, 6]


def test_ties_break_by_token_id_whatever_the_dictionary_order():
    X = sp.csr_matrix(np.array([[2, 2, 2]], np.float32))
    for order in (['x', 'y', 'z'], ['z', 'x', 'y']):
        td = TokenDictionary.build(order)
        ids = RankValueTokenizer(td, {'x': 1., 'y': 1., 'z': 1.}, 5).tokenize_block(X, ['x', 'y', 'z'])[0]
        assert ids.tolist() == sorted(ids.tolist())


def test_duplicate_gene_columns_are_summed():
    td = TokenDictionary.build(['a', 'b'])
    X = sp.csr_matrix(np.array([[3, 2, 2]], np.float32))      # b appears twice: 4 > 3
    assert RankValueTokenizer(td, {'a': 1., 'b': 1.}, 5).tokenize_block(X, ['a', 'b', 'b'])[0].tolist() == [3, 2]


# ------------------------------------------------------------------------------------------------ medians
@pytest.mark.parametrize('chunk', [7, 64, 10_000])
def test_streaming_medians_equal_exact(slides, chunk):
    adatas = [ad.read_h5ad(p) for p in slides]
    X = sp.vstack([a.X for a in adatas]).tocsc()
    tot = np.concatenate([np.asarray(a.X.sum(1, dtype=np.float64)).ravel() for a in adatas])
    exact = {}
    for j, g in enumerate(adatas[0].var_names):
        c = X[:, j]; v = c.data.astype(np.float64) / tot[c.indices] * 1e4; v = v[v > 0]
        if len(v): exact[g] = float(np.median(v))
    for method in ('exact', 'two-pass'):
        got = gene_medians(slides, method=method, chunk_size=chunk, progress=False)
        assert got.keys() == exact.keys()
        assert all(abs(got[g] - exact[g]) <= 1e-12 * exact[g] for g in exact)
    hist = gene_medians(slides, method='histogram', chunk_size=chunk, progress=False)
    assert max(abs(hist[g] / exact[g] - 1) for g in exact) < 10 ** 0.01 - 1


def test_medians_merge_in_any_order_and_in_parallel(slides):
    one = gene_medians(slides, progress=False)
    rev = gene_medians(slides[::-1], progress=False)
    par = gene_medians(slides, num_workers=2, method='two-pass', progress=False)
    assert one == rev
    assert all(abs(par[g] - one[g]) <= 1e-12 * one[g] for g in one)


def test_medians_pickle_roundtrip_and_bad_files(tmp_path):
    p = save_gene_medians({'ENSG1': 2.5, 'ENSG2': 1}, tmp_path / 'm.pkl')
    assert load_gene_medians(p) == {'ENSG1': 2.5, 'ENSG2': 1.0}
    with open(tmp_path / 'bad.pkl', 'wb') as f: pickle.dump({'g': 0.0}, f)
    with pytest.raises(TokenizerError, match='bad.pkl: 1 medians are not positive'): load_gene_medians(tmp_path / 'bad.pkl')
    with open(tmp_path / 'list.pkl', 'wb') as f: pickle.dump([1], f)
    with pytest.raises(TokenizerError, match='expected a pickled dict'): load_gene_medians(tmp_path / 'list.pkl')


def test_token_dictionary_reads_geneformer_style_pickle(tmp_path):
    with open(tmp_path / 'td.pkl', 'wb') as f: pickle.dump({'<pad>': 0, '<mask>': 1, '<cls>': 2, '<eos>': 3, 'ENSG0001': 4}, f)
    td = TokenDictionary.load(tmp_path / 'td.pkl')
    assert (td.cls_id, td.eos_id, td['ENSG0001'], td.genes) == (2, 3, 4, ['ENSG0001'])
    td.save(tmp_path / 'td.json')
    assert json.loads((tmp_path / 'td.json').read_text()) == td.to_dict()


# ------------------------------------------------------------------------------------------------ neighbourhoods
def test_neighborhood_on_hex_grid_with_known_neighbours():
    a = simulate_spatial(n_samples=1, n_rows=6, n_cols=6, n_genes=40, seed=2, with_graph=True)[0]
    A = hex_neighbors(6, 6)
    med = {g: 1.0 + (i % 5) for i, g in enumerate(a.var_names)}
    td = TokenDictionary.build(a.var_names)
    L = 30
    got = RankValueTokenizer(td, med, L, mode='neighborhood').tokenize_adata(a)
    X = a.X.toarray().astype(np.float64)
    genes = list(a.var_names)
    tot = X.sum(1)
    for i in (0, 7, 20, 35):
        nb = A[i].indices
        assert 2 <= len(nb) <= 6
        spot = reference_tokens(X[i:i + 1], genes, td, med, L)[0]
        neigh = reference_tokens(X[nb].sum(0, keepdims=True), genes, td, med, L, totals=[tot[nb].sum()])[0]
        assert got[i].tolist() == spot + neigh


@pytest.mark.skipif(T._numba_fill() is None, reason='numba is not installed')
@pytest.mark.parametrize('mode,special,L,threads', [('spot', False, 2048, 1), ('spot', True, 20, 2), ('neighborhood', False, 25, 2),
                                                    ('neighborhood', True, 2048, 1), ('neighborhood', False, 2048, 2)])
def test_compiled_kernels_equal_numpy_steps(slides, vocab, monkeypatch, mode, special, L, threads):
    "Same ids and lengths from the compiled kernels (1 or 2 threads, padded or ragged) as from the numpy steps, ties and truncation included."
    td, med = vocab
    a = ad.read_h5ad(slides[0])
    X = sp.csr_matrix(sp.diags((np.arange(a.n_obs) != 3).astype(np.float32)) @ a.X); X.eliminate_zeros()   # spot 3: zero counts
    a.X = X
    A = spatial_graph(a.obsm['spatial']); t = np.asarray(X.sum(1), np.float64).ravel()
    def run():
        tok = RankValueTokenizer(td, med, L, mode=mode, special_tokens=special, num_threads=threads)
        nb = dict(neighbor_rows=(A, X, t)) if mode == 'neighborhood' else {}
        padded = tok.tokenize_block_padded(X, a.var_names, **nb)
        given = tok.tokenize_block_padded(X, a.var_names, neighbor_X=A @ X, neighbor_totals=A @ t) if mode == 'neighborhood' else padded
        return padded, given, [x.tolist() for x in tok.tokenize_adata(a)], dict(tok.stats)
    fast = run()
    monkeypatch.setattr(T, '_NUMBA', False)
    slow = run()
    for (i1, l1), (i2, l2) in [(fast[0], slow[0]), (fast[1], slow[1]), (fast[0], fast[1])]:
        assert np.array_equal(l1, l2) and np.array_equal(i1, i2)
    assert fast[2] == slow[2] and fast[3] == slow[3]
    assert fast[2][3] == [] and all(len(x) for i, x in enumerate(fast[2]) if i != 3)


@pytest.mark.skipif(T._numba_fill() is None, reason='numba is not installed')
@pytest.mark.parametrize('density', [0.05, 0.6])   # short rows: a sort per slab of rows; long rows (> 700 genes): a sort per row
def test_list_and_padded_outputs_of_the_kernels_equal_the_numpy_steps(monkeypatch, density):
    rng = np.random.default_rng(11)
    genes = [f"g{j}" for j in range(1500)]
    med = {g: float(rng.integers(1, 5)) for g in genes[:1400]}
    td = TokenDictionary.build(rng.permutation(genes))
    X = sp.random(64, 1500, density=density, format='csr', random_state=12, data_rvs=lambda k: rng.integers(1, 4, k)).astype(np.float32)
    def run():
        tok = RankValueTokenizer(td, med, 800, num_threads=2)      # long rows are truncated to 800
        return tok.tokenize_block_padded(X, genes), [x.tolist() for x in tok.tokenize_block(X, genes)]
    (fi, fl), flist = run()
    monkeypatch.setattr(T, '_NUMBA', False)
    (si, sl), slist = run()
    assert np.array_equal(fl, sl) and np.array_equal(fi, si) and flist == slist
    assert flist == [r[:l].tolist() for r, l in zip(si, sl)] and (sl == 800).any() == (density > 0.5)


@pytest.mark.skipif(T._numba_fill() is None, reason='numba is not installed')
def test_neighbour_kernel_with_stored_zeros_zero_weights_and_unknown_genes(monkeypatch):
    "The fused neighbour sums list a column again after a zero was added to it; those repeats and unknown genes add no token."
    rng = np.random.default_rng(8)
    genes = [f"g{j}" for j in range(120)]
    med = {g: float(rng.integers(1, 5)) for g in genes[::2] + genes[1::6]}      # about 60% of the genes known
    td = TokenDictionary.build(rng.permutation(genes))
    X = sp.random(200, 120, density=0.2, format='csr', random_state=9, data_rvs=lambda k: rng.integers(1, 6, k)).astype(np.float32)
    X.data[::7] = 0                                                             # explicitly stored zeros
    M = sp.random(200, 200, density=0.03, format='csr', random_state=10, data_rvs=lambda k: rng.integers(0, 3, k)).astype(np.float32)
    assert (M.data == 0).any() and (X.data == 0).any()
    t = np.asarray(X.sum(1), np.float64).ravel()
    def run():
        tok = RankValueTokenizer(td, med, 40, mode='neighborhood', num_threads=2)
        return tok.tokenize_block_padded(X, genes, t, neighbor_rows=(M, X, t))
    (fi, fl), _ = run(), monkeypatch.setattr(T, '_NUMBA', False)
    si, sl = run()
    assert np.array_equal(fl, sl) and np.array_equal(fi, si) and fl.max() > 40


@pytest.mark.skipif(T._numba_fill() is None, reason='numba is not installed')
def test_all_known_genes_fast_path_and_its_fallbacks(monkeypatch):
    "Spot blocks whose genes are all known skip the scan; stored zeros, zero totals and bad values still give the numpy steps' answer."
    rng = np.random.default_rng(5)
    genes = [f"g{j}" for j in range(300)]
    med = {g: float(rng.integers(1, 5)) for g in genes}
    td = TokenDictionary.build(rng.permutation(genes))
    X = sp.random(400, 300, density=0.3, format='csr', random_state=6, data_rvs=lambda k: rng.integers(1, 6, k)).astype(np.float32)
    Xz = X.copy(); Xz.data[5] = 0                                       # an explicitly stored zero
    tot = np.asarray(X.sum(1)).ravel(); tot[7] = 0                       # a given zero total
    cases = [(X, None), (Xz, None), (X, tot)]
    def run():
        tok = RankValueTokenizer(td, med, 64, special_tokens=False, num_threads=2)
        return [tok.tokenize_block_padded(A, genes, t) for A, t in cases], dict(tok.stats)
    fast, fs = run()
    monkeypatch.setattr(T, '_NUMBA', False)
    slow, ss = run()
    for (a, la), (b, lb) in zip(fast, slow): assert np.array_equal(la, lb) and np.array_equal(a, b)
    assert fs == ss and fast[2][1][7] == 0
    monkeypatch.setattr(T, '_NUMBA', None)
    with pytest.raises(TokenizerError, match='non-integer'):
        RankValueTokenizer(td, med, 64).tokenize_block_padded(X * 0.5, genes)


def test_array_pool_reuses_only_unreferenced_buffers():
    pool = T._ArrayPool(max_bytes=1 << 20, max_buffers=4)
    a = pool.array((10, 10), np.int64); a[:] = 7
    b = pool.array((10, 10), np.int64); b[:] = 8
    assert not np.shares_memory(a, b) and (a == 7).all()              # a is still referenced: not handed out again
    addr = a.__array_interface__['data'][0]
    view = a[2:]
    del a
    assert not np.shares_memory(pool.array((10, 10), np.int64), view)  # a view of it is alive: still not reused
    del view
    assert pool.array((10, 10), np.int64).__array_interface__['data'][0] == addr   # nothing refers to it any more: reused
    big = pool.array((1 << 18,), np.int64)                             # over max_bytes: a plain allocation
    assert big.base is None and big.nbytes == 1 << 21


@pytest.mark.parametrize('method,kw', [('delaunay', {}), ('knn', {'n_neighbors': 3}), ('radius', {'radius': 1.5})])
def test_spatial_graphs_are_symmetric_without_self_loops(method, kw):
    xy = np.random.default_rng(0).random((60, 2)) * 6
    A = spatial_graph(xy, method, **kw)
    assert (A != A.T).nnz == 0 and A.diagonal().sum() == 0 and set(np.unique(A.data)) == {1.0}
    if method == 'radius':
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        assert A.nnz == int(((d <= 1.5) & (d > 0)).sum())


def test_neighborhood_needs_coordinates(tmp_path):
    a = ad.AnnData(sp.csr_matrix(np.ones((3, 2), np.float32)), var=pd.DataFrame(index=['a', 'b']))
    tok = RankValueTokenizer(TokenDictionary.build(['a', 'b']), {'a': 1, 'b': 1}, 4, mode='neighborhood')
    with pytest.raises(TokenizerError, match=r"s9.h5ad: mode='neighborhood' needs obsp"): tok.tokenize_adata(a, where='s9.h5ad')
    a.obsm['spatial'] = np.array([[0, 0], [1, np.nan], [2, 0]])
    with pytest.raises(TokenizerError, match='1 spots have missing'): tok.tokenize_adata(a, where='s9.h5ad')


# ------------------------------------------------------------------------------------------------ stFormer rules
def test_stformer_compat_hand_worked():
    # genes a,b,c,d with medians 1,2,1,1; spot 0 counts (4,4,0,0), n_counts 8 → a: 5000, b: 2500, then fillers c, d
    td = TokenDictionary.build(['a', 'b', 'c', 'd'])                       # ids 2..5
    med = {'a': 1., 'b': 2., 'c': 1., 'd': 1.}
    X = sp.csr_matrix(np.array([[4, 4, 0, 0], [0, 0, 6, 2], [1, 0, 0, 0]], np.float32))
    obs = pd.DataFrame({'n_counts': [8.0, 8.0, 0.9]}, index=['s0', 's1', 's2'])   # 0.9 → int 0 → dropped
    a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=['a', 'b', 'c', 'd']))
    a.obsp['spatial_connectivities'] = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]], np.float32))
    tok = RankValueTokenizer(td, med, 2, mode='neighborhood', stformer_compat=True)
    out = tok.tokenize_adata(a)
    assert out[2].tolist() == [] and tok.stats['zero_cells'] == 1
    assert out[0][:2].tolist() == [2, 3]            # a (5000) then b (2500)
    # spot 0's neighbours: spot 1 only (spot 2 was dropped with n_counts 0): c=6, d=2 over spot 0's total → [c, d]
    assert out[0][2:].tolist() == [4, 5]
    assert out[1][:2].tolist() == [4, 5] and out[1][2:].tolist() == [2, 3]
    assert all(len(o) == 4 for o in out[:2])         # always min(n_genes, L) per part: fillers included


def test_stformer_compat_zero_fillers_and_normalized_detection():
    td = TokenDictionary.build(['a', 'b', 'c'])
    med = {'a': 1., 'b': 4., 'c': 1.}
    raw = sp.csr_matrix(np.array([[0, 4, 0]], np.float32))
    out = RankValueTokenizer(td, med, 10, stformer_compat=True).tokenize_block(raw, ['a', 'b', 'c'])[0]
    assert out[0] == 3 and sorted(out[1:].tolist()) == [2, 4]       # b first, then both unexpressed genes as fillers
    norm = sp.csr_matrix(np.array([[0.5, 1.5, 0.25]], np.float32))  # non-integer row sum: values divided by medians only
    out = RankValueTokenizer(td, med, 10, stformer_compat=True).tokenize_block(norm, ['a', 'b', 'c'])[0]
    assert out.tolist() == [2, 3, 4]                                # 0.5, 0.375, 0.25
    with pytest.raises(TokenizerError, match='non-integer'): RankValueTokenizer(td, med, 10).tokenize_block(norm, ['a', 'b', 'c'])
    assert RankValueTokenizer(td, med, 10, allow_normalized=True).tokenize_block(norm, ['a', 'b', 'c'])[0].tolist() == [2, 3, 4]


def test_stformer_delaunay_counts_shared_edges_twice():
    xy = np.array([[0, 0], [1, 0], [0, 1], [1, 1.1]])
    A = T._stformer_delaunay(xy)
    assert sorted(np.unique(A.data).tolist()) == [1.0, 2.0] and A.sum() == 2 * 6   # 5 edges, the diagonal shared by 2 triangles
    assert set(np.unique(spatial_graph(xy).data).tolist()) == {1.0}


# ------------------------------------------------------------------------------------------------ on disk / on the fly
@pytest.mark.parametrize('mode', ['spot', 'neighborhood'])
def test_on_disk_equals_on_the_fly_across_ranks_and_workers(tmp_path, slides, vocab, mode):
    import torch
    from datasets import load_from_disk
    from spatial_dl.loaders import AnnDataset, make_dataloader
    td, med = vocab
    tok = RankValueTokenizer(td, med, 40, mode=mode, special_tokens=True)
    s = tokenize_h5ad(slides, tmp_path / 'ds', tok, obs_keys=['region'], chunk_size=50, rows_per_job=100, progress=False)
    ds = load_from_disk(str(tmp_path / 'ds'))
    assert s['cells_written'] == len(ds) == 288 and load_example_lengths(tmp_path / 'ds') == ds['length']
    assert all(x[0] == td.cls_id and x[-1] == td.eos_id for x in ds['input_ids'])
    disk = {(f, r): x for f, r, x in zip(ds['source_file'], ds['source_row'], ds['input_ids'])}
    seen = []
    for rank in (0, 1):
        reader = H5adCollection(slides)
        dset = AnnDataset(reader, batch_size=32, strategy='random', seed=3, rank=rank, world_size=2,
                          before_dense=TokenizeTransform(tok, reader))
        for b in make_dataloader(dset, num_workers=2 if rank == 0 else 0):
            for g, ids, l in zip(b['index'].tolist(), b['input_ids'], b['length'].tolist()):
                f = int(np.searchsorted(reader.offsets, g, side='right') - 1)
                assert ids[:l].tolist() == disk[(f, g - int(reader.offsets[f]))]
                assert (ids[l:] == td.pad_id).all()
                seen.append(g)
            assert b['input_ids'].dtype == b['attention_mask'].dtype == torch.int64 and b['input_ids'].shape == b['attention_mask'].shape
            assert (b['attention_mask'] == (torch.arange(b['input_ids'].shape[1])[None] < b['length'][:, None])).all()
            assert b['input_ids'].shape[1] == int(b['length'].max())
    assert sorted(seen) == list(range(288))


@pytest.mark.parametrize('mode', ['spot', 'neighborhood'])
@pytest.mark.parametrize('rows_per_job,num_workers', [(10**6, 1), (10**6, 2), (50, 1), (50, 2)])
def test_on_disk_equals_tokenize_files(tmp_path, slides, vocab, mode, rows_per_job, num_workers, engine):
    "Whole-file jobs and several jobs per file (chunks not aligned to them), in one or two processes: tokenize_files' tokens, in order."
    from datasets import load_from_disk
    td, med = vocab
    tok = RankValueTokenizer(td, med, 30, mode=mode)
    ref = tok.tokenize_files(slides)
    s = tokenize_h5ad(slides, tmp_path / 'ds', tok, chunk_size=32, rows_per_job=rows_per_job, num_workers=num_workers, progress=False)
    ds = load_from_disk(str(tmp_path / 'ds'))
    assert ds['input_ids'] == [r.tolist() for r in ref] and ds['length'] == load_example_lengths(tmp_path / 'ds') == [len(r) for r in ref]
    assert ds['source_file'] == [0] * 144 + [1] * 144 and ds['source_row'] == list(range(144)) * 2
    assert s['tokens'] == sum(map(len, ref)) and s['cells_written'] == 288
    assert len(list((tmp_path / 'ds').glob('data-*.arrow'))) == (2 if rows_per_job > 144 else 6)    # one file per job
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ds']                                        # no temp folder left


def test_on_disk_builds_each_graph_once_and_checks_coordinates_first(tmp_path, slides, vocab, monkeypatch):
    td, med = vocab
    calls = []
    real = T.spatial_graph
    monkeypatch.setattr(T, 'spatial_graph', lambda *a, **k: calls.append(1) or real(*a, **k))
    tok = RankValueTokenizer(td, med, 20, mode='neighborhood')
    for rpj in (50, 10**6):        # three jobs per file (graph built before the first, passed to all three), one job per file
        calls.clear()
        tokenize_h5ad(slides, tmp_path / f'ds{rpj}', tok, rows_per_job=rpj, progress=False)
        assert len(calls) == 2
    a = ad.read_h5ad(slides[1]); a.obsm['spatial'][5] = np.nan; a.write_h5ad(tmp_path / 'nan.h5ad')
    with pytest.raises(TokenizerError, match=r"nan.h5ad obsm\['spatial'\]: 1 spots have missing"):
        tokenize_h5ad([slides[0], tmp_path / 'nan.h5ad'], tmp_path / 'bad', tok, progress=False)
    assert len(calls) == 2 and not (tmp_path / 'bad').exists() and not any(p.name.startswith('.bad') for p in tmp_path.iterdir())
    with pytest.raises(TokenizerError, match=r"nan.h5ad obsm\['spatial'\]: 1 spots have missing"):   # raised on the graph's thread
        tok.tokenize_files([slides[0], tmp_path / 'nan.h5ad'])


def test_worker_processes_inherit_the_tokenizer(tmp_path, slides, vocab):
    "With 2 workers the tokenizer reaches them through fork, never pickled with each job (a 20,000-gene one: ~18 ms a job)."
    class NoPickle(RankValueTokenizer):
        def __getstate__(self): raise TypeError('the tokenizer was pickled')
    td, med = vocab
    tok = NoPickle(td, med, 20, mode='neighborhood')
    s = tokenize_h5ad(slides, tmp_path / 'ds', tok, rows_per_job=50, num_workers=2, progress=False)
    assert s['cells_written'] == 288 and load_example_lengths(tmp_path / 'ds') == [len(x) for x in tok.tokenize_files(slides)]


def test_dataset_folder_is_what_datasets_writes(tmp_path, slides, vocab):
    "Written with pyarrow only: the features, state.json and dataset_info.json datasets' own concatenate + save_to_disk give."
    import datasets as hfd, pyarrow as pa
    td, med = vocab
    a = ad.read_h5ad(slides[0])
    a.obs['region'] = a.obs['region'].astype(object); a.obs.iloc[[3, 7], a.obs.columns.get_loc('region')] = None
    a.obs['region'] = a.obs['region'].astype('category'); a.obs['frac'] = np.linspace(0, 1, a.n_obs); a.obs.loc[a.obs.index[5], 'frac'] = np.nan
    a.write_h5ad(tmp_path / 'm.h5ad')
    b = ad.read_h5ad(slides[1]); b.obs['frac'] = 2.0; b.write_h5ad(tmp_path / 'm2.h5ad')
    keys = ['region', 'n_genes', 'frac']
    tokenize_h5ad([tmp_path / 'm.h5ad', tmp_path / 'm2.h5ad'], tmp_path / 'ours', RankValueTokenizer(td, med, 20), obs_keys=keys, rows_per_job=100,
                  progress=False)
    files = [str(p) for p in sorted((tmp_path / 'ours').glob('data-*.arrow'))]
    hfd.concatenate_datasets([hfd.Dataset.from_file(f) for f in files]).save_to_disk(str(tmp_path / 'theirs'))
    ours, theirs = (json.loads((tmp_path / d / 'state.json').read_text()) for d in ('ours', 'theirs'))
    assert [f['filename'] for f in ours.pop('_data_files')] == ['data-00000-of-00004.arrow', 'data-00001-of-00004.arrow',
                                                                'data-00002-of-00004.arrow', 'data-00003-of-00004.arrow']
    assert len(ours.pop('_fingerprint')) == 16 and (theirs.pop('_data_files'), theirs.pop('_fingerprint'))
    assert ours == theirs
    assert (tmp_path / 'ours' / 'dataset_info.json').read_text() == (tmp_path / 'theirs' / 'dataset_info.json').read_text()
    types = {'region': 'str', 'n_genes': 'int', 'frac': 'float'}
    assert json.loads((tmp_path / 'ours' / 'dataset_info.json').read_text())['features'] == T._features(types).to_dict()
    schema = pa.ipc.open_stream(pa.memory_map(files[0])).schema
    assert schema == T._features(types).arrow_schema and schema.metadata == pa.ipc.open_stream(
        pa.memory_map(str(tmp_path / 'theirs' / 'data-00000-of-00001.arrow'))).schema.metadata
    ds = hfd.load_from_disk(str(tmp_path / 'ours'))
    assert ds.features == T._features(types)
    want = [None if isinstance(x, float) else x for x in a.obs['region'].astype(object)] + b.obs['region'].astype(str).tolist()
    assert ds['region'] == want and ds['region'][3] is None and ds['n_genes'][:144] == a.obs['n_genes'].tolist()
    assert np.isnan(ds['frac'][5]) and np.allclose(np.delete(ds['frac'][:144], 5), np.delete(a.obs['frac'].to_numpy(), 5)) and ds['frac'][144:] == [2.0] * 144


def test_writing_imports_neither_datasets_nor_pandas(tmp_path, slides, vocab):
    "Their imports (0.5-0.8 s and ~0.4 s) cost more than tokenizing a slide; pyarrow's pa.array would pull pandas in."
    import subprocess, sys
    td, med = vocab
    td.save(tmp_path / 'td.pkl'); save_gene_medians(med, tmp_path / 'med.pkl')
    code = (f"import sys; from spatial_dl.tokenizers import *; tok = RankValueTokenizer({str(tmp_path / 'td.pkl')!r}, "
            f"{str(tmp_path / 'med.pkl')!r}, 20, mode='neighborhood'); "
            f"tokenize_h5ad({[str(p) for p in slides]!r}, {str(tmp_path / 'o')!r}, tok, obs_keys=['region', 'n_counts'], progress=False); "
            "print(sorted(m for m in ('datasets', 'pandas') if m in sys.modules))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == '[]' and (tmp_path / 'o' / 'example_lengths.pkl').exists()


def test_binned_on_the_fly_equals_direct_tokenization_with_workers(slides, vocab):
    from spatial_dl.loaders import AnnDataset, make_dataloader
    td, _ = vocab
    reader = H5adCollection(slides)
    dset = AnnDataset(reader, batch_size=40, strategy='random', seed=1,
                      before_dense=BinnedTransform(BinnedTokenizer(td, 21, max_length=30), reader, pad_to=32, pad_value=-2))
    ref = BinnedTokenizer(td, 21, max_length=30).tokenize_block(reader.read(np.arange(reader.n_obs)).X, reader.var_names)
    seen = []
    for b in make_dataloader(dset, num_workers=2):
        assert b['input_ids'].shape == b['values'].shape == b['attention_mask'].shape == (len(b['index']), 32)
        for g, ids, v, l in zip(b['index'].tolist(), b['input_ids'], b['values'], b['length'].tolist()):
            assert ids[:l].tolist() == ref['input_ids'][g].tolist() and v[:l].tolist() == ref['values'][g].tolist()
            assert (ids[l:] == td.pad_id).all() and (v[l:] == -2).all() and 0 < l <= 30
            seen.append(g)
    assert sorted(seen) == list(range(reader.n_obs))
    with pytest.raises(TokenizerError, match='pad_to=8 is shorter'):
        BinnedTransform(BinnedTokenizer(td, 21), reader, pad_to=8)({'X': reader.read(np.arange(4)).X})


def test_writer_drops_zero_cells_and_counts_unknown_genes(tmp_path, vocab):
    td, med = vocab
    a = simulate_spatial(n_samples=1, n_rows=4, n_cols=4, n_genes=200, seed=1)[0]
    X = a.X.tolil(); X[3] = 0; a.X = X.tocsr()
    a.var_names = [f"x{i}" if i < 5 else g for i, g in enumerate(a.var_names)]   # 5 genes unknown to the dictionary
    a.write_h5ad(tmp_path / 'z.h5ad')
    with pytest.warns(UserWarning, match='dropped 1 zero-count'):
        s = tokenize_h5ad([tmp_path / 'z.h5ad'], tmp_path / 'out', RankValueTokenizer(td, med, 16), progress=False)
    assert (s['cells_in'], s['cells_written'], s['zero_cells_dropped'], s['unknown_gene_columns']) == (16, 15, 1, 5)
    assert json.loads((tmp_path / 'out' / 'tokenize_summary.json').read_text())['cells_written'] == 15


def test_bad_input_is_named(tmp_path, slides, vocab):
    td, med = vocab
    tok = RankValueTokenizer(td, med, 16, total_key='total_umis')
    with pytest.raises(KeyError, match="total_key: .*s0.h5ad: obs key 'total_umis' not found"):
        tokenize_h5ad(slides[:1], tmp_path / 'o1', tok, progress=False)
    with pytest.raises(KeyError, match="var_key 'gene_ids' not in var"):
        tokenize_h5ad(slides[:1], tmp_path / 'o2', RankValueTokenizer(td, med, 16, gene_key='gene_ids'), progress=False)
    with pytest.raises(TokenizerError, match='wrong gene_key'):
        tokenize_h5ad(slides[:1], tmp_path / 'o3', RankValueTokenizer(td, med, 16, gene_key='ensembl_id'), progress=False)
    a = ad.read_h5ad(slides[0]); a.X = a.X * 0.5; a.write_h5ad(tmp_path / 'norm.h5ad')
    with pytest.raises(TokenizerError, match='norm.h5ad: X holds non-integer values'):
        tokenize_h5ad([tmp_path / 'norm.h5ad'], tmp_path / 'o4', RankValueTokenizer(td, med, 16), progress=False)
    for rpj in (50, 10**6):      # neighbourhood mode, a file split into jobs (its chunks read with their neighbours) and whole
        with pytest.raises(TokenizerError, match=r'norm.h5ad( \(neighbour rows\))?: X holds non-integer values'):
            tokenize_h5ad([tmp_path / 'norm.h5ad'], tmp_path / 'o6', RankValueTokenizer(td, med, 16, mode='neighborhood'), rows_per_job=rpj,
                          progress=False)
    s = tokenize_h5ad([tmp_path / 'norm.h5ad'], tmp_path / 'o5', RankValueTokenizer(td, med, 16, allow_normalized=True), progress=False)
    assert s['cells_written'] == 144
    with pytest.raises(TokenizerError, match='model_input_size=2 leaves no room'): RankValueTokenizer(td, med, 2, special_tokens=True)
    with pytest.raises(ValueError, match='model_input_size must be a positive integer'): RankValueTokenizer(td, med, 0)
    assert not (tmp_path / 'o1').exists() and not any(p.name.startswith('.o') for p in tmp_path.iterdir())   # nothing half-written


def test_cli_end_to_end(tmp_path, slides):
    out = tmp_path / 'tok'
    rc = tokenize_main([str(Path(slides[0]).parent), '--out', str(out), '--mode', 'neighborhood', '--input-size', '24',
                        '--special-tokens', '--obs-keys', 'cell_type', 'sample', '--neighbors', 'knn', '--n-neighbors', '4', '--quiet'])
    assert rc == 0
    from datasets import load_from_disk
    ds = load_from_disk(str(out))
    td = TokenDictionary.load(out / 'token_dictionary.pkl')
    assert len(ds) == 288 and set(ds.column_names) >= {'input_ids', 'length', 'cell_type', 'sample'}
    assert max(ds['length']) <= 48 and td.cls_id == 2 and ds[0]['input_ids'][0] == 2
    assert tokenize_main([str(tmp_path / 'missing.h5ad'), '--out', str(tmp_path / 'x'), '--quiet']) == 2


def _normalised_copy(src, dest, raw=False, filter_pass=None):
    "The slide with log-normalised X and its counts in layers['counts'] (or in adata.raw); optionally a filter_pass column."
    a = ad.read_h5ad(src)
    counts = a.X.copy()
    if raw: a.raw = a.copy()
    else: a.layers['counts'] = counts
    X = counts.multiply(1e4 / np.maximum(counts.sum(1), 1)).tocsr(); X.data = np.log1p(X.data); a.X = X.astype(np.float32)
    if filter_pass is not None: a.obs['filter_pass'] = filter_pass
    a.write_h5ad(dest)
    return dest


@pytest.mark.parametrize('layer', ['counts', 'raw/X'])
def test_counts_from_a_layer_or_adata_raw(tmp_path, slides, vocab, layer):
    "X normalised, counts in a layer or adata.raw: medians, tokenize_files, tokenize_h5ad and the CLI read the counts."
    from datasets import load_from_disk
    td, med = vocab
    p = _normalised_copy(slides[0], tmp_path / 'norm.h5ad', raw=layer == 'raw/X')
    assert gene_medians([p], layer=layer, progress=False) == gene_medians(slides[:1], progress=False)
    with pytest.raises(TokenizerError, match='norm.h5ad: X holds non-integer values'): gene_medians([p], progress=False)
    for mode in ('spot', 'neighborhood'):
        ref = RankValueTokenizer(td, med, 30, mode=mode).tokenize_files(slides[:1])
        tok = RankValueTokenizer(td, med, 30, mode=mode, layer=layer)
        assert [r.tolist() for r in tok.tokenize_files([p])] == [r.tolist() for r in ref]
        tokenize_h5ad([p], tmp_path / mode, tok, chunk_size=50, progress=False)
        assert load_from_disk(str(tmp_path / mode))['input_ids'] == [r.tolist() for r in ref if len(r)]
    assert tokenize_main([str(p), '--out', str(tmp_path / 'cli'), '--layer', layer, '--input-size', '30', '--quiet']) == 0
    assert len(load_from_disk(str(tmp_path / 'cli'))) == 144
    with pytest.raises(KeyError, match="norm.h5ad: layer 'spliced' not found"):
        tokenize_h5ad([p], tmp_path / 'bad', RankValueTokenizer(td, med, 30, layer='spliced'), progress=False)


def test_on_the_fly_layer_must_match_the_dataset(slides, vocab):
    td, med = vocab
    with pytest.raises(TokenizerError, match="reader: layer=None but the tokenizer's layer='counts'"):
        TokenizeTransform(RankValueTokenizer(td, med, 30, layer='counts'), H5adCollection(slides))


@pytest.mark.parametrize('num_workers', [1, 2])
def test_filter_pass_keeps_only_passing_cells(tmp_path, slides, vocab, num_workers):
    "As Geneformer: with an obs 'filter_pass' column only cells where it is 1 are written (all still count as neighbours)."
    from datasets import load_from_disk
    td, med = vocab
    rng = np.random.default_rng(0)
    fp = [rng.integers(0, 2, 144), rng.integers(0, 2, 144).astype(bool)]          # ints in one file, booleans in the other
    a = [ad.read_h5ad(s) for s in slides]
    for x, f in zip(a, fp): x.obs['filter_pass'] = f
    paths = [tmp_path / 's0.h5ad', tmp_path / 's1.h5ad']
    for x, q in zip(a, paths): x.write_h5ad(q)
    tok = RankValueTokenizer(td, med, 30, mode='neighborhood')
    ref = tok.tokenize_files(slides)
    s = tokenize_h5ad(paths, tmp_path / 'ds', tok, chunk_size=50, rows_per_job=100, num_workers=num_workers, progress=False)
    ds = load_from_disk(str(tmp_path / 'ds'))
    keep = np.concatenate([np.asarray(f) == 1 for f in fp]) & np.array([len(r) > 0 for r in ref])
    assert ds['input_ids'] == [r.tolist() for r, k in zip(ref, keep) if k]
    assert ds['source_row'] == [i % 144 for i in np.flatnonzero(keep)]
    assert s['filtered_out'] == int((~np.concatenate([np.asarray(f) == 1 for f in fp]) & np.array([len(r) > 0 for r in ref])).sum()) > 0
    assert s['filter_key'] == 'filter_pass' and s['cells_written'] == int(keep.sum())
    everyone = tokenize_h5ad(paths, tmp_path / 'all', tok, filter_key=None, progress=False)
    assert everyone['filtered_out'] == 0 and everyone['cells_written'] == sum(len(r) > 0 for r in ref)
    with pytest.raises(KeyError, match="s0.h5ad: filter_key 'qc_pass' not in obs"):
        tokenize_h5ad(paths, tmp_path / 'x', tok, filter_key='qc_pass', progress=False)
    plain = tokenize_h5ad(slides, tmp_path / 'plain', tok, progress=False)       # no such column: every cell, nothing said
    assert plain['filter_key'] is None and plain['filtered_out'] == 0


# ------------------------------------------------------------------------------------------------ binned
@settings(max_examples=40, deadline=None)
@given(vals=st.lists(st.integers(1, 6), min_size=1, max_size=30), n_bins=st.integers(3, 12))
def test_binned_is_deterministic_monotone_and_in_range(vals, n_bins):
    genes = [f"g{i}" for i in range(len(vals))]
    bt = BinnedTokenizer(TokenDictionary.build(genes), n_bins=n_bins)
    X = sp.csr_matrix(np.array([vals], np.float32))
    b = bt.tokenize_block(X, genes)['values'][0]
    assert b.min() >= 1 and b.max() <= n_bins - 1
    v = np.array(vals)
    for i in range(len(v)):
        for j in range(len(v)):
            if v[i] == v[j]: assert b[i] == b[j]
            if v[i] < v[j]: assert b[i] <= b[j]
    assert np.array_equal(b, bt.tokenize_block(X, genes)['values'][0])


def _exit_now(code): os._exit(code)


def test_a_dead_worker_process_raises_instead_of_hanging():
    "gene_medians/tokenize_h5ad worker pools: a worker that dies is an error, never a hang."
    from concurrent.futures.process import BrokenProcessPool
    from spatial_dl.tokenizers import _process_imap
    with pytest.raises(BrokenProcessPool): list(_process_imap(_exit_now, [(3,), (3,)], 2))
    assert list(_process_imap(abs, [(-1,), (2,), (-3,)], 2)) == [1, 2, 3]
    made = []
    def jobs():                       # a generator: arguments made only a few jobs ahead of the results
        for i in range(10): made.append(i); yield (-i,)
    it = _process_imap(abs, jobs(), 1, n_jobs=10)
    assert next(it) == 0 and len(made) <= 3
    assert list(it) == list(range(1, 10)) and len(made) == 10
