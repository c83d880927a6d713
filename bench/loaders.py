#!/usr/bin/env python
"""Loader benchmark: spatial_dl against its peers on one large CSR .h5ad, dense float32 batches of 256.

    .venv/bin/python bench/loaders.py --quick                       # ≤ 60 s, 20,000 × 20,000 file
    .venv/bin/python bench/loaders.py --json bench/results/loaders.json   # full: 100,000 × 20,000, 5 rounds

The file (rows sorted by sample, then cell type, ~1,480 nonzeros per cell) is generated once and reused from
`--data-dir` (default /tmp/spatial_dl_bench). Every candidate runs in a fresh process; candidates are interleaved
round-robin over `--repeats` rounds and medians are reported. See bench/README.md for the columns.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))
from _common import (base_argparser, interleaved, machine_info, medians, print_table, target,  # noqa: E402
                     time_batches, write_json)

PACKAGES = ('spatial_dl', 'numpy', 'scipy', 'torch', 'h5py', 'anndata', 'pandas', 'scdataset', 'annbatch', 'psutil')
LABEL_KEY = 'cell_type'


# ================================================================================================ data
def _write_cells_local(path, n_obs, n_vars, nnz_per_cell, n_samples, n_cell_types, seed):
    "Fallback generator (used only when spatial_dl.datasets.write_cells_h5ad cannot be imported): same layout, uniform genes."
    import h5py
    import pandas as pd
    from anndata.io import write_elem
    rng = np.random.default_rng(seed)
    sample_of = np.sort(rng.integers(0, n_samples, n_obs))
    p_type = rng.dirichlet(np.full(n_cell_types, 2.0))
    type_of = np.empty(n_obs, np.int64)
    for s in range(n_samples):
        idx = np.flatnonzero(sample_of == s)
        type_of[idx] = np.sort(rng.choice(n_cell_types, len(idx), p=p_type))
    k = min(nnz_per_cell, n_vars // 2)
    tmp = Path(str(path) + '.part')
    with h5py.File(tmp, 'w') as f:
        f.attrs['encoding-type'] = 'anndata'; f.attrs['encoding-version'] = '0.1.0'
        g = f.create_group('X')
        g.attrs['encoding-type'] = 'csr_matrix'; g.attrs['encoding-version'] = '0.1.0'; g.attrs['shape'] = (n_obs, n_vars)
        data = g.create_dataset('data', shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 18,))
        ind = g.create_dataset('indices', shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,))
        counts = np.zeros(n_obs, np.int64)
        for a in range(0, n_obs, 4096):
            b = min(a + 4096, n_obs)
            cols = np.sort(rng.integers(0, n_vars, (b - a, k)), axis=1)
            keep = np.ones_like(cols, bool); keep[:, 1:] = cols[:, 1:] != cols[:, :-1]
            counts[a:b] = keep.sum(1)
            c = cols[keep].astype(np.int32)
            n0 = data.shape[0]
            data.resize((n0 + len(c),)); ind.resize((n0 + len(c),))
            data[n0:] = rng.geometric(0.55, len(c)).astype(np.float32); ind[n0:] = c
        g.create_dataset('indptr', data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        obs = pd.DataFrame({'sample': pd.Categorical.from_codes(sample_of, [f'sample_{s}' for s in range(n_samples)]),
                            LABEL_KEY: pd.Categorical.from_codes(type_of, [f'celltype_{t:02d}' for t in range(n_cell_types)])},
                           index=[f'cell_{i:08d}' for i in range(n_obs)])
        write_elem(f, 'obs', obs)
        write_elem(f, 'var', pd.DataFrame(index=[f'G{g:05d}' for g in range(n_vars)]))
        for key in ('obsm', 'varm', 'obsp', 'varp', 'layers', 'uns'): write_elem(f, key, {})
    os.replace(tmp, path)


def data_path(data_dir, n_obs: int, n_vars: int, nnz_per_cell: int=1480, n_samples: int=4, n_cell_types: int=20,
              seed: int=0) -> tuple[Path, dict, object, str]:
    "Where the file for these sizes lives, the generator's kwargs, the generator function and its description."
    nnz = min(nnz_per_cell, n_vars // 2)
    kw = dict(n_obs=n_obs, n_vars=n_vars, nnz_per_cell=nnz, n_samples=n_samples, n_cell_types=n_cell_types, seed=seed)
    try:
        from spatial_dl.datasets import write_cells_h5ad
        gen = 'spatial_dl.datasets.write_cells_h5ad'
        import hashlib, inspect
        import spatial_dl.datasets as dsm
        # a change to the generator's code gives a new file name, so a stale cache is never reused
        src = inspect.getsource(write_cells_h5ad)
        for name in sorted(n for n in vars(dsm) if n.startswith('_') and callable(getattr(dsm, n)) and n in src):
            try: src += inspect.getsource(getattr(dsm, name))   # private helpers it calls
            except (TypeError, OSError): pass
        tag = 'sdl' + hashlib.sha1(src.encode()).hexdigest()[:8]
    except Exception as e:  # the lead's module absent or mid-edit: fall back, and say so in the JSON
        write_cells_h5ad, gen, tag = None, f'bench-local generator ({type(e).__name__}: {e})'[:200], 'local'
    path = Path(data_dir) / f'cells_{n_obs}x{n_vars}_nnz{nnz}_s{n_samples}_t{n_cell_types}_seed{seed}_{tag}.h5ad'
    return path, kw, write_cells_h5ad, gen


def ensure_data(data_dir, n_obs: int, n_vars: int, **kw) -> tuple[Path, str]:
    "Path of the benchmark file for these sizes (generated when absent, reused when present) and which generator wrote it."
    path, kw, write, gen = data_path(data_dir, n_obs, n_vars, **kw)
    if path.exists(): return path, gen + ' (cached)'
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if write: write(path, progress=False, **kw)
    else: _write_cells_local(path, **kw)
    print(f'generated {path} in {time.perf_counter() - t0:.1f} s', file=sys.stderr)
    return path, gen


def ensure_anndata_copy(path, compression: str|None=None) -> Path:
    """The same cells written by `anndata.write_h5ad` (chunked data/indices, as real files are), next to `path`;
    `compression='gzip'` as `write_h5ad(compression='gzip')` writes them (many published files are).

    The benchmark's own file is written contiguously; anndata stores X/data and X/indices in ~2,000 uncompressed
    chunks with HDF5 index nodes between runs of them, which a reader must handle to be fast on real data."""
    path = Path(path)
    dest = path.with_name(path.stem + '_anndata' + (f'_{compression}' if compression else '') + '.h5ad')
    if dest.exists(): return dest
    import anndata as ad
    t0 = time.perf_counter()
    a = ad.read_h5ad(path)
    tmp = dest.with_name(dest.name + '.tmp')
    try:
        a.write_h5ad(tmp, compression=compression)
        os.replace(tmp, dest)
    finally: tmp.unlink(missing_ok=True)   # nothing half-written is left behind
    print(f'wrote {dest} with anndata {importlib.metadata.version("anndata")} in {time.perf_counter() - t0:.1f} s', file=sys.stderr)
    return dest


def read_labels(path, key: str=LABEL_KEY) -> np.ndarray:
    "Integer codes of obs[key] straight from the h5ad (categorical or plain)."
    import h5py
    with h5py.File(path, 'r') as f:
        node = f['obs'][key]
        if isinstance(node, h5py.Group): return node['codes'][:].astype(np.int64)
        return np.unique(node[:], return_inverse=True)[1].astype(np.int64)


# ================================================================================================ mixing
def _tv_local(label_batches, global_labels) -> float:
    k = int(global_labels.max()) + 1
    p = np.bincount(global_labels, minlength=k) / len(global_labels)
    tvs = [0.5 * np.abs(np.bincount(b, minlength=k) / len(b) - p).sum() for b in label_batches if len(b)]
    return float(np.mean(tvs)) if tvs else float('nan')


def tv_mixing(label_batches, global_labels) -> dict:
    "Mean total-variation distance (and entropy) of each batch's label mix against the global mix, and which code computed it."
    try:
        from spatial_dl.randomness import batch_mixing
        r = batch_mixing(label_batches, global_labels)
        return {'tv': float(r['tv']), 'entropy': float(r['entropy']), 'tv_source': 'spatial_dl.randomness.batch_mixing'}
    except ImportError: pass
    return {'tv': _tv_local(label_batches, global_labels), 'tv_source': 'bench-local'}


def ideal_tv(global_labels, batch_size: int=256, seed: int=0) -> float:
    "Expected TV of a batch cut from a full random permutation (the best any shuffle can do)."
    try:
        from spatial_dl.randomness import ideal_mixing
        return float(ideal_mixing(global_labels, batch_size)['tv'])
    except ImportError: pass
    rng = np.random.default_rng(seed)   # brute force: batches cut from random permutations
    per = len(global_labels) // batch_size
    out = [global_labels[rng.permutation(len(global_labels))[:per * batch_size].reshape(per, batch_size)] for _ in range(20)]
    return _tv_local([b for o in out for b in o], global_labels)


# ================================================================================================ candidates
# Each `run_*` runs in its own fresh process (via _common.run_in_fresh_process) and returns a JSON-able dict.
def _epochs(make):
    "Batches of epochs 0, 1, 2, ... (`make(epoch)` gives one epoch's iterable), so a timed window may span epochs."
    e = 0
    while True:
        n = 0
        for b in make(e): n += 1; yield b
        if not n: return
        e += 1


def _measure(batches, path, n_vars, labels, labels_of, n_batches, warmup, max_seconds, t_start, check_rows=None,
             warmup_s=0.0, min_seconds=0.0):
    """Time `batches` (dicts); collect labels for TV; check the first batch's values against h5py.

    `t_start`: when the candidate began building its loader (after imports): first-batch time and the overall
    rate count from there, so opening files or loading the whole matrix is part of the cost."""
    import torch
    label_batches, first = [], {}
    def consume(b):
        X = b['X'] if isinstance(b, dict) else b[0]
        if not (isinstance(X, torch.Tensor) and X.dtype == torch.float32 and X.layout == torch.strided
                and X.ndim == 2 and X.shape[1] == n_vars):
            raise TypeError(f'expected a dense float32 tensor (n, {n_vars}), got {type(X).__name__} '
                            f'{getattr(X, "dtype", "")} {tuple(getattr(X, "shape", ()))}')
        lab = labels_of(b, labels)
        label_batches.append(np.asarray(lab, np.int64))
        if not first and check_rows is not None: first.update(X=X[:8].clone(), rows=check_rows(b)[:8])
    t_call = time.perf_counter()
    r = time_batches(batches, n_batches=n_batches, warmup=warmup, max_seconds=max_seconds, warmup_s=warmup_s, align=16,
                     min_seconds=min_seconds,
                     count=lambda b: (b['X'] if isinstance(b, dict) else b[0]).shape[0], consume=consume)
    extra = t_call - t_start   # setup: opening the file, building the loader, loading the matrix
    r['items_per_s_incl_first'] = r['n_items'] / (r['n_items'] / r['items_per_s_incl_first'] + extra)
    r['first_batch_s'] += extra
    out = {'cells_per_s': r['items_per_s'], 'cells_per_s_incl_first': r['items_per_s_incl_first'],
           'first_batch_s': r['first_batch_s'], 'n_batches': r['n_batches'],
           # labels go back to the parent, which computes TV once with spatial_dl.randomness (whose import,
           # ~3 s with matplotlib, would otherwise be paid by every candidate process)
           '_label_batches': [b.tolist() for b in label_batches],
           'n_cells': r['n_items'], 'steady_s': r['steady_s']}
    if first:
        import h5py
        rows = np.asarray(first['rows'])
        with h5py.File(path, 'r') as f:
            g = f['X']; ip = g['indptr']
            ref = np.zeros((len(rows), n_vars), np.float32)
            for i, row in enumerate(rows):
                a, b = int(ip[row]), int(ip[row + 1])
                ref[i, g['indices'][a:b]] = g['data'][a:b]
        out['values_ok'] = bool(np.array_equal(first['X'].numpy(), ref))
    return out


def _common_kw(path, n_vars, n_batches, warmup, max_seconds, warmup_s=0.0):
    # fast loaders get through n_batches in well under a second: time them for >= warmup_s too (a steadier figure
    # that spans epoch boundaries in proportion), slow ones stop after n_batches as before
    return dict(path=path, n_vars=n_vars, n_batches=n_batches, warmup=warmup, max_seconds=max_seconds,
                warmup_s=warmup_s, min_seconds=min(warmup_s, max_seconds / 4), labels=read_labels(path))


def run_spatial_dl(path, n_vars, batch_size=256, strategy='block', block_size=None, fetch_factor=None, num_workers=0,
                   n_batches=160, warmup=5, max_seconds=20.0, warmup_s=0.0, seed=0) -> dict:
    "spatial_dl.loaders.AnnDataset (+ make_dataloader when num_workers > 0); block_size/fetch_factor None: its defaults."
    import torch  # noqa: F401
    from spatial_dl.loaders import AnnDataset, make_dataloader
    ckw = _common_kw(path, n_vars, n_batches, warmup, max_seconds, warmup_s)
    t0 = time.perf_counter()
    kw = dict(batch_size=batch_size, strategy=strategy, seed=seed, obs_keys=(LABEL_KEY,), output='dense')
    if block_size is not None: kw['block_size'] = block_size
    if fetch_factor is not None: kw['fetch_factor'] = fetch_factor
    ds = AnnDataset([str(path)], **kw)
    params = repr(ds.strategy)
    loader = make_dataloader(ds, num_workers=num_workers) if num_workers else ds
    def epoch(e): ds.set_epoch(e); return loader
    it = _epochs(epoch)
    def labels_of(b, labels):
        idx = np.asarray(b['index'])
        if LABEL_KEY in b and not np.array_equal(np.asarray(b[LABEL_KEY]), labels[idx]):
            raise AssertionError(f"batch['{LABEL_KEY}'] disagrees with obs codes at batch['index']")
        return labels[idx]
    res = _measure(it, check_rows=lambda b: np.asarray(b['index']), labels_of=labels_of, t_start=t0, **ckw)
    res['params'] = params
    return res


def run_scdataset(path, n_vars, batch_size=256, block_size=16, fetch_factor=16, n_batches=160, warmup=5,
                  max_seconds=20.0, warmup_s=0.0, seed=0, num_workers=0) -> dict:
    """scDataset 0.3 over a backed AnnData: BlockShuffling, a fetch transform like its adata_to_mindex (densifies), then
    torch; with `num_workers`, inside a DataLoader(batch_size=None, prefetch_factor=fetch_factor + 1) as its README advises."""
    import anndata as ad
    import torch
    from scdataset import BlockShuffling, MultiIndexable, scDataset
    ckw = _common_kw(path, n_vars, n_batches, warmup, max_seconds, warmup_s)
    t0 = time.perf_counter()
    adata = ad.read_h5ad(path, backed='r')
    obs_names = adata.obs_names
    pos = {n: i for i, n in enumerate(obs_names)}
    def to_torch(mb):
        X = mb['X']
        return {'X': torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), 'cell_type': mb[LABEL_KEY],
                'names': mb['_names']}
    def fetch_tf(view):   # what scdataset.transforms.adata_to_mindex does, plus obs_names to check values
        mem = view.to_memory()
        X = mem.X.toarray() if hasattr(mem.X, 'toarray') else np.asarray(mem.X)
        return MultiIndexable({'X': X, LABEL_KEY: mem.obs[LABEL_KEY].cat.codes.to_numpy().astype(np.int64),
                               '_names': np.asarray(mem.obs_names)})
    ds = scDataset(adata, BlockShuffling(block_size=block_size), batch_size=batch_size, fetch_factor=fetch_factor,
                   fetch_transform=fetch_tf, batch_transform=to_torch, seed=seed)
    it = ds
    if num_workers:
        from torch.utils.data import DataLoader
        it = DataLoader(ds, batch_size=None, num_workers=num_workers, prefetch_factor=fetch_factor + 1)
    loader = it
    it = _epochs(lambda e: loader)
    labels_of = lambda b, labels: np.asarray(b['cell_type'])
    rows = lambda b: np.array([pos[n] for n in b['names']])
    return _measure(it, labels_of=labels_of, check_rows=rows, t_start=t0, **ckw)


def run_annloader(path, n_vars, batch_size=256, n_batches=160, warmup=5, max_seconds=20.0, warmup_s=0.0, seed=0) -> dict:
    "anndata.experimental.AnnLoader (deprecated in 0.12.17) over a backed AnnData, shuffle=True, densified."
    import warnings
    import anndata as ad
    import torch
    warnings.simplefilter('ignore')
    from anndata.experimental import AnnLoader
    ckw = _common_kw(path, n_vars, n_batches, warmup, max_seconds, warmup_s)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    adata = ad.read_h5ad(path, backed='r')
    pos = {n: i for i, n in enumerate(adata.obs_names)}
    loader = AnnLoader(adata, batch_size=batch_size, shuffle=True)
    cats = {c: i for i, c in enumerate(adata.obs[LABEL_KEY].cat.categories)}
    def batches():
        for b in _epochs(lambda e: loader):
            X = b.X
            X = X.to_dense() if X.layout != torch.strided else X
            yield {'X': X.to(torch.float32), 'ct': b.obs[LABEL_KEY], 'names': b.obs_names}
    def labels_of(b, labels):
        ct = b['ct']
        return np.asarray(ct.cat.codes if hasattr(ct, 'cat') else [cats[c] for c in ct])
    rows = lambda b: np.array([pos[n] for n in b['names']])
    return _measure(batches(), labels_of=labels_of, check_rows=rows, t_start=t0, **ckw)


def run_naive(path, n_vars, batch_size=256, n_batches=160, warmup=5, max_seconds=20.0, warmup_s=0.0, seed=0, reader='anndata') -> dict:
    "Naive full random: each batch = random rows (a permutation's slice), sorted, read from the backed file, densified."
    import torch
    import anndata as ad
    ckw = _common_kw(path, n_vars, n_batches, warmup, max_seconds, warmup_s)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if reader == 'anndata':
        X = ad.read_h5ad(path, backed='r').X   # a backed CSR dataset
        n = X.shape[0]
        read = lambda idx: X[idx].toarray()
    else:
        import h5py
        import scipy.sparse as sp
        g = h5py.File(path, 'r')['X']
        ip = g['indptr'][:]; n = len(ip) - 1
        def read(idx):
            parts_i, parts_d, lens = [], [], []
            for r in idx:
                a, b = ip[r], ip[r + 1]
                parts_i.append(g['indices'][a:b]); parts_d.append(g['data'][a:b]); lens.append(b - a)
            m = sp.csr_matrix((np.concatenate(parts_d), np.concatenate(parts_i), np.concatenate([[0], np.cumsum(lens)])),
                              shape=(len(idx), n_vars))
            return m.toarray()
    def epoch(e):
        perm = rng.permutation(n)
        for s in range(0, n - batch_size + 1, batch_size):
            idx = np.sort(perm[s:s + batch_size])
            yield {'X': torch.from_numpy(read(idx).astype(np.float32, copy=False)), 'index': idx}
    return _measure(_epochs(epoch), labels_of=lambda b, labels: labels[b['index']], check_rows=lambda b: b['index'],
                    t_start=t0, **ckw)


def run_in_memory(path, n_vars, batch_size=256, n_batches=160, warmup=5, max_seconds=20.0, warmup_s=0.0, seed=0) -> dict:
    "Reference: the whole CSR in RAM (anndata.read_h5ad, index dtypes matched), random fancy index per batch + densify."
    import anndata as ad
    import torch
    ckw = _common_kw(path, n_vars, n_batches, warmup, max_seconds, warmup_s)
    t0 = time.perf_counter()
    X = ad.read_h5ad(path).X
    if X.indptr.dtype != X.indices.dtype:
        # scipy's row fancy-indexing casts a mismatched `indices` (the whole array!) on every call: ~100 ms per batch
        # for int64 indptr + int32 indices. A reference should be the best one can do in memory, so match them once.
        idx_t = np.int32 if X.nnz < 2**31 and X.shape[1] < 2**31 else np.int64
        X.indptr, X.indices = X.indptr.astype(idx_t), X.indices.astype(idx_t)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    def epoch(e):
        perm = rng.permutation(X.shape[0])
        for s in range(0, X.shape[0] - batch_size + 1, batch_size):
            idx = perm[s:s + batch_size]
            yield {'X': torch.from_numpy(X[idx].toarray().astype(np.float32, copy=False)), 'index': idx}
    res = _measure(_epochs(epoch), labels_of=lambda b, labels: labels[b['index']], check_rows=lambda b: b['index'],
                   t_start=t0, **ckw)
    res['load_s'] = load_s
    return res


def run_annbatch(path, n_vars, **kw) -> dict:
    "annbatch, only where it imports (it needs Python >= 3.12 and a conversion to its own zarr store)."
    import annbatch  # noqa: F401  -- raises ImportError here on Python 3.11
    raise NotImplementedError('annbatch imported, but this benchmark does not drive it yet')


# ================================================================================================ driver
def candidates(path, n_vars, n_batches, warmup, max_seconds, workers=(1, 2), same_params_row=True, warmup_s=0.0,
               anndata_path=None, gzip_path=None) -> dict:
    me = str(Path(__file__).resolve())
    kw = dict(path=str(path), n_vars=n_vars, n_batches=n_batches, warmup=warmup, max_seconds=max_seconds, warmup_s=warmup_s)
    c = {
        'spatial_dl block': (f'{me}:run_spatial_dl', dict(kw, strategy='block')),
        'spatial_dl random': (f'{me}:run_spatial_dl', dict(kw, strategy='random')),
        'spatial_dl sequential': (f'{me}:run_spatial_dl', dict(kw, strategy='sequential')),
    }
    if same_params_row:   # the same knobs as the scDataset row, whatever the loader's defaults are
        c['spatial_dl block b16/f16'] = (f'{me}:run_spatial_dl', dict(kw, strategy='block', block_size=16, fetch_factor=16))
    if anndata_path is not None:   # the same cells, chunked as anndata writes them (informational rows)
        for s in ('block', 'random'):
            c[f'spatial_dl {s} (anndata-written file)'] = (f'{me}:run_spatial_dl', dict(kw, path=str(anndata_path), strategy=s))
    if gzip_path is not None:      # the same cells, gzip-compressed by anndata (informational rows)
        for s in ('block', 'random'):
            c[f'spatial_dl {s} (gzip file)'] = (f'{me}:run_spatial_dl', dict(kw, path=str(gzip_path), strategy=s))
        c['scDataset b16/f16 (gzip file)'] = (f'{me}:run_scdataset', dict(kw, path=str(gzip_path)))
    for w in workers:
        c[f'spatial_dl block, {w} worker' + ('s' if w > 1 else '')] = (f'{me}:run_spatial_dl', dict(kw, strategy='block', num_workers=w))
    c.update({
        'scDataset b16/f16': (f'{me}:run_scdataset', kw),
        **({'scDataset b16/f16, 2 workers': (f'{me}:run_scdataset', dict(kw, num_workers=2))} if same_params_row else {}),
        'AnnLoader (backed)': (f'{me}:run_annloader', kw),
        'naive sorted-batch reads': (f'{me}:run_naive', kw),
        'in-memory CSR reference': (f'{me}:run_in_memory', kw),
    })
    return c


LOADER_MODULES = ('core', 'shuffle', 'readers', 'loaders', 'randomness', 'datasets')


def code_fingerprint(modules=LOADER_MODULES) -> str|None:
    "Hash of the spatial_dl modules on the loader path: compared before and after a run to catch code edited mid-run."
    spec = importlib.util.find_spec('spatial_dl')
    if spec is None or not spec.submodule_search_locations: return None
    h = hashlib.sha1()
    root = Path(list(spec.submodule_search_locations)[0])
    for m in modules:
        f = root / f'{m}.py'
        if f.exists(): h.update(f.name.encode()); h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _avail(mod: str) -> bool:
    try: return importlib.util.find_spec(mod) is not None
    except Exception: return False


def paired_ratio(rows: list[dict], num: list[str], den: str, key: str='cells_per_s') -> float|None:
    """Median over rounds of (best of `num` in that round) / `den` in that round.

    Candidates of one round ran back to back, so a per-round ratio cancels most of the load drift of a shared
    machine; its median is steadier than the ratio of two medians."""
    by = {}
    for r in rows:
        v = r.get(key)
        if 'error' not in r and isinstance(v, (int, float)) and v == v: by.setdefault(r['repeat'], {})[r['name']] = v
    vals = []
    for rnd in by.values():
        n = [rnd[x] for x in num if x in rnd]
        if n and rnd.get(den): vals.append(max(n) / rnd[den])
    return float(np.median(vals)) if vals else None


def compute_ratios(med: dict, rows: list[dict]|None=None, rss_limit_mb=1024) -> dict:
    "The issue's targets from the median rows (keyed by candidate name); speed ratios paired per round when `rows` are given."
    g = lambda name, k: (med.get(name) or {}).get(k)
    def div(a, b): return a / b if (a is not None and b) else None
    blk, sc = g('spatial_dl block', 'cells_per_s'), g('scDataset b16/f16', 'cells_per_s')
    rnd, naive = g('spatial_dl random', 'cells_per_s'), g('naive sorted-batch reads', 'cells_per_s')
    wn = [n for n in med if n.startswith('spatial_dl block, ') and g(n, 'cells_per_s') is not None]
    w = [g(n, 'cells_per_s') for n in wn]
    sdl = [n for n in med if n.startswith('spatial_dl') and g(n, 'first_batch_s') is not None]
    sdl_main = [n for n in sdl if ' b16/f16' not in n]   # the extra same-knobs row is informational
    first = max((g(n, 'first_batch_s') for n in sdl_main), default=None)
    rss = max((g(n, 'peak_rss_mb') for n in sdl_main if ', ' not in n and g(n, 'peak_rss_mb') is not None), default=None)
    tree = lambda n: g(n, 'peak_pss_tree_mb') or g(n, 'peak_rss_tree_mb') or 0   # PSS: shared arenas counted once
    rss_w = max((tree(n) for n in sdl_main if ', ' in n), default=None)
    def ratio(num, den, of_medians, what):
        if rows is None: return of_medians, f'{what} (ratio of medians)'
        v = paired_ratio(rows, num, den)
        om = 'n/a' if of_medians is None else f'{of_medians:.2f}'
        return v, f'{what} (median of per-round ratios; ratio of medians {om})'
    r_sc = ratio(['spatial_dl block'], 'scDataset b16/f16', div(blk, sc), 'spatial_dl block / scDataset b16/f16 cells/s')
    r_nv = ratio(['spatial_dl random'], 'naive sorted-batch reads', div(rnd, naive), 'spatial_dl random / naive sorted-batch reads')
    r_w = ratio(wn, 'spatial_dl block', div(max(w) if w else None, blk), 'best of 1 or 2 DataLoader workers / one process')
    return {
        'block_cells_per_s': target(blk, '>=', 35000, "spatial_dl block shuffle (the loader's default knobs), one process, steady state"),
        'block_over_scdataset': target(r_sc[0], '>=', 2.4, r_sc[1]),
        'block_tv': target(g('spatial_dl block', 'tv'), '<=', 0.11, 'mean TV of cell-type mix per batch vs global'),
        'random_over_naive': target(r_nv[0], '>=', 10, r_nv[1]),
        'first_batch_s': target(first, '<', 1.0, 'worst time to first batch over the spatial_dl candidates'),
        'peak_rss_mb': target(rss, '<', rss_limit_mb, 'largest peak RSS of the single-process spatial_dl candidates'),
        'peak_rss_workers_tree_mb': target(rss_w or None, '<', 2 * rss_limit_mb,
                                           'sampled PSS of main process + DataLoader workers: shared-memory batches counted once (informational bound)'),
        'workers_over_single': target(r_w[0], '>=', 1.0, r_w[1]),
    }


COLUMNS = [('name', 'loader'), ('cells_per_s', 'cells/s', '{:,.0f}'), ('cells_per_s_incl_first', 'incl. 1st', '{:,.0f}'),
           ('first_batch_s', '1st batch s', '{:.3f}'), ('tv', 'TV', '{:.3f}'), ('peak_rss_mb', 'peak RSS MB', '{:,.0f}'),
           ('peak_rss_tree_mb', 'tree RSS MB', '{:,.0f}'), ('peak_pss_tree_mb', 'tree PSS MB', '{:,.0f}'), ('values_ok', 'values ok'), ('n_ok', 'runs ok'), ('note', 'note')]


def main(argv=None) -> int:
    p = base_argparser(__doc__.splitlines()[0])
    p.add_argument('--data-dir', default=os.environ.get('SPATIAL_DL_BENCH_DATA', '/tmp/spatial_dl_bench'),
                   help='where the generated .h5ad files are kept and reused')
    p.add_argument('--only', default=None, help='comma-separated substrings: run only candidates whose name contains one')
    p.add_argument('--n-obs', type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument('--n-vars', type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument('--n-batches', type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    t_all = time.perf_counter()
    n_obs = a.n_obs or (20_000 if a.quick else 100_000)
    n_vars = a.n_vars or 20_000
    n_batches = a.n_batches or (32 if a.quick else 320)
    # Steady state: every candidate warms up for at least `warmup_s` seconds (one-off costs such as opening files,
    # spawning workers or loading compiled code stay in the "incl. 1st" column), iterating over as many epochs as it
    # takes. The timed window starts at a fetch boundary (1 + 15 + a multiple of 16 batches) and spans whole fetches,
    # so loaders that read 16 batches at once are not flattered by a partial window.
    warmup, max_seconds, warmup_s = (15, 4.0, 2.0) if a.quick else (15, 20.0, 2.0)
    repeats = a.repeats or (1 if a.quick else 5)
    path, gen = ensure_data(a.data_dir, n_obs, n_vars)
    labels = read_labels(path)
    tv_ideal = ideal_tv(labels)
    anndata_path = None if a.quick else ensure_anndata_copy(path)
    gzip_path = None if a.quick else ensure_anndata_copy(path, compression='gzip')
    cands = candidates(path, n_vars, n_batches, warmup, max_seconds, same_params_row=not a.quick, warmup_s=warmup_s,
                       anndata_path=anndata_path, gzip_path=gzip_path)
    if a.only: cands = {k: v for k, v in cands.items() if any(s.strip() in k for s in a.only.split(','))}
    have_sdl = _avail('spatial_dl.loaders') if _avail('spatial_dl') else False
    skipped = []
    if not have_sdl:
        skipped += [{'name': n, 'note': 'not available: spatial_dl.loaders missing'} for n in cands if n.startswith('spatial_dl')]
        cands = {k: v for k, v in cands.items() if not k.startswith('spatial_dl')}
    if not _avail('scdataset'):
        skipped.append({'name': 'scDataset b16/f16', 'note': 'not available: scdataset not installed'})
        cands = {k: v for k, v in cands.items() if not k.startswith('scDataset')}
    if _avail('annbatch'):
        cands['annbatch'] = (f'{Path(__file__).resolve()}:run_annbatch', dict(path=str(path), n_vars=n_vars))
    else:
        skipped.append({'name': 'annbatch', 'note': f'not available: not installed (annbatch needs Python >= 3.12; this is {sys.version.split()[0]})'})
    print(f'file: {path} ({path.stat().st_size / 2**30:.2f} GiB, {n_obs:,} x {n_vars:,}); ideal TV {tv_ideal:.3f}; '
          f'{len(cands)} candidates x {repeats} rounds; load {os.getloadavg()[0]:.1f}', file=sys.stderr)
    fp_before, load_start = code_fingerprint(), os.getloadavg()[0]
    rows = interleaved(cands, repeats=repeats, timeout=a.timeout)
    fp_after = code_fingerprint()
    for r in rows:
        lb = r.pop('_label_batches', None)
        if lb: r.update(tv_mixing([np.asarray(b, np.int64) for b in lb], labels))
    med = medians(rows)
    for m in med:
        m['tv_ideal'] = tv_ideal
        if m.get('error'):
            m['note'] = (m['error'] if not m['n_ok'] else f"{m['n_runs'] - m['n_ok']} of {m['n_runs']} runs failed: {m['error']}")[:70]
        elif m.get('params'): m['note'] = m['params'][:70]
    table_rows = med + skipped
    print(f'\n{n_obs:,} x {n_vars:,} CSR h5ad, batch 256, dense float32 torch tensors; median of {repeats} round(s); '
          f'ideal TV (full random) {tv_ideal:.3f}')
    print_table(table_rows, COLUMNS)
    ratios = compute_ratios({m['name']: m for m in med}, rows)
    print()
    print_table([{'ratio': k, **v} for k, v in ratios.items()],
                ['ratio', ('value', 'value', '{:,.3f}'), ('target', 'goal'), 'pass', 'note'])
    elapsed = time.perf_counter() - t_all
    print(f'\ntotal {elapsed:.0f} s; load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} now', file=sys.stderr)
    if fp_before != fp_after:
        print(f'WARNING: spatial_dl ({", ".join(LOADER_MODULES)}) changed during this run: rows may mix code versions',
              file=sys.stderr)
    write_json(a.json, rows, ratios, packages=PACKAGES, extra={
        'benchmark': 'loaders', 'command': ' '.join([Path(sys.executable).name, *sys.argv]) if argv is None else argv,
        'params': dict(n_obs=n_obs, n_vars=n_vars, batch_size=256, n_batches=n_batches, warmup=warmup,
                       warmup_s=warmup_s, max_seconds=max_seconds, repeats=repeats, quick=a.quick),
        'data': {'path': str(path), 'generator': gen, 'bytes': path.stat().st_size, 'ideal_tv': tv_ideal},
        'medians': med, 'not_available': skipped, 'elapsed_s': elapsed, 'loadavg_1m_start': load_start,
        'spatial_dl_code': {'before': fp_before, 'after': fp_after, 'changed_during_run': fp_before != fp_after}})
    if a.json: print(f'wrote {a.json}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
