"Readers: every read equals anndata's values, across layouts, orders, files and processes; bad input is named."
import multiprocessing as mp
import os
import pickle

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, HealthCheck, strategies as st

from spatial_dl.readers import H5adCollection, ReaderError, BufferPool


def _adata(n_obs, genes, seed, sample, dense=False, density=0.3):
    rng = np.random.default_rng(seed)
    X = sp.random(n_obs, len(genes), density=density, format='csr', dtype=np.float32, random_state=rng)
    X.data = np.ceil(X.data * 10).astype(np.float32)
    obs = pd.DataFrame({'cell_type': pd.Categorical(rng.choice(['B', 'T', 'NK', 'Mono'][seed % 2:], n_obs)),
                        'sample': sample, 'n_counts': np.asarray(X.sum(1)).ravel(),
                        'age': pd.array(rng.integers(0, 5, n_obs), dtype='Int64')},
                       index=[f'{sample}_{i}' for i in range(n_obs)])
    a = ad.AnnData(X.toarray() if dense else X, obs=obs, var=pd.DataFrame(index=list(genes)))
    a.layers['counts'] = (X * 3).tocsr()
    a.obsm['spatial'] = rng.random((n_obs, 2)).astype(np.float32)
    return a


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('readers')
    g1, g2 = [f'g{i}' for i in range(30)], [f'g{i}' for i in range(10, 45)]
    ads = {'a': _adata(60, g1, 0, 's1'), 'b': _adata(45, g2, 1, 's2'), 'dense': _adata(25, g1, 2, 's3', dense=True),
           'c': _adata(33, g1, 3, 's4')}
    paths = {}
    for k, a in ads.items():
        paths[k] = d / f'{k}.h5ad'; a.write_h5ad(paths[k])
    paths['gzip'] = d / 'gzip.h5ad'; ads['a'].write_h5ad(paths['gzip'], compression='gzip')
    paths['lzf'] = d / 'lzf.h5ad'; ads['c'].write_h5ad(paths['lzf'], compression='lzf')   # a filter only h5py reads
    paths['gzip_shuffle'] = d / 'gzip_shuffle.h5ad'; ads['a'].write_h5ad(paths['gzip_shuffle'])
    with h5py.File(paths['gzip_shuffle'], 'r+') as f:   # many small chunks, byte shuffle + gzip, obsm compressed too
        for k in ('X/data', 'X/indices', 'obsm/spatial'):
            v = f[k][...]; del f[k]; f.create_dataset(k, data=v, chunks=(11,) + v.shape[1:], compression='gzip', shuffle=True)
    return d, ads, paths


def _dense(a, layer=None):
    x = a.X if layer is None else a.layers[layer]
    return x.toarray() if sp.issparse(x) else np.asarray(x)


rows_strategy = st.lists(st.integers(0, 10**6), min_size=0, max_size=80)


@pytest.fixture(params=['python', 'compiled'])
def read_path(request, monkeypatch):
    """Scatter reads through os.preadv from Python, or through the compiled loop (numba) for every read size;
    compressed chunks through Python's zlib (python) or libdeflate (compiled)."""
    import spatial_dl.readers as R
    if request.param == 'compiled':
        assert R._preadv_groups(0, wait=True) is not None
        monkeypatch.setattr(R, '_SMALL_READ', 0)
        monkeypatch.delenv('SPATIAL_DL_NUMBA', raising=False)
        monkeypatch.setattr(R, '_LIBDEFLATE', None)
        assert R._find_libdeflate() is not None
    else:
        monkeypatch.setenv('SPATIAL_DL_NUMBA', '0')
        monkeypatch.setattr(R, '_LIBDEFLATE', False)
    return request.param


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=rows_strategy)
def test_any_rows_any_order_match_anndata(files, read_path, raw):
    "Fast path (one CSR file; Python and compiled reads), compressed chunks (gzip; shuffle + gzip in small chunks), general path (dense + CSR collection): values, obs codes and obsm match."
    d, ads, paths = files
    a, c = ads['a'], ads['c']
    for coll, ref, obsm, cats in [
        (H5adCollection(paths['a'], obs_keys=['cell_type', 'n_counts'], obsm_keys=['spatial']),
         _dense(a), a.obsm['spatial'], a.obs['cell_type'].astype(str).to_numpy()),
        (H5adCollection(paths['gzip'], obs_keys=['cell_type', 'n_counts'], obsm_keys=['spatial']),
         _dense(a), a.obsm['spatial'], a.obs['cell_type'].astype(str).to_numpy()),
        (H5adCollection(paths['gzip_shuffle'], obs_keys=['cell_type', 'n_counts'], obsm_keys=['spatial']),
         _dense(a), a.obsm['spatial'], a.obs['cell_type'].astype(str).to_numpy()),
        (H5adCollection([paths['dense'], paths['a'], paths['c']], obs_keys=['cell_type', 'n_counts'], obsm_keys=['spatial']),
         np.vstack([_dense(ads['dense']), _dense(a), _dense(c)]),
         np.vstack([ads['dense'].obsm['spatial'], a.obsm['spatial'], c.obsm['spatial']]),
         np.concatenate([x.obs['cell_type'].astype(str).to_numpy() for x in (ads['dense'], a, c)])),
    ]:
        rows = np.array([r % coll.n_obs for r in raw], dtype=np.int64)
        coll.gap_bytes = raw[0] % 3 * 4096 if raw else 0     # also read across small gaps now and then
        blk = coll.read(rows)
        assert blk.X.shape == (len(rows), coll.n_vars) and blk.X.dtype == np.float32
        np.testing.assert_array_equal(blk.X.toarray(), ref[rows])
        np.testing.assert_array_equal(blk.obsm['spatial'], obsm[rows])
        np.testing.assert_array_equal(np.array(coll.obs_categories('cell_type'), dtype=object)[blk.obs['cell_type']]
                                      if len(rows) else [], cats[rows])
        np.testing.assert_array_equal(blk.index, rows)


def test_layer_and_obs_encodings(files):
    d, ads, paths = files
    a = ads['a']
    coll = H5adCollection(paths['a'], layer='counts', obs_keys=['age', 'sample'])
    rows = np.array([59, 0, 3, 3, 17])
    np.testing.assert_array_equal(coll.read(rows).X.toarray(), _dense(a, 'counts')[rows])
    np.testing.assert_array_equal(coll.obs_column('age'), a.obs['age'].to_numpy().astype(float))
    assert coll.obs_categories('sample') == ['s1'] and coll.obs_categories('age') is None


@pytest.mark.parametrize('join', ['outer', 'inner', 'list'])
def test_gene_alignment(files, join):
    d, ads, paths = files
    a, b = ads['a'], ads['b']
    genes = ['g44', 'g0', 'g12', 'absent', 'g29'] if join == 'list' else join
    coll = H5adCollection([paths['a'], paths['b']], var_join=genes)
    want = list(coll.var_names)
    if join == 'outer': assert want == [f'g{i}' for i in range(45)]
    if join == 'inner': assert want == [f'g{i}' for i in range(10, 30)]
    ref = np.vstack([a.to_df().reindex(columns=want, fill_value=0).to_numpy(),
                     b.to_df().reindex(columns=want, fill_value=0).to_numpy()])
    rows = np.random.default_rng(0).permutation(coll.n_obs)[:70]
    np.testing.assert_array_equal(coll.read(rows).X.toarray(), ref[rows])


def test_categories_merge_across_files(files):
    "Files with different category sets share one code space (union in order of appearance)."
    d, ads, paths = files
    coll = H5adCollection([paths['a'], paths['b']], var_join='outer', obs_keys=['cell_type'])
    cats = np.array(coll.obs_categories('cell_type'))
    want = np.concatenate([ads['a'].obs['cell_type'].astype(str), ads['b'].obs['cell_type'].astype(str)])
    np.testing.assert_array_equal(cats[coll.obs_column('cell_type')], want)
    assert len(set(coll.obs_categories('cell_type'))) == len(coll.obs_categories('cell_type'))


def test_chunked_noncontiguous_layout(tmp_path, files):
    "Uncompressed chunks that are not back to back are read through the chunk table."
    d, ads, paths = files
    p = tmp_path / 'inter.h5ad'
    ads['a'].write_h5ad(p)
    with h5py.File(p, 'r+', rdcc_nbytes=0) as f:
        dd, ix = f['X/data'][...], f['X/indices'][...]
        del f['X/data'], f['X/indices']
        D = f['X'].create_dataset('data', shape=(0,), maxshape=(None,), chunks=(11,), dtype=dd.dtype)
        I = f['X'].create_dataset('indices', shape=(0,), maxshape=(None,), chunks=(11,), dtype=ix.dtype)
        for s in range(0, len(dd), 11):
            e = min(s + 11, len(dd)); D.resize((e,)); D[s:e] = dd[s:e]; I.resize((e,)); I[s:e] = ix[s:e]
    coll = H5adCollection(p)
    assert coll._infos[0].arrays['data'].chunk_offsets is not None
    rows = np.random.default_rng(1).permutation(60)
    np.testing.assert_array_equal(coll.read(rows).X.toarray(), _dense(ads['a'])[rows])


def test_int64_indices_and_float64_data(tmp_path, files):
    "Other dtypes take the general path and still give float32 values equal to anndata's."
    d, ads, paths = files
    a = ads['a'].copy(); a.X = a.X.astype(np.float64); a.X.indices = a.X.indices.astype(np.int64)
    a.X.indptr = a.X.indptr.astype(np.int64)
    p = tmp_path / 'f64.h5ad'; a.write_h5ad(p)
    coll = H5adCollection(p)
    rows = np.array([5, 1, 59])
    blk = coll.read(rows)
    assert blk.X.dtype == np.float32
    np.testing.assert_array_equal(blk.X.toarray(), a.X[rows].toarray().astype(np.float32))


def test_empty_rows_and_zero_row_file(tmp_path, files):
    d, ads, paths = files
    a0 = ads['a'][:0].copy(); p0 = tmp_path / 'zero.h5ad'; a0.write_h5ad(p0)
    coll = H5adCollection([p0, paths['a']])
    assert coll.n_obs == 60 and list(coll.offsets) == [0, 0, 60]
    np.testing.assert_array_equal(coll.read(np.array([0, 59])).X.toarray(), _dense(ads['a'])[[0, 59]])
    assert coll.read(np.array([], dtype=np.int64)).X.shape == (0, 30)
    with pytest.raises(ReaderError, match='no rows: every file is empty'): H5adCollection([p0])


def _read_in_child(coll, rows, q):
    q.put(coll.read(rows).X.toarray())


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_pickles_and_reads_in_child_processes(files, method):
    "A collection that already holds open descriptors crosses fork and spawn and reads the same values."
    d, ads, paths = files
    coll = H5adCollection([paths['a'], paths['gzip'], paths['lzf']], obs_keys=['cell_type'])
    rows = np.array([3, 70, 2, 119, 150, 121])
    here = coll.read(rows).X.toarray()            # opens fds and h5py handles in this process
    np.testing.assert_array_equal(here, np.vstack([_dense(ads['a']), _dense(ads['a']), _dense(ads['c'])])[rows])
    assert coll._fds and coll._h5
    state = pickle.loads(pickle.dumps(coll))
    assert state._fds == {} and state._h5 == {}
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(coll, rows, q))
    p.start(); got = q.get(timeout=120); p.join(60)
    assert p.exitcode == 0
    np.testing.assert_array_equal(got, here)
    np.testing.assert_array_equal(coll.read(rows).X.toarray(), here)   # parent still reads after the child ran


def test_buffer_pool_never_hands_out_referenced_memory():
    pool = BufferPool(3)
    held = [pool.take(100) for _ in range(5)]          # 3 pooled + 2 transient
    for i, h in enumerate(held): h[:] = i
    for i, h in enumerate(held): assert (h == i).all()
    del held
    again = [pool.take(50) for _ in range(3)]
    assert all(any(np.shares_memory(x, a) for a in pool._arenas) for x in again)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_files(tmp_path, files):
    d, ads, paths = files
    txt = tmp_path / 'x.h5ad'; txt.write_text('not hdf5')
    empty = tmp_path / 'empty.h5ad'; empty.touch()
    plain = tmp_path / 'plain.h5'
    with h5py.File(plain, 'w') as f: f['data'] = np.arange(4)
    noX = tmp_path / 'noX.h5ad'
    with h5py.File(noX, 'w') as f: f.create_group('obs'); f.create_group('var')
    csc = tmp_path / 'csc.h5ad'; ad.AnnData(sp.csc_matrix(ads['a'].X), obs=ads['a'].obs).write_h5ad(csc)
    coo = tmp_path / 'coo.h5ad'; ads['a'].write_h5ad(coo)
    with h5py.File(coo, 'r+') as f: f['X'].attrs['encoding-type'] = 'coo_matrix'
    cases = [(tmp_path / 'missing.h5ad', FileNotFoundError, 'missing.h5ad: no such file'),
             (txt, ReaderError, 'x.h5ad: not an HDF5 file'),
             (empty, ReaderError, 'empty.h5ad: file is empty'),
             (plain, ReaderError, "plain.h5: not an AnnData layout: no 'obs' group"),
             (noX, ReaderError, "noX.h5ad: not an AnnData layout: no 'X'"),
             (csc, ReaderError, "csc.h5ad: X has unsupported matrix encoding 'csc_matrix'"),
             (coo, ReaderError, "coo.h5ad: X has unsupported matrix encoding 'coo_matrix'"),
             (tmp_path, ReaderError, 'is a directory')]
    for p, exc, msg in cases:
        with pytest.raises(exc, match=msg.replace('(', r'\(').replace(')', r'\)')): H5adCollection(p)


def test_bad_keys_and_arguments(files):
    d, ads, paths = files
    with pytest.raises(KeyError, match=r"a.h5ad: layer 'raw' not found \(available layers: \['counts'\]\)"):
        H5adCollection(paths['a'], layer='raw')
    with pytest.raises(KeyError, match="a.h5ad: obs key 'batch' not found"): H5adCollection(paths['a'], obs_keys=['batch'])
    with pytest.raises(KeyError, match="a.h5ad: obsm key 'X_pca' not found"): H5adCollection(paths['a'], obsm_keys='X_pca')
    with pytest.raises(KeyError, match="var_key 'gene_ids' not in var"): H5adCollection(paths['a'], var_key='gene_ids')
    with pytest.raises(ReaderError, match=r"files have different genes: \[.*b.h5ad'\] differ from .*a.h5ad"):
        H5adCollection([paths['a'], paths['b']])
    with pytest.raises(ValueError, match='var_join must be one of'): H5adCollection([paths['a'], paths['b']], var_join='union')
    with pytest.raises(ReaderError, match='given gene list has duplicates'):
        H5adCollection(paths['a'], var_join=['g1', 'g1'])
    with pytest.raises(ValueError, match='expected at least one'): H5adCollection([])
    coll = H5adCollection(paths['a'])
    with pytest.raises(IndexError, match=r'ids must be in \[0, 60\)'): coll.read(np.array([60]))
    with pytest.raises(IndexError, match=r'ids must be in \[0, 60\)'): coll.read(np.array([-1]))
    with pytest.raises(ValueError, match='integer row ids'): coll.read(np.array([0.5]))
    with pytest.raises(ValueError, match='1-d array'): coll.read(np.zeros((2, 2), int))


_MANY_FILES = '''
import resource, sys, numpy as np
from spatial_dl.readers import H5adCollection, ReaderError
soft, hard = int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
paths = sys.argv[4:]
try:
    c = H5adCollection(paths)
    X = c.read(np.arange(c.n_obs)[::-1]).X
    print('ok', X.shape[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
except ReaderError as e: print('error', e)
'''


def test_many_files_raise_the_open_file_limit_or_say_how(tmp_path, files):
    "300 files with a soft limit of 64: raised to fit when the hard limit allows; otherwise a clear error naming the limit."
    import shutil, subprocess, sys
    d, ads, paths = files
    many = []
    for k in range(300):
        many.append(str(tmp_path / f'f{k}.h5ad')); shutil.copy(paths['c'], many[-1])
    run = lambda soft, hard: subprocess.run([sys.executable, '-c', _MANY_FILES, '-', str(soft), str(hard), *many],
                                            capture_output=True, text=True, timeout=300).stdout.strip()
    out = run(64, 4096)
    assert out.startswith('ok') and int(out.split()[1]) == 300 * 33 and int(out.split()[2]) >= 300, out
    out = run(64, 64)
    assert out.startswith('error') and 'too many open files' in out and 'ulimit -n' in out and 'f' in out, out


def test_files_with_the_same_genes_share_one_gene_array(files):
    "Collections of many files with the same genes keep (and pickle to each worker) one gene array, not one per file."
    d, ads, paths = files
    one, many = H5adCollection([paths['c']]), H5adCollection([paths['c'], paths['a'], paths['lzf']] * 40)
    assert all(fi.var_names is many._infos[0].var_names for fi in many._infos)
    assert len(pickle.dumps(many)) < 40 * len(pickle.dumps(one))        # 120 files; per-file arrays would be ~120x
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(many)).read([5, 40, 3000]).X.toarray(),
                                  np.vstack([_dense(ads['c']), _dense(ads['a']), _dense(ads['c'])] * 40)[[5, 40, 3000]])


def test_a_file_removed_after_opening_is_named(tmp_path, files):
    "A file deleted between building the collection and its first read: ReaderError naming it (not a bare OSError)."
    import shutil
    d, ads, paths = files
    p = tmp_path / 'gone.h5ad'; shutil.copy(paths['c'], p)
    c = H5adCollection([paths['a'], p])
    p.unlink()
    np.testing.assert_array_equal(c.read([0, 1]).X.toarray(), _dense(ads['a'])[[0, 1]])   # the other file still reads
    with pytest.raises(ReaderError, match=r"gone\.h5ad: cannot be opened \(No such file"): c.read([61])
