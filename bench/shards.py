#!/usr/bin/env python
"""Paired-embedding shard benchmark: spatial_dl.shards against a straightforward `webdataset.ShardWriter` loop.

    .venv/bin/python bench/shards.py --quick                          # ≤ 60 s unloaded: 12,000 pairs
    .venv/bin/python bench/shards.py --json bench/results/shards.json # full: 100,000 pairs, 3 rounds

Writing (512 + 256 float32 dims; 256 + 128 with --quick): `prepare_shards` (validation, pairing by id, split, atomic
shards, manifest with SHA-256, metadata table) versus a plain loop `ShardWriter.write({'__key__', 'morph.npy',
'tx.npy', 'json'})` over the same float32 arrays and the same samples per shard. MB/s = embedding bytes
(n x (dm + dt) x 4) / wall seconds of the write, i.e. the same work for both (data generation and imports excluded);
file MB/s is also shown, but `tarfile` (used by ShardWriter) adds a pax header to every member (its mtime is a float),
so its files are ~1.6x larger for the same content.
Reading: one full pass over the train split, batches of 256, no sample shuffle unless stated, over shards of each
writer: `shard_pipeline` at 256 + 128, 512 + 256 and 768 + 768 dims (OmiCLIP-sized), with a 10k shuffle buffer, and
through a `torch.utils.data.DataLoader` with 2 workers; versus `wds.WebDataset(urls, shardshuffle=False).decode()
.to_tuple(...).batched(256)` at the writing width. samples/CPU-s is the per-core figure: samples / CPU seconds
(user + system, `time.process_time`) of the single reading process; with DataLoader workers it is samples / CPU
seconds of the main process plus its (joined) workers, so pickling and queueing between them is charged too.
samples/s is wall clock. Every timed pass starts after `gc.collect()`, so the first full garbage collection of a
freshly imported torch (~0.1 s, once per process) is not charged to whichever candidate happens to trigger it.
Every run is a fresh process; candidates interleave round-robin over rounds; medians are reported.
"""
from __future__ import annotations

import gc
import os
import resource
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
    _clear(out); gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    prepare_shards(morph, pos, tx, ids, out, 'bench', dtype=dtype, val_fraction=0.1, max_count=max_count, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    b, arr = _dir_bytes(out), n * (dm + dt) * 4
    return {'write_mb_per_s': arr / 1e6 / wall, 'write_mb_per_cpu_s': arr / 1e6 / cpu, 'file_mb_per_s': b / 1e6 / wall,
            'seconds': wall, 'file_mb': b / 1e6}


def write_wds(out: str, n: int, dm: int, dt: int, max_count: int) -> dict:
    import webdataset as wds
    morph, tx, pos, ids = _data(n, dm, dt)
    _clear(out); Path(out).mkdir(parents=True, exist_ok=True); gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    with wds.ShardWriter(os.path.join(out, 'shard-%06d.tar'), maxcount=max_count, verbose=0) as sink:
        for i in range(n):
            sink.write({'__key__': f"s{i:09d}", 'morph.npy': morph[i], 'tx.npy': tx[i],
                        'json': {'cell_id': ids[i], 'row_index': i, 'x': float(pos[i, 0]), 'y': float(pos[i, 1]), 'split': 'train'}})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    b, arr = _dir_bytes(out), n * (dm + dt) * 4
    return {'write_mb_per_s': arr / 1e6 / wall, 'write_mb_per_cpu_s': arr / 1e6 / cpu, 'file_mb_per_s': b / 1e6 / wall,
            'seconds': wall, 'file_mb': b / 1e6}


def write_sources(out: str, n: int, widths: list, max_count: int, wds_width: list) -> dict:
    "Untimed: the shards the read candidates read (ours at every width, the ShardWriter loop's at one)."
    for dm, dt in widths: write_ours(f"{out}/ours_{dm}_{dt}", n, dm, dt, max_count)
    write_wds(f"{out}/wds_{wds_width[0]}_{wds_width[1]}", n, *wds_width, max_count)
    return {}


def read_ours(root: str, batch_size: int=256, shuffle_buffer: int=0) -> dict:
    import torch; torch.set_num_threads(1)
    from spatial_dl.shards import shard_pipeline
    pipe = shard_pipeline(root, 'train', batch_size, shuffle_shards=False, shuffle_buffer=shuffle_buffer)
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter(); n = 0
    for m, t, p, meta in pipe: n += len(m)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {'read_samples_per_s': n / wall, 'read_samples_per_cpu_s': n / cpu, 'samples': n}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def read_ours_workers(root: str, num_workers: int=2, batch_size: int=256) -> dict:
    import torch; torch.set_num_threads(1)
    from spatial_dl.shards import shard_pipeline
    pipe = shard_pipeline(root, 'train', batch_size, shuffle_shards=False)
    dl = torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=num_workers, persistent_workers=False)
    gc.collect()
    c0, k0, t0 = time.process_time(), _children_cpu(), time.perf_counter(); n = 0
    for m, t, p, meta in dl: n += len(m)  # exhausting the iterator joins the workers, so their CPU time is counted
    wall = time.perf_counter() - t0
    main_cpu, workers_cpu = time.process_time() - c0, _children_cpu() - k0
    return {'read_samples_per_s': n / wall, 'read_samples_per_cpu_s': n / (main_cpu + workers_cpu), 'samples': n,
            'main_cpu_s': main_cpu, 'workers_cpu_s': workers_cpu}


def read_wds(root: str, batch_size: int=256) -> dict:
    import torch; torch.set_num_threads(1)
    import webdataset as wds
    urls = sorted(str(p) for p in Path(root).glob('*.tar'))
    ds = wds.WebDataset(urls, shardshuffle=False).decode().to_tuple('morph.npy', 'tx.npy', 'json').batched(batch_size)
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter(); n = 0
    for m, t, j in ds: n += len(m)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {'read_samples_per_s': n / wall, 'read_samples_per_cpu_s': n / cpu, 'samples': n}


def main(argv=None) -> int:
    p = base_argparser(__doc__.splitlines()[0])
    p.add_argument('--data-dir', default='/tmp/spatial_dl_bench/shards', help='where shards are written')
    a = p.parse_args(argv)
    n, mc = (12_000, 1_500) if a.quick else (100_000, 10_000)
    wide = (256, 128) if a.quick else (512, 256)  # writing, the wds reader, the shuffle and worker rows
    widths = [(256, 128), (512, 256), (768, 768)]
    repeats = a.repeats or (1 if a.quick else 3)
    d = Path(a.data_dir)
    # the read candidates read shards written once, before the timed rounds
    r = run_in_fresh_process(f"{HERE}:write_sources", dict(out=str(d), n=n, widths=[list(w) for w in widths], max_count=mc,
                                                            wds_width=list(wide)), timeout=a.timeout)
    if 'error' in r: print(r['error'], r.get('stderr_tail', ''), file=sys.stderr); return 1
    src = lambda dm, dt: str(d/f"ours_{dm}_{dt}")
    W = f"{wide[0]}+{wide[1]}"
    cands = {
        f'write spatial_dl.prepare_shards {W}': (f"{HERE}:write_ours", dict(out=str(d/'w_ours'), n=n, dm=wide[0], dt=wide[1], max_count=mc)),
        f'write wds.ShardWriter loop {W}': (f"{HERE}:write_wds", dict(out=str(d/'w_wds'), n=n, dm=wide[0], dt=wide[1], max_count=mc)),
        **{f'read spatial_dl.shard_pipeline {dm}+{dt}': (f"{HERE}:read_ours", dict(root=src(dm, dt))) for dm, dt in widths},
        f'read spatial_dl.shard_pipeline {W} +shuffle 10k': (f"{HERE}:read_ours", dict(root=src(*wide), shuffle_buffer=10_000)),
        f'read spatial_dl.shard_pipeline {W} 2 workers': (f"{HERE}:read_ours_workers", dict(root=src(*wide), num_workers=2)),
        f'read wds.WebDataset.decode {W}': (f"{HERE}:read_wds", dict(root=str(d/f"wds_{wide[0]}_{wide[1]}"))),
    }
    la = os.getloadavg()
    rows = interleaved(cands, repeats=repeats, timeout=a.timeout)
    med = medians(rows)
    print(f"\n{n:,} pairs, float32, {mc:,} samples per shard, {repeats} round(s), load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    print_table(med, ['name', ('write_mb_per_s', 'write MB/s', '{:,.1f}'), ('write_mb_per_cpu_s', 'MB/CPU-s', '{:,.1f}'),
                      ('file_mb_per_s', 'file MB/s', '{:,.1f}'),
                      ('read_samples_per_s', 'read samples/s', '{:,.0f}'), ('read_samples_per_cpu_s', 'samples/CPU-s', '{:,.0f}'),
                      ('n_ok', 'ok')])
    by = {m['name']: m for m in med}
    g = lambda name, k: by.get(name, {}).get(k)
    wo, ww = g(f'write spatial_dl.prepare_shards {W}', 'write_mb_per_s'), g(f'write wds.ShardWriter loop {W}', 'write_mb_per_s')
    rd = {(dm, dt): g(f'read spatial_dl.shard_pipeline {dm}+{dt}', 'read_samples_per_cpu_s') for dm, dt in widths}
    ro, rw = rd[wide], g(f'read wds.WebDataset.decode {W}', 'read_samples_per_cpu_s')
    ratios = {
        'write_mb_s_ours_over_wds': target(wo / ww if wo and ww else None, '>=', 1.0, f'prepare_shards MB/s over the ShardWriter loop, same arrays ({W} dims)'),
        'read_samples_per_cpu_s_ours': target(ro, '>=', 50_000, f'shard_pipeline samples per CPU-second (one process = one core), {W} dims'),
        **{f'read_samples_per_cpu_s_ours_{dm}_{dt}': target(rd[(dm, dt)], '>=', 50_000, f'shard_pipeline samples per CPU-second, {dm} + {dt} dims')
           for dm, dt in widths if (dm, dt) != wide},
        'read_ours_over_wds': target(ro / rw if ro and rw else None, '>=', 1.0, f'samples per CPU-second over wds.WebDataset().decode(), {W} dims'),
    }
    for k, v in ratios.items(): print(f"{k}: {v['value'] if v['value'] is None else round(v['value'], 2)} (target {v['target']}: {v['pass']})")
    write_json(a.json, rows, ratios, extra={'medians': med, 'parameters': dict(n=n, max_count=mc, write_width=list(wide), read_widths=[list(w) for w in widths], repeats=repeats), 'loadavg_start_end': [list(la), list(os.getloadavg())]}, packages=PACKAGES)
    if a.json: print(f"wrote {a.json}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
