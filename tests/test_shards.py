"""Paired-embedding shards: round trips, WebDataset key rules, splits, exactly-once reading, atomicity, bad input, CLI."""
import hashlib, io, json, os, pickle, tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from webdataset.tariterators import group_by_keys

import spatial_dl.shards as S
from spatial_dl.shards import (DTYPE_MAP, prepare_shards, shard_pipeline, read_manifest, verify_shards, group_members,
                               iter_tar, write_shard, tensor_to_bytes, npy_loads, from_storage, cell_id_to_index,
                               prepare_shards_main, parse_args, build_samples, pair_embeddings, assign_splits, load_embedding)

torch.set_num_threads(1)


def _data(n=120, dm=6, dt=4, seed=0, ids=None):
    rng = np.random.default_rng(seed)
    morph = rng.normal(size=(n, dm)).astype(np.float32)
    tx_rows = rng.permutation(n)
    tx = rng.normal(size=(n, dt)).astype(np.float32)
    ids = ids if ids is not None else [f"slide_cell_{i:05d}" for i in tx_rows]
    pos = rng.uniform(0, 100, (n, 2))
    return morph, pos, tx, ids, tx_rows


def _read_all(root, split, **kw):
    out = {}
    for m, t, p, meta in shard_pipeline(root, split, **kw):
        assert meta['key'] not in out
        out[meta['key']] = (m, t, p, meta)
    return out


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize('dtype', list(DTYPE_MAP))
def test_round_trip_exact_every_dtype(tmp_path, dtype):
    morph, pos, tx, ids, tx_rows = _data()
    morph[0, 0] = 1 + 2**-12  # a value float16/bfloat16 must round
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', dtype=dtype, val_fraction=0.25, max_count=17)
    tdt = DTYPE_MAP[dtype][0]
    seen = 0
    for split in ('train', 'val'):
        for key, (mm, tt, pp, meta) in _read_all(tmp_path, split).items():
            r = meta['row_index']
            assert mm.dtype == tdt and tt.dtype == tdt
            assert torch.equal(mm, torch.from_numpy(morph[r]).to(tdt))   # bit-exact: the cast, nothing else
            j = ids.index(meta['cell_id'])
            assert torch.equal(tt, torch.from_numpy(tx[j]).to(tdt))
            assert pp.tolist() == [np.float32(pos[r, 0]), np.float32(pos[r, 1])]
            assert (meta['x'], meta['y']) == (float(pos[r, 0]), float(pos[r, 1]))  # JSON keeps float64 exactly
            assert meta['dtype'] == dtype and meta['split'] == split
            seen += 1
    assert seen == len(morph) == m['counts']['paired']


def test_bfloat16_is_stored_as_raw_bits():
    x = torch.tensor([1.0, -2.5, 3.14159, 1e-3])
    b = tensor_to_bytes(x, 'bfloat16')
    a = np.load(io.BytesIO(b), allow_pickle=False)
    assert a.dtype == np.uint16
    assert torch.equal(from_storage(a, 'bfloat16'), x.to(torch.bfloat16))
    assert (a == x.to(torch.bfloat16).view(torch.uint16).numpy()).all()


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=20), st.sampled_from(list(DTYPE_MAP)))
@settings(max_examples=60, deadline=None)
def test_npy_payload_round_trip(vals, dtype):
    x = torch.tensor(vals, dtype=torch.float32)
    if dtype == 'float16': x = x.clamp(-65504, 65504)
    b = tensor_to_bytes(x, dtype)
    assert torch.equal(from_storage(npy_loads(b), dtype), x.to(DTYPE_MAP[dtype][0]))
    ref = io.BytesIO(); np.save(ref, S.to_storage(x, dtype)); assert b == ref.getvalue()


# ------------------------------------------------------------------------------------------- key rules
TRICKY = ['Slide.A/cell_1', 'slide.a/CELL_2', 'x..y_3', '__meta___4', 'A_5', 'a_5b6', '.hidden_7', 'UPPER.CASE.ID_0']


def test_tricky_ids_round_trip_to_the_right_sample(tmp_path):
    n = 8
    morph, pos, tx, _, _ = _data(n=n)
    ids = TRICKY  # numeric suffixes 1,2,3,4,5,6,7,0 -> morphology rows
    prepare_shards(morph, pos, tx, ids, tmp_path, 'My.Dataset/V1', val_fraction=0.0, max_count=3)
    got = _read_all(tmp_path, 'train')
    assert len(got) == n
    for key, (mm, tt, pp, meta) in got.items():
        assert '.' not in key and '/' not in key and key == key.lower() and not key.startswith('_')
        cid = meta['cell_id']; j = ids.index(cid)
        assert meta['row_index'] == cell_id_to_index(cid)
        assert torch.equal(mm, torch.from_numpy(morph[cell_id_to_index(cid)]))
        assert torch.equal(tt, torch.from_numpy(tx[j]))
    # the same shards through webdataset's own reader give the same samples
    import webdataset as wds
    m = read_manifest(tmp_path)
    urls = [str(tmp_path / s['name']) for s in m['shards']['train']]
    theirs = {s['__key__']: json.loads(s['json'])['cell_id'] for s in wds.WebDataset(urls, shardshuffle=False)}
    assert theirs == {k: v[3]['cell_id'] for k, v in got.items()}


_name = st.text(alphabet='aB._/-x1', min_size=1, max_size=8)


@given(st.lists(st.one_of(st.none(), st.tuples(_name, st.binary(max_size=3))), max_size=25))
@settings(max_examples=300, deadline=None)
def test_group_members_matches_webdataset(members):
    theirs_in = [{} if m is None else dict(fname=m[0], data=m[1], __url__='u') for m in members]
    try: theirs = list(group_by_keys(iter(theirs_in)))
    except ValueError as e: theirs = ('error', str(e.args[0]).split(':')[0])
    try: ours = list(group_members(members, url='u'))
    except ValueError as e: ours = ('error', str(e.args[0]).split(':')[0])
    assert ours == theirs


@given(st.lists(st.tuples(st.text(alphabet='abcXYZ._-0123/', min_size=1, max_size=120).filter(lambda s: s[0] not in './' and s[-1] != '/' and '//' not in s),
                          st.binary(max_size=700)), max_size=8, unique_by=lambda t: t[0]),
       st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_iter_tar_matches_tarfile(tmp_path, members, fmt):
    p = tmp_path / f'x{abs(hash((tuple(members), fmt)))}.tar'
    try:
        with tarfile.open(p, 'w', format=fmt) as tf:
            for name, data in members:
                ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 1.5
                tf.addfile(ti, io.BytesIO(data))
    except ValueError:
        return  # ustar cannot hold some long names: nothing to compare
    with tarfile.open(p) as tf:
        ref = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isreg()]
    ref = [(n, d) for n, d in ref if not (n.startswith('__') and n.endswith('__'))]
    assert [(n, bytes(d)) for n, d in iter_tar(p)] == ref
    # the fused reader groups exactly like group_members over iter_tar, which matches webdataset's group_by_keys
    try: ref_samples = list(group_members(iter_tar(p), url=str(p)))
    except ValueError as e: ref_samples = ('error', str(e.args[0]).split(':')[0])
    try: fused = list(S.tar_samples(p))
    except ValueError as e: fused = ('error', str(e.args[0]).split(':')[0])
    assert fused == ref_samples


def _outcome(fn):
    "Samples as comparable tuples, or the kind of error raised."
    try: return [tuple((k, bytes(v) if isinstance(v, memoryview) else v) for k, v in smp.items()) for smp in fn()]
    except (ValueError, UnicodeDecodeError) as e: return ('error', type(e).__name__, str(e.args[0]).split(':')[0].split(' ')[0])


def _general(p):
    return list(group_members(iter_tar(p), url=str(p)))


_keys = st.text(alphabet='ab.A_/-9', min_size=1, max_size=6)
_fields = st.lists(st.sampled_from(['morph.npy', 'TX.npy', 'json', 'a.b', 'x']), min_size=1, max_size=3)


@given(st.lists(st.tuples(_keys, _fields, st.integers(0, 1100)), min_size=1, max_size=12), st.booleans())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bulk_layout_matches_general_parser(tmp_path, spec, same_layout):
    # samples written by write_shard, with all of WebDataset's awkward cases (dots, slashes, upper case, '__', repeated
    # keys, duplicate fields, sizes crossing 512-byte blocks); same_layout makes every sample repeat the first one's
    # fields and sizes (keys of one length) so the one-pass path is taken whenever the names allow it
    if same_layout:
        _, f0, z0 = spec[0]
        spec = [(f"k{i:04d}" if j % 2 else k.ljust(6, 'q')[:6], f0, z0 + (i % 3)) for j, (i, (k, _, _)) in enumerate(enumerate(spec))]
    samples = [(k, {f: bytes([i % 251]) * (z + j) for j, f in enumerate(fs)}) for i, (k, fs, z) in enumerate(spec)]
    p = tmp_path / 's.tar'
    if p.exists(): p.unlink()
    write_shard(p, samples)
    assert _outcome(lambda: S.tar_samples(p)) == _outcome(lambda: _general(p))


def test_bulk_layout_taken_for_prepared_shards_and_robust_to_any_header_byte(tmp_path):
    morph, pos, tx, ids, _ = _data(n=40)
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0)
    p = tmp_path / m['shards']['train'][0]['name']
    lay = S.regular_layout(S.map_shard(p), str(p))
    assert lay is not None and len(lay[0]) == 40 and lay[1] == ['morph.npy', 'tx.npy', 'json']
    assert _outcome(lambda: S.tar_samples(p)) == _outcome(lambda: _general(p))
    # change one byte of one header of a middle sample: the one-pass check must notice whatever the general parser would
    raw = p.read_bytes(); stride = lay[2][1, 0] - lay[2][0, 0]
    rng = np.random.default_rng(0)
    q = tmp_path / 'mut.tar'
    for trial in range(300):
        b = bytearray(raw)
        hdr = int(lay[2][rng.integers(1, 39), rng.integers(0, 3)]) - 512
        i = hdr + int(rng.choice([rng.integers(0, 16), rng.integers(0, 512), 124 + rng.integers(0, 12), 156, 345]))
        b[i] = int(rng.choice([0, 32, ord('.'), ord('/'), ord('_'), ord('5'), ord('7'), ord('A'), int(rng.integers(0, 256))]))
        q.write_bytes(bytes(b))
        assert _outcome(lambda: S.tar_samples(q)) == _outcome(lambda: _general(q)), (trial, i - hdr)
    # a zero block in place of a header ends the archive early in both
    b = bytearray(raw); h = int(lay[2][20, 0]) - 512; b[h:h + 512] = bytes(512); q.write_bytes(bytes(b))
    assert len(list(S.tar_samples(q))) == 20 and _outcome(lambda: S.tar_samples(q)) == _outcome(lambda: _general(q))


def test_write_shard_is_a_standard_tar(tmp_path):
    samples = [(f"k-{i:09d}", {'morph.npy': tensor_to_bytes(np.arange(i + 1.0)), 'json': b'{"i":%d}' % i}) for i in range(5)]
    info = write_shard(tmp_path / 'a.tar', samples)
    with tarfile.open(tmp_path / 'a.tar') as tf:
        names = tf.getnames()
        assert names == [f"{k}.{f}" for k, p in samples for f in p]
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in tf.getmembers())
    assert info == dict(name='a.tar', count=5, bytes=(tmp_path / 'a.tar').stat().st_size,
                        sha256=hashlib.sha256((tmp_path / 'a.tar').read_bytes()).hexdigest())
    assert info['bytes'] % 10240 == 0


# ------------------------------------------------------------------------------------------- metadata, manifest, splits
@pytest.mark.parametrize('table', ['parquet', 'csv'])
def test_metadata_table_matches_shards(tmp_path, table):
    morph, pos, tx, ids, _ = _data(n=90)
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.2, max_count=25, table=table)
    tab = pd.read_parquet(tmp_path / m['table']) if table == 'parquet' else pd.read_csv(tmp_path / m['table'])
    assert list(tab.columns) == ['key', 'cell_id', 'row_index', 'x', 'y', 'split', 'shard']
    assert tab['key'].is_unique and len(tab) == 90
    for split in ('train', 'val'):
        for lst in [m['shards'][split]]:
            for s in lst:
                keys = [n.split('.')[0] for n, _ in iter_tar(tmp_path / s['name'])][::3]
                assert len(keys) == s['count']
                sub = tab[tab.shard == s['name']]
                assert sorted(sub['key']) == sorted(keys) and (sub['split'] == split).all()
        got = _read_all(tmp_path, split)
        t = tab[tab.split == split].set_index('key')
        assert sorted(got) == sorted(t.index)
        for k, (_, _, _, meta) in got.items():
            assert (meta['cell_id'], meta['row_index']) == (str(t.loc[k, 'cell_id']), int(t.loc[k, 'row_index']))
            assert np.isclose(meta['x'], t.loc[k, 'x']) and np.isclose(meta['y'], t.loc[k, 'y'])
    assert m['counts']['train'] == sum(s['count'] for s in m['shards']['train'])
    assert verify_shards(tmp_path) == m


def test_same_inputs_byte_identical(tmp_path):
    morph, pos, tx, ids, _ = _data()
    kw = dict(dtype='bfloat16', split='block', block_size=30, val_fraction=0.3, max_count=20)
    m1 = prepare_shards(morph, pos, tx, ids, tmp_path / 'a', 'ds', **kw)
    m2 = prepare_shards(morph, pos, tx, ids, tmp_path / 'b', 'ds', **kw)
    assert m1 == m2
    names = sorted(p.name for p in (tmp_path / 'a').iterdir())
    assert names == sorted(p.name for p in (tmp_path / 'b').iterdir())
    for n in names:
        if n.endswith('.tar') or n == 'manifest.json':
            assert (tmp_path / 'a' / n).read_bytes() == (tmp_path / 'b' / n).read_bytes()
    m3 = prepare_shards(morph, pos, tx, ids, tmp_path / 'c', 'ds', **{**kw, 'dtype': 'float16'})
    assert m3['shards']['train'][0]['sha256'] != m1['shards']['train'][0]['sha256']


def test_split_determinism_and_semantics(tmp_path):
    n = 400
    xy = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2) * 10.0
    groups = np.repeat(['s0', 's1'], 200)
    for method, kw in [('random', {}), ('block', dict(xy=xy, block_size=50, groups=groups))]:
        a = assign_splits(n, method, 0.25, seed=3, **kw); b = assign_splits(n, method, 0.25, seed=3, **kw)
        c = assign_splits(n, method, 0.25, seed=4, **kw)
        assert (a == b).all() and (a != c).any()
        assert 0.2 <= (a == 'val').mean() <= 0.4
    blk = assign_splits(n, 'block', 0.25, seed=3, xy=xy, block_size=50, groups=groups)
    cell = [f"{g}:{int(x // 50)}:{int(y // 50)}" for g, (x, y) in zip(groups, xy)]
    by_block = pd.Series(blk).groupby(cell).nunique()
    assert (by_block == 1).all()  # no block holds both train and val spots
    g = assign_splits(n, 'group', groups=groups, val_groups=['s1'])
    assert (g[groups == 's1'] == 'val').all() and (g[groups == 's0'] == 'train').all()
    # through prepare_shards: the same seed gives the same table
    morph, pos, tx, ids, _ = _data(n=100)
    t = [pd.read_parquet(tmp_path / d / 'metadata.parquet') for d in ('x', 'y') if prepare_shards(morph, pos, tx, ids, tmp_path / d, 'ds', seed=9)]
    assert t[0].equals(t[1])


def test_group_split_needs_labels():
    with pytest.raises(ValueError, match="needs groups and val_groups"): assign_splits(4, 'group')
    with pytest.raises(ValueError, match="split must be one of"): assign_splits(4, 'spatial')
    with pytest.raises(ValueError, match="val_fraction must be in"): assign_splits(4, 'random', 1.0)


def test_shard_limits(tmp_path):
    morph, pos, tx, ids, _ = _data(n=100, dm=64)
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0, max_count=1000, max_bytes=40_000)
    sizes = [s['bytes'] for s in m['shards']['train']]
    assert len(sizes) > 2 and max(sizes) <= 40_000
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0, max_count=7, overwrite=True)
    assert [s['count'] for s in m['shards']['train']] == [7] * 14 + [2]
    # the overwrite removed the earlier, differently cut shards
    assert sorted(p.name for p in tmp_path.glob('*.tar')) == [s['name'] for s in m['shards']['train']]


def test_pairing_counts_unpaired(tmp_path):
    morph, pos, tx, ids, tx_rows = _data(n=50)
    ids = list(ids); ids[0] = 'slide_cell_00999'  # no such morphology row
    tx2, ids2 = tx[5:], ids[5:]  # drop 5 transcription rows (one of them was the bad one)
    ids2[0] = 'slide_cell_00777'
    m = prepare_shards(morph, pos, tx2, ids2, tmp_path, 'ds', val_fraction=0.0)
    assert m['counts'] == dict(morph_rows=50, tx_rows=45, paired=44, morph_only=6, tx_only=1, train=44, val=0)
    # explicit row indices override the id suffixes
    p = pair_embeddings(3, ['a', 'b', 'c'], row_indices=[2, 0, 7])
    assert p.tx_rows.tolist() == [1, 0] and p.morph_rows.tolist() == [0, 2] and p.n_tx_only == 1


# ------------------------------------------------------------------------------------------- exactly once
def test_each_sample_once_across_two_workers(tmp_path):
    morph, pos, tx, ids, _ = _data(n=200)
    prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0, max_count=15)
    pipe = shard_pipeline(tmp_path, 'train', batch_size=8, shuffle_buffer=32, seed=1)
    dl = torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=2)
    keys = [k for _, _, _, meta in dl for k in meta['key']]
    assert len(keys) == 200 and len(set(keys)) == 200


def test_ranks_and_workers_partition(tmp_path):
    morph, pos, tx, ids, _ = _data(n=230)
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0, max_count=20)  # 12 shards, last holds 10
    for world, workers in [(2, 1), (2, 2), (3, 2)]:
        per_rank, allkeys = [], []
        for r in range(world):
            src = shard_pipeline(tmp_path, 'train', rank=r, world_size=world, even=False).pipeline[0]
            idx = [i for w in range(workers) for i in src.plan(w, workers)[0]]
            allkeys += idx
        assert sorted(allkeys) == list(range(len(m['shards']['train'])))  # every shard once
        # even=True: the same number of samples on every rank, none twice
        counts, seen = [], []
        for r in range(world):
            pipe = shard_pipeline(tmp_path, 'train', rank=r, world_size=world)
            src = pipe.pipeline[0]
            n = 0
            for w in range(workers):
                idx, cap = src.plan(w, workers)
                sub = list(S._tar_to_samples(iter([dict(url=src.urls[i], cap=cap) for i in idx])))
                n += len(sub); seen += [s['__key__'] for s in sub]
            counts.append(n)
        assert len(set(counts)) == 1 and counts[0] > 0
        assert len(seen) == len(set(seen))


def test_set_epoch_changes_order_reproducibly(tmp_path):
    morph, pos, tx, ids, _ = _data(n=200)
    prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0, max_count=10)
    def order(epoch):
        p = shard_pipeline(tmp_path, 'train', shuffle_buffer=50, seed=2); p.set_epoch(epoch)
        return [meta['key'] for *_, meta in p]
    assert order(0) == order(0)
    assert order(0) != order(1) and sorted(order(0)) == sorted(order(1))


def test_epochs_advance_in_main_process_and_persistent_workers(tmp_path):
    morph, pos, tx, ids, _ = _data(n=200)
    prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0, max_count=10)
    p = shard_pipeline(tmp_path, 'train', shuffle_buffer=50, seed=2)
    keys = lambda it: [k for *_, meta in it for k in np.atleast_1d(meta['key'])]
    a, b = keys(p), keys(p)
    assert a != b and sorted(a) == sorted(b)  # a second pass is the next epoch
    p.set_epoch(0); assert keys(p) == a        # set_epoch goes back to a given epoch
    p.set_epoch(1); assert keys(p) == b
    dl = torch.utils.data.DataLoader(shard_pipeline(tmp_path, 'train', batch_size=10, shuffle_buffer=50, seed=2),
                                     batch_size=None, num_workers=2, persistent_workers=True)
    e0, e1 = keys(dl), keys(dl)
    assert e0 != e1 and sorted(e0) == sorted(e1) == sorted(a)  # persistent workers move on too, each sample once


def test_ddp_refuses_too_few_shards(tmp_path):
    morph, pos, tx, ids, _ = _data(n=20)
    prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0)
    with pytest.raises(ValueError, match='1 shards for world_size 2'):
        next(iter(shard_pipeline(tmp_path, 'train', rank=0, world_size=2)))


# ------------------------------------------------------------------------------------------- no pickle
def test_no_pickle_decoding(tmp_path):
    flag = tmp_path / 'pwned'
    class Evil:
        def __reduce__(self): return (os.system, (f"touch {flag}",))
    evil = pickle.dumps(Evil())
    obj = io.BytesIO(); np.save(obj, np.array([Evil()], dtype=object), allow_pickle=True)
    (tmp_path / 'd').mkdir()
    # a shard with a pickle field next to valid ones is read without touching it
    ok = {'morph.npy': tensor_to_bytes(np.ones(3)), 'tx.npy': tensor_to_bytes(np.ones(2)),
          'json': json.dumps(dict(key='k-000000000', cell_id='c_0', row_index=0, x=0.0, y=0.0, split='train', dtype='float32')).encode(),
          'pyd': evil}
    info = write_shard(tmp_path / 'd' / 'train-000000.tar', [('k-000000000', ok)])
    bad = dict(ok, **{'morph.npy': obj.getvalue()}); bad.pop('pyd')
    info2 = write_shard(tmp_path / 'd' / 'train-000001.tar', [('k-000000001', bad)])
    man = dict(format=S.FORMAT, dtype='float32', counts=dict(train=2, val=0), shards=dict(train=[info], val=[]))
    (tmp_path / 'd' / 'manifest.json').write_text(json.dumps(man))
    got = list(shard_pipeline(tmp_path / 'd', 'train'))
    assert len(got) == 1 and not flag.exists()
    man['shards']['train'] = [info2]; (tmp_path / 'd' / 'manifest.json').write_text(json.dumps(man))
    with pytest.raises(ValueError, match='object dtype .* refused'):
        list(shard_pipeline(tmp_path / 'd', 'train'))
    assert not flag.exists()


# ------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_refused_and_nothing_written(tmp_path):
    morph, pos, tx, ids, _ = _data(n=30)
    out = tmp_path / 'out'
    cases = [
        (dict(pos=pos[:-1]), 'positions must have one row per morphology row'),
        (dict(pos=pos[:, :1]), 'positions must have 2 columns'),
        (dict(morph=morph[0]), 'morphology embedding must be 2-D'),
        (dict(cell_ids=ids[:-1]), 'cell_ids must have one entry per transcription row'),
        (dict(cell_ids=ids[:-1] + ['slide_cell_x']), "'slide_cell_x' has no numeric suffix"),
        (dict(cell_ids=ids[:-1] + [ids[0]]), 'duplicate cell ids'),
        (dict(dtype='float8'), 'dtype must be one of'),
        (dict(dtype='bf16'), "did you mean 'bfloat16'"),
        (dict(max_count=0), 'max_count must be a positive integer'),
        (dict(table='feather'), 'table must be one of'),
        (dict(split='group'), 'needs groups and val_groups'),
        (dict(dataset='...'), 'no letters or digits'),
        (dict(groups=['a'] * 3, split='group', val_groups=['a']), 'groups must have one entry per morphology row'),
    ]
    for kw, msg in cases:
        args = dict(morph=morph, pos=pos, tx=tx, cell_ids=ids, out_dir=out, dataset='ds') | kw
        with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace('.', r'\.') if msg != '...' else msg):
            prepare_shards(**args)
        assert not out.exists() or not any(out.iterdir()), kw
    for arr, name in ((morph, 'morphology embedding'), (tx, 'transcription embedding')):
        bad = arr.copy(); bad[3, 1] = np.nan; bad[17, 0] = np.inf
        args = dict(morph=morph, pos=pos, tx=tx, cell_ids=ids, out_dir=out, dataset='ds')
        args['morph' if name.startswith('morph') else 'tx'] = bad
        with pytest.raises(ValueError, match=rf"{name} has NaN or inf in 2 rows: \[3, 17\]"): prepare_shards(**args)
    assert not out.exists() or not any(out.iterdir())


def test_existing_output_refused_unless_overwrite(tmp_path):
    morph, pos, tx, ids, _ = _data(n=30)
    prepare_shards(morph, pos, tx, ids, tmp_path, 'ds')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match='already holds shards'): prepare_shards(morph, pos, tx, ids, tmp_path, 'ds')
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    prepare_shards(morph * 2, pos, tx, ids, tmp_path, 'ds', overwrite=True)
    assert read_manifest(tmp_path)['shards'] != json.loads(before['manifest.json'])['shards']


def test_crash_mid_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    morph, pos, tx, ids, _ = _data(n=60)
    prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', max_count=10)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real, calls = S.write_shard, []
    def flaky(dest, samples, overwrite=False):
        calls.append(dest)
        if len(calls) == 3:
            with S.atomic_write(dest) as tmp:
                tmp.write_bytes(b'partial'); raise OSError('disk full')
        return real(dest, samples, overwrite)
    monkeypatch.setattr(S, 'write_shard', flaky)
    with pytest.raises(OSError, match='disk full'):
        prepare_shards(morph * 3, pos, tx, ids, tmp_path, 'ds', max_count=10, overwrite=True)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # the previous dataset is untouched, no staging folder or temporary file is left
    verify_shards(tmp_path)


def test_verify_detects_corruption(tmp_path):
    morph, pos, tx, ids, _ = _data(n=30)
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0)
    p = tmp_path / m['shards']['train'][0]['name']
    b = bytearray(p.read_bytes()); b[700] ^= 1; p.write_bytes(bytes(b))
    with pytest.raises(ValueError, match='does not match the manifest checksum'): verify_shards(tmp_path)
    with pytest.raises(FileNotFoundError, match='no manifest.json'): read_manifest(tmp_path / 'nope')


def test_truncated_shard_is_an_error(tmp_path):
    morph, pos, tx, ids, _ = _data(n=30)
    m = prepare_shards(morph, pos, tx, ids, tmp_path, 'ds', val_fraction=0.0)
    p = tmp_path / m['shards']['train'][0]['name']
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(ValueError, match='truncated'): list(shard_pipeline(tmp_path, 'train'))


# ------------------------------------------------------------------------------------------- files and CLI
def test_cli_from_files(tmp_path, capsys):
    morph, pos, tx, ids, _ = _data(n=40)
    np.save(tmp_path / 'm.npy', morph); np.save(tmp_path / 'p.npy', pos); torch.save(torch.from_numpy(tx), tmp_path / 't.pt')
    (tmp_path / 'ids.txt').write_text('\n'.join(ids) + '\n')
    out = tmp_path / 'out'
    rc = prepare_shards_main(['--morph', str(tmp_path / 'm.npy'), '--pos', str(tmp_path / 'p.npy'), '--tx', str(tmp_path / 't.pt'),
                              '--cell-ids', str(tmp_path / 'ids.txt'), '--dataset', 'cli', '--out', str(out), '--dtype', 'float16',
                              '--max-count', '9', '--table', 'csv'])
    assert rc == 0
    text = capsys.readouterr().out
    assert 'paired 40 cells' in text and str(out / 'manifest.json') in text
    m = read_manifest(out)
    assert m['dtype'] == 'float16' and m['counts']['paired'] == 40 and (out / 'metadata.csv').exists()
    with pytest.raises(FileExistsError):
        prepare_shards_main(['--morph', str(tmp_path / 'm.npy'), '--pos', str(tmp_path / 'p.npy'), '--tx', str(tmp_path / 't.pt'),
                             '--cell-ids', str(tmp_path / 'ids.txt'), '--dataset', 'cli', '--out', str(out)])
    with pytest.raises(SystemExit): parse_args(['--out', str(out)])  # no inputs and no --demo


def test_cli_from_h5ad(tmp_path):
    import anndata as ad
    morph, pos, tx, ids, _ = _data(n=25)
    a = ad.AnnData(X=np.zeros((25, 1), np.float32), obsm={'uni': morph, 'spatial': pos}); a.obs_names = [f"m{i}" for i in range(25)]
    a.write_h5ad(tmp_path / 'morph.h5ad')
    b = ad.AnnData(X=np.zeros((25, 1), np.float32), obsm={'X_pca': tx}); b.obs_names = ids
    b.write_h5ad(tmp_path / 'tx.h5ad')
    out = tmp_path / 'o'
    assert prepare_shards_main(['--morph', str(tmp_path / 'morph.h5ad'), '--morph-key', 'uni', '--tx', str(tmp_path / 'tx.h5ad'),
                                '--tx-key', 'X_pca', '--dataset', 'h5', '--out', str(out)]) == 0
    got = {**_read_all(out, 'train'), **_read_all(out, 'val')}
    assert len(got) == 25
    for mm, tt, pp, meta in got.values():
        assert np.allclose(mm.numpy(), morph[meta['row_index']]) and np.allclose(pp.numpy(), pos[meta['row_index']])
    with pytest.raises(ValueError, match='name an obsm key'): load_embedding(tmp_path / 'morph.h5ad')


def test_cli_demo(tmp_path, capsys):
    assert prepare_shards_main(['--demo', '--out', str(tmp_path), '--split', 'block', '--block-size', '500']) == 0
    m = read_manifest(tmp_path)
    assert m['counts']['val'] > 0 and m['counts']['tx_only'] == 3 and m['split']['method'] == 'block'
