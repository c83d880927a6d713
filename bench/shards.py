#!/usr/bin/env python
"""Paired-embedding shard benchmark: spatial_dl.shards against a straightforward `webdataset.ShardWriter` loop.

    .venv/bin/python bench/shards.py --quick                          # ≤ 60 s unloaded: 12,000 pairs, 256 + 128 dims
    .venv/bin/python bench/shards.py --json bench/results/shards.json # full: 100,000 pairs, 512 + 256 dims, 3 rounds

Writing: `prepare_shards` (validation, pairing by id, split, atomic shards, manifest with SHA-256, metadata table)
versus a plain loop `ShardWriter.write({'__key__', 'morph.npy', 'tx.npy', 'json'})` over the same float32 arrays and
the same samples per shard. MB/s = embedding bytes (n x (dm + dt) x 4) / wall seconds of the write, i.e. the same
work for both (data generation and imports excluded); file MB/s is also shown, but `tarfile` (used by ShardWriter)
adds a pax header to every member (its mtime is a float), so its files are ~1.6x larger for the same content.
Reading: one full pass, batches of 256, no sample shuffle, in one process (one core), over shards of each writer:
`shard_pipeline` versus `wds.WebDataset(urls, shardshuffle=False).decode().to_tuple(...).batched(256)`.
samples/s is wall-clock; samples per CPU-second (`process_time`) is the per-core figure, robust to other load.
Every run is a fresh process; candidates interleave round-robin over rounds; medians are reported.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent))
from _common import base_argparser, interleaved, medians, print_table, target, write_json, run_in_fresh_process  # noqa: E402

PACKAGES = ('spatial_dl', 'numpy', 'torch', 'webdataset', 'pandas', 'pyarrow')
HERE = 'bench/shards.py'


def _data(n: int, dm: int, dt: int, seed: int=0):
    rng = np.random.default_rng(seed)
    morph = rng.standard_normal((n, dm), dtype=np.float32)
    tx = rng.standard_normal((n, dt), dtype=np.float32)
    pos = rng.uniform(0, 10_000, (n, 2))
    ids = [f"slide_cell_{i:07d}" for i in range(n)]
    return morph, tx, pos, ids


def _dir_bytes(d) -> int:
    return sum(p.stat().st_size for p in Path(d).glob('*.tar'))


def _clear(d):
    d = Path(d)
    if d.exists():
        for p in d.iterdir():
            if p.is_file(): p.unlink()


def write_ours(out: str, n: int, dm: int, dt: int, max_count: int, dtype: str='float32') -> dict:
    import torch; torch.set_num_threads(1)
    from spatial_dl.shards import prepare_shards
    morph, tx, pos, ids = _data(n, dm, dt)
    _clear(out)
    c0, t0 = time.process_time(), time.perf_counter()
    prepare_shards(morph, pos, tx, ids, out, 'bench', dtype=dtype, val_fraction=0.1, max_count=max_count, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    b, arr = _dir_bytes(out), n * (dm + dt) * 4
    return {'write_mb_per_s': arr / 1e6 / wall, 'write_mb_per_cpu_s': arr / 1e6 / cpu, 'file_mb_per_s': b / 1e6 / wall,
            'seconds': wall, 'file_mb': b / 1e6}


def write_wds(out: str, n: int, dm: int, dt: int, max_count: int) -> dict:
    import webdataset as wds
    morph, tx, pos, ids = _data(n, dm, dt)
    _clear(out); Path(out).mkdir(parents=True, exist_ok=True)
    c0, t0 = time.process_time(), time.perf_counter()
    with wds.ShardWriter(os.path.join(out, 'shard-%06d.tar'), maxcount=max_count, verbose=0) as sink:
        for i in range(n):
            sink.write({'__key__': f"s{i:09d}", 'morph.npy': morph[i], 'tx.npy': tx[i],
                        'json': {'cell_id': ids[i], 'row_index': i, 'x': float(pos[i, 0]), 'y': float(pos[i, 1]), 'split': 'train'}})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    b, arr = _dir_bytes(out), n * (dm + dt) * 4
    return {'write_mb_per_s': arr / 1e6 / wall, 'write_mb_per_cpu_s': arr / 1e6 / cpu, 'file_mb_per_s': b / 1e6 / wall,
            'seconds': wall, 'file_mb': b / 1e6}


def read_ours(root: str, batch_size: int=256, shuffle_buffer: int=0) -> dict:
    import torch; torch.set_num_threads(1)
    from spatial_dl.shards import shard_pipeline
    pipe = shard_pipeline(root, 'train', batch_size, shuffle_shards=False, shuffle_buffer=shuffle_buffer)
    c0, t0 = time.process_time(), time.perf_counter(); n = 0
    for m, t, p, meta in pipe: n += len(m)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {'read_samples_per_s': n / wall, 'read_samples_per_cpu_s': n / cpu, 'samples': n}


def read_wds(root: str, batch_size: int=256) -> dict:
    import torch; torch.set_num_threads(1)
    import webdataset as wds
    urls = sorted(str(p) for p in Path(root).glob('*.tar'))
    ds = wds.WebDataset(urls, shardshuffle=False).decode().to_tuple('morph.npy', 'tx.npy', 'json').batched(batch_size)
    c0, t0 = time.process_time(), time.perf_counter(); n = 0
    for m, t, j in ds: n += len(m)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {'read_samples_per_s': n / wall, 'read_samples_per_cpu_s': n / cpu, 'samples': n}


def main(argv=None) -> int:
    p = base_argparser(__doc__.splitlines()[0])
    p.add_argument('--data-dir', default='/tmp/spatial_dl_bench/shards', help='where shards are written')
    a = p.parse_args(argv)
    n, dm, dt, mc = (12_000, 256, 128, 1_500) if a.quick else (100_000, 512, 256, 10_000)
    repeats = a.repeats or (1 if a.quick else 3)
    d = Path(a.data_dir)
    size = dict(n=n, dm=dm, dt=dt, max_count=mc)
    # the read candidates read shards written once, by each writer, before the timed rounds
    for name, fn in (('read_ours_src', 'write_ours'), ('read_wds_src', 'write_wds')):
        r = run_in_fresh_process(f"{HERE}:{fn}", dict(out=str(d/name), **size), timeout=a.timeout)
        if 'error' in r: print(r['error'], r.get('stderr_tail', ''), file=sys.stderr); return 1
    cands = {
        'write spatial_dl.prepare_shards': (f"{HERE}:write_ours", dict(out=str(d/'w_ours'), **size)),
        'write wds.ShardWriter loop': (f"{HERE}:write_wds", dict(out=str(d/'w_wds'), **size)),
        'read spatial_dl.shard_pipeline': (f"{HERE}:read_ours", dict(root=str(d/'read_ours_src'))),
        'read spatial_dl.shard_pipeline +shuffle 10k': (f"{HERE}:read_ours", dict(root=str(d/'read_ours_src'), shuffle_buffer=10_000)),
        'read wds.WebDataset.decode': (f"{HERE}:read_wds", dict(root=str(d/'read_wds_src'))),
    }
    rows = interleaved(cands, repeats=repeats, timeout=a.timeout)
    med = medians(rows)
    print(f"\n{n:,} pairs, {dm} + {dt} float32 dims, {mc:,} samples per shard, {repeats} round(s)")
    print_table(med, ['name', ('write_mb_per_s', 'write MB/s', '{:,.1f}'), ('write_mb_per_cpu_s', 'MB/CPU-s', '{:,.1f}'),
                      ('file_mb_per_s', 'file MB/s', '{:,.1f}'),
                      ('read_samples_per_s', 'read samples/s', '{:,.0f}'), ('read_samples_per_cpu_s', 'samples/CPU-s', '{:,.0f}'),
                      ('n_ok', 'ok')])
    by = {m['name']: m for m in med}
    g = lambda name, k: by.get(name, {}).get(k)
    wo, ww = g('write spatial_dl.prepare_shards', 'write_mb_per_s'), g('write wds.ShardWriter loop', 'write_mb_per_s')
    ro, rw = g('read spatial_dl.shard_pipeline', 'read_samples_per_cpu_s'), g('read wds.WebDataset.decode', 'read_samples_per_cpu_s')
    ratios = {
        'write_mb_s_ours_over_wds': target(wo / ww if wo and ww else None, '>=', 1.0, 'prepare_shards MB/s over the ShardWriter loop, same arrays'),
        'read_samples_per_cpu_s_ours': target(ro, '>=', 50_000, 'shard_pipeline samples per CPU-second (one process = one core)'),
        'read_ours_over_wds': target(ro / rw if ro and rw else None, '>=', 1.0, 'samples per CPU-second over wds.WebDataset().decode()'),
    }
    for k, v in ratios.items(): print(f"{k}: {v['value'] if v['value'] is None else round(v['value'], 2)} (target {v['target']}: {v['pass']})")
    write_json(a.json, rows, ratios, extra={'medians': med, 'parameters': dict(size, repeats=repeats)}, packages=PACKAGES)
    if a.json: print(f"wrote {a.json}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
