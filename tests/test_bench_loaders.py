"Tests of the benchmark helpers (bench/_common.py) and a smoke run of bench/loaders.py on a tiny file."
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / 'bench'))
import _common as C  # noqa: E402


@pytest.fixture
def target_file(tmp_path):
    p = tmp_path / 'tgt.py'
    p.write_text(textwrap.dedent('''
        import os, time
        def alloc(mb=0, value=1):
            buf = bytearray(mb * 2**20)
            for i in range(0, len(buf), 4096): buf[i] = 1   # touch pages so they count as resident
            return {'value': value, 'pid': os.getpid(), 'label': 'x'}
        def boom():
            raise ValueError('bad thing in target')
        def not_a_dict():
            return [1, 2]
        def sleepy(s=5):
            time.sleep(s); return {}
    '''))
    return p


def test_fresh_process_returns_dict_and_peak_rss(target_file):
    small = C.run_in_fresh_process(f'{target_file}:alloc', {'mb': 0, 'value': 7})
    big = C.run_in_fresh_process(f'{target_file}:alloc', {'mb': 200})
    assert 'error' not in small, small
    assert small['value'] == 7 and small['label'] == 'x'
    assert small['pid'] != os.getpid() and small['pid'] != big['pid']
    # the 200 MB buffer shows in the child's own peak RSS
    assert big['peak_rss_mb'] > 200 and big['peak_rss_mb'] - small['peak_rss_mb'] > 100, (small['peak_rss_mb'], big['peak_rss_mb'])
    assert small['wall_s'] > 0 and small['returncode'] == 0


def test_fresh_process_module_target_and_env():
    r = C.run_in_fresh_process('os:getcwd', {})   # returns a str, not a dict -> reported as an error
    assert 'expected dict' in r['error']
    r = C.run_in_fresh_process('platform:uname', {})
    assert 'error' in r


def test_fresh_process_errors_do_not_raise(target_file):
    r = C.run_in_fresh_process(f'{target_file}:boom')
    assert r['error'] == 'ValueError: bad thing in target' and 'Traceback' in r['traceback']
    r = C.run_in_fresh_process(f'{target_file}:not_a_dict')
    assert 'returned list, expected dict' in r['error']
    t0 = time.perf_counter()
    r = C.run_in_fresh_process(f'{target_file}:sleepy', {'s': 30}, timeout=3)
    assert 'timed out after 3' in r['error'] and time.perf_counter() - t0 < 20
    with pytest.raises(ValueError, match="expected 'module:function'"): C.run_in_fresh_process('nocolon')
    with pytest.raises(FileNotFoundError, match='not found'): C.run_in_fresh_process('/no/such/file.py:f')


def test_interleaved_round_robin_and_medians(target_file):
    cands = {'a': (f'{target_file}:alloc', {'value': 1}), 'b': (f'{target_file}:alloc', {'value': 10}),
             'bad': (f'{target_file}:boom', {})}
    rows = C.interleaved(cands, repeats=2, verbose=False)
    assert [r['name'] for r in rows] == ['a', 'b', 'bad', 'b', 'bad', 'a']   # round-robin, rotated each round
    assert [r['repeat'] for r in rows] == [0, 0, 0, 1, 1, 1]
    med = {m['name']: m for m in C.medians(rows)}
    assert med['a']['value'] == 1 and med['b']['value'] == 10 and med['a']['n_ok'] == 2
    assert med['bad']['n_ok'] == 0 and 'bad thing' in med['bad']['error'] and 'value' not in med['bad']
    assert C.medians([{'name': 'x', 'v': 1}, {'name': 'x', 'v': 5}, {'name': 'x', 'v': 2}])[0]['v'] == 2


def test_format_table_aligns():
    rows = [{'name': 'spatial_dl', 'rate': 41234.5}, {'name': 'x', 'rate': None}, {'name': 'longer_name', 'rate': 7.0}]
    s = C.format_table(rows, ['name', ('rate', 'cells/s', '{:,.0f}')])
    lines = s.splitlines()
    assert lines[0].split() == ['name', 'cells/s'] and set(lines[1]) <= {'-', ' '}
    assert lines[2].endswith('41,234') and lines[3].endswith('-') and lines[4].endswith('7')
    assert len({len(l) for l in (lines[0], lines[2], lines[3], lines[4])}) == 1   # numbers right-aligned


def test_target_and_write_json(tmp_path):
    assert C.target(3, '>=', 2)['pass'] is True and C.target(1, '>=', 2)['pass'] is False
    assert C.target(None, '<', 1)['pass'] is None and C.target(0.5, '<', 1)['target'] == '< 1'
    with pytest.raises(ValueError, match='op'): C.target(1, '=>', 2)
    out = tmp_path / 'sub' / 'r.json'
    C.write_json(out, [{'name': 'a', 'v': 1}], {'r': C.target(2.5, '>=', 2.4)}, extra={'medians': []})
    doc = json.loads(out.read_text())
    assert doc['ratios']['r']['pass'] is True and doc['rows'] == [{'name': 'a', 'v': 1}]
    m = doc['machine']
    for k in ('cpu_model', 'cpu_count', 'ram_gb', 'os', 'python', 'packages', 'git', 'env', 'date_utc'):
        assert k in m, k
    assert doc['versions']['numpy'] and m['git']['commit']
    assert {k for k in os.environ if k.startswith('OPENBLAS_')} == {k for k in m['env'] if k.startswith('OPENBLAS_')}
    assert [p.name for p in out.parent.iterdir()] == ['r.json']   # no temporary file left behind


def test_time_batches():
    def gen():
        for i in range(20):
            time.sleep(0.01)
            yield list(range(10))
    r = C.time_batches(gen(), n_batches=5, warmup=2)
    assert r['n_batches'] == 1 + 2 + 5 and r['n_items'] == 80
    assert 100 < r['items_per_s'] < 1100 and r['first_batch_s'] >= 0.009   # ≤ 1000 items/s by construction
    assert C.base_argparser('x').parse_args(['--quick', '--json', 'a.json']).json == 'a.json'
    # a fast loader is timed past n_batches, in whole `align`s, until min_seconds have passed
    r = C.time_batches((time.sleep(0.01) or [0] * 10 for _ in range(200)), n_batches=2, warmup=1, align=4, min_seconds=0.2)
    timed = r['n_batches'] - 2
    assert r['steady_s'] >= 0.2 and timed % 4 == 0 and timed >= 16, r


# ------------------------------------------------------------------------------------------ bench/loaders.py smoke run
def _available(mod):
    import importlib.util
    try: return importlib.util.find_spec(mod) is not None
    except Exception: return False


@pytest.mark.slow
def test_loaders_quick_smoke(tmp_path):
    "The whole benchmark on a tiny file: every candidate that imports runs, gives sane numbers and correct values."
    out = tmp_path / 'loaders.json'
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(REPO / 'bench' / 'loaders.py'), '--quick', '--n-obs', '1500', '--n-vars', '600',
                        '--n-batches', '3', '--data-dir', str(tmp_path / 'data'), '--json', str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(out.read_text())
    # machine info and versions
    for k in ('cpu_model', 'cpu_count', 'ram_gb', 'python', 'git', 'env', 'packages'): assert k in doc['machine'], k
    assert doc['versions']['numpy'] and doc['versions']['anndata'] and doc['params']['quick'] is True
    assert doc['data']['generator'] and doc['data']['ideal_tv'] > 0 and 'changed_during_run' in doc['spatial_dl_code']
    # a row for every candidate that imports; the others are listed as not available
    med = {m['name']: m for m in doc['medians']}
    expected = ['AnnLoader (backed)', 'naive sorted-batch reads', 'in-memory CSR reference']
    if _available('scdataset'): expected.append('scDataset b16/f16')
    if _available('spatial_dl.loaders'):
        expected += ['spatial_dl block', 'spatial_dl random', 'spatial_dl sequential',
                     'spatial_dl block, 1 worker', 'spatial_dl block, 2 workers']
    for name in expected:
        assert name in med, (name, sorted(med))
        m = med[name]
        assert m['n_ok'] == 1, (name, m.get('error'), [r.get('traceback') for r in doc['rows'] if r['name'] == name])
        assert m['cells_per_s'] > 0 and m['first_batch_s'] > 0 and m['peak_rss_mb'] > 10, (name, m)
        assert m['values_ok'] is True, name                  # first batch equals the file's rows
        assert 0 <= m['tv'] <= 1 and m['n_cells'] >= 256, (name, m)
    assert sorted(r['name'] for r in doc['rows']) == sorted(med)   # one round: one raw row per candidate
    na = {r['name'] for r in doc['not_available']}
    assert ('annbatch' in med) != ('annbatch' in na)
    if _available('spatial_dl.loaders'):   # a sorted file read sequentially mixes far worse than a shuffle
        assert med['spatial_dl sequential']['tv'] > 2 * med['spatial_dl random']['tv']
    # the ratios the issue asks for, each with value/target/pass
    for k in ('block_cells_per_s', 'block_over_scdataset', 'block_tv', 'random_over_naive', 'first_batch_s',
              'peak_rss_mb', 'workers_over_single'):
        r = doc['ratios'][k]
        assert set(r) >= {'value', 'target', 'pass'}, k
        if r['value'] is not None: assert r['pass'] in (True, False), k
    assert 'cells/s' in p.stdout and 'block_over_scdataset' in p.stdout   # the printed tables
    print(f'smoke run took {time.perf_counter() - t0:.0f} s')


def test_write_json_is_strict_json(tmp_path):
    import numpy as np
    out = tmp_path / 'r.json'
    C.write_json(out, [{'name': 'a', 'v': float('nan'), 'n': np.int64(3), 't': (1, 2)}], {'r': C.target(float('nan'), '<', 1)})
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f'non-standard JSON constant {c}'))
    assert doc['rows'][0] == {'name': 'a', 'v': None, 'n': 3, 't': [1, 2]} and doc['ratios']['r']['pass'] is None


# ------------------------------------------------------------------------------------------ bench/loaders.py pieces
@pytest.fixture(scope='module')
def L():
    import importlib.util
    spec = importlib.util.spec_from_file_location('_bench_loaders_under_test', REPO / 'bench' / 'loaders.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_tv_local_matches_definition(L):
    import numpy as np
    glob = np.array([0] * 50 + [1] * 50)
    assert L._tv_local([np.array([0, 1]), np.array([0, 1, 0, 1])], glob) == 0.0
    assert L._tv_local([np.array([0, 0, 0, 0])], glob) == pytest.approx(0.5)      # all one of two equal classes
    assert L._tv_local([np.array([0, 0]), np.array([0, 1])], glob) == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    labels = np.sort(rng.integers(0, 5, 5000))
    batches = [labels[rng.permutation(5000)[:256]] for _ in range(20)]
    r = L.tv_mixing(batches, labels)
    assert r['tv'] == pytest.approx(L._tv_local(batches, labels), rel=1e-9)      # whichever code computed it
    seq = [labels[i:i + 256] for i in range(0, 4864, 256)]
    assert L._tv_local(seq, labels) > 3 * L.ideal_tv(labels, 256)                 # sorted rows mix badly
    assert 0.02 < L.ideal_tv(labels, 256) < 0.1


def test_compute_ratios_pass_fail(L):
    med = {'spatial_dl block': dict(cells_per_s=40000, tv=0.105, first_batch_s=0.3, peak_rss_mb=500),
           'spatial_dl random': dict(cells_per_s=30000, first_batch_s=0.4, peak_rss_mb=520),
           'spatial_dl block, 1 worker': dict(cells_per_s=39000, first_batch_s=1.5, peak_rss_mb=400, peak_rss_tree_mb=900),
           'spatial_dl block b16/f16': dict(cells_per_s=1000, first_batch_s=9.0, peak_rss_mb=2000),
           'scDataset b16/f16': dict(cells_per_s=10000), 'naive sorted-batch reads': dict(cells_per_s=5000)}
    r = L.compute_ratios(med)
    assert r['block_cells_per_s']['pass'] is True and r['block_over_scdataset']['value'] == 4.0
    assert r['block_tv']['pass'] is True and r['random_over_naive']['value'] == 6.0 and r['random_over_naive']['pass'] is False
    assert r['first_batch_s']['value'] == 1.5 and r['first_batch_s']['pass'] is False   # the worker row counts ...
    assert r['peak_rss_mb']['value'] == 520                                             # ... the b16/f16 row does not
    assert r['workers_over_single']['value'] == pytest.approx(0.975) and r['workers_over_single']['pass'] is False
    r = L.compute_ratios({'naive sorted-batch reads': dict(cells_per_s=5000)})          # spatial_dl missing
    assert r['block_cells_per_s']['pass'] is None and r['random_over_naive']['value'] is None


def test_ensure_data_reuses_cached_file(L, tmp_path):
    p1, gen1 = L.ensure_data(tmp_path, 300, 200)
    mtime = p1.stat().st_mtime_ns
    p2, gen2 = L.ensure_data(tmp_path, 300, 200)
    assert p1 == p2 and p2.stat().st_mtime_ns == mtime and gen2.endswith('(cached)') and not gen1.endswith('(cached)')
    labels = L.read_labels(p1)
    assert len(labels) == 300 and (labels.min() >= 0) and len(list(tmp_path.iterdir())) == 1


def test_paired_ratio_cancels_drift(L):
    # round 0 on a quiet machine, round 1 under load: every candidate halves, the per-round ratio stays 2
    rows = [dict(name='a', repeat=0, cells_per_s=400.0), dict(name='b', repeat=0, cells_per_s=200.0),
            dict(name='a', repeat=1, cells_per_s=100.0), dict(name='b', repeat=1, cells_per_s=50.0),
            dict(name='a', repeat=2, cells_per_s=90.0), dict(name='b', repeat=2, error='boom'),
            dict(name='c', repeat=0, cells_per_s=500.0)]
    assert L.paired_ratio(rows, ['a'], 'b') == 2.0                    # round 2 (b failed) is left out
    assert L.paired_ratio(rows, ['a', 'c'], 'b') == pytest.approx((2.5 + 2.0) / 2)   # best of num per round
    assert L.paired_ratio(rows, ['a'], 'missing') is None
    med = {'spatial_dl block': dict(cells_per_s=250.0), 'scDataset b16/f16': dict(cells_per_s=125.0)}
    rows = [dict(name='spatial_dl block', repeat=i, cells_per_s=v) for i, v in enumerate((400.0, 100.0))] + \
           [dict(name='scDataset b16/f16', repeat=i, cells_per_s=v) for i, v in enumerate((100.0, 50.0))]
    r = L.compute_ratios(med, rows)['block_over_scdataset']
    assert r['value'] == 3.0 and r['pass'] is True and 'ratio of medians 2.00' in r['note']
