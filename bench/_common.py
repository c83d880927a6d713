"""Shared helpers for the benchmarks in `bench/`.

Every benchmark runs each measurement in a fresh Python process (so imports, page cache warm-up of the
interpreter and allocator state do not leak between candidates), interleaves candidates round-robin over
repeats (so a burst of load from other users of a shared machine hits every candidate alike), reports
medians, and writes one JSON file holding the machine, package versions, every raw row and a top-level
`ratios` object with the targets and whether each one passes.

Typical shape of a benchmark (see `bench/loaders.py`):

    from _common import base_argparser, interleaved, medians, print_table, write_json, target
    args = base_argparser("my bench").parse_args()
    rows = interleaved({"a": ("bench/mine.py:run_a", {"n": 10}), "b": ("pkg.mod:run_b", {})}, repeats=3)
    med = medians(rows)
    print_table(med, ["name", ("cells_per_s", "cells/s", "{:,.0f}")])
    write_json(args.json, rows, {"a_over_b": target(ratio, ">=", 2.0)}, extra={"medians": med})

Nothing here imports torch or spatial_dl at module level: a child process pays only for what its
target imports.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as _md
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ['machine_info', 'run_in_fresh_process', 'interleaved', 'medians', 'print_table', 'format_table',
           'write_json', 'target', 'base_argparser', 'time_batches', 'DEFAULT_PACKAGES']

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_PACKAGES = ('spatial_dl', 'numpy', 'scipy', 'torch', 'h5py', 'anndata', 'pandas', 'psutil')


# ---------------------------------------------------------------------------------------------- machine info
def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.lower().startswith(('model name', 'hardware', 'cpu model')):
                return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float|None:
    try:
        import psutil
        return round(psutil.virtual_memory().total / 2**30, 2)
    except Exception: pass
    try:
        return round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 2)
    except (ValueError, OSError, AttributeError): return None


def _git_commit() -> dict:
    def run(*a):
        try: return subprocess.run(['git', *a], cwd=REPO_DIR, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception: return ''
    return {'commit': run('rev-parse', 'HEAD') or None, 'branch': run('rev-parse', '--abbrev-ref', 'HEAD') or None,
            'dirty_files': len([l for l in run('status', '--porcelain', '--untracked-files=no').splitlines() if l])}


def _versions(packages) -> dict:
    out = {}
    for p in packages:
        try: out[p] = _md.version(p)
        except _md.PackageNotFoundError: out[p] = None
    return out


def _blas_info() -> list|None:
    "The BLAS libraries numpy loaded and the kernel they picked (threadpoolctl), or None when unavailable."
    try:
        import numpy  # noqa: F401  (loads its BLAS)
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ('internal_api', 'version', 'architecture', 'num_threads')} for d in threadpool_info()]
    except Exception: return None


def machine_info(packages=DEFAULT_PACKAGES, # distribution names whose installed versions are recorded
                 blas: bool=True, # also record numpy's BLAS kernel via threadpoolctl (imports numpy)
                ) -> dict:
    "CPU, cores, RAM, load, OS, Python, package versions, git commit, OPENBLAS_* variables and the date, as a JSON-able dict."
    try: load = [round(x, 2) for x in os.getloadavg()]
    except OSError: load = None
    return {
        'date_utc': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
        'cpu_model': _cpu_model(),
        'cpu_count': os.cpu_count(),
        'cpu_affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
        'ram_gb': _ram_gb(),
        'loadavg_1_5_15': load,
        'os': platform.platform(),
        'python': sys.version.split()[0],
        'python_executable': sys.executable,
        'packages': _versions(packages),
        'git': _git_commit(),
        'env': {k: v for k, v in sorted(os.environ.items())
                if k.startswith(('OPENBLAS_', 'OMP_', 'MKL_')) or k in ('PYTHONHASHSEED', 'CUDA_VISIBLE_DEVICES')},
        'blas': _blas_info() if blas else None,
    }


# ---------------------------------------------------------------------------------------------- fresh process
_CHILD = r'''
import importlib, importlib.util, json, resource, sys, time, traceback
spec = json.load(open(sys.argv[1]))
out = {}
t0 = time.perf_counter()
try:
    mod_name, fn_name = spec['module'], spec['function']
    if spec['file']:
        sys.path.append(spec['dir'])   # lets a bench file import its siblings (_common) without shadowing packages
        name = '_bench_' + spec['stem']
        s = importlib.util.spec_from_file_location(name, spec['file'])
        mod = importlib.util.module_from_spec(s); sys.modules[name] = mod; s.loader.exec_module(mod)
    else:
        mod = importlib.import_module(mod_name)
    fn = getattr(mod, fn_name)
    t1 = time.perf_counter()
    res = fn(**spec['kwargs'])
    if not isinstance(res, dict): raise TypeError(f"target {spec['target']} returned {type(res).__name__}, expected dict")
    out.update(res)
    out['_import_s'] = t1 - t0
    out['_call_s'] = time.perf_counter() - t1
except BaseException as e:
    out['error'] = f"{type(e).__name__}: {e}"
    out['traceback'] = traceback.format_exc()[-4000:]
scale = 1 if sys.platform == 'darwin' else 1024   # ru_maxrss is bytes on macOS, KiB on Linux
# On Linux ru_maxrss survives fork+exec (it starts at the parent's RSS), so prefer this process's own VmHWM.
hwm = None
try:
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): hwm = int(line.split()[1]) / 1024
except OSError: pass
out['peak_rss_mb'] = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
out['peak_rss_children_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / 2**20
with open(spec['out'], 'w') as f: json.dump(out, f, default=lambda o: o.item() if hasattr(o, 'item') else str(o))
'''


def _parse_target(target: str) -> dict:
    if ':' not in target: raise ValueError(f"target {target!r}: expected 'module:function' or 'path/file.py:function'")
    left, fn = target.rsplit(':', 1)
    if left.endswith('.py') or os.sep in left:
        p = Path(left)
        if not p.is_absolute(): p = (Path.cwd() / p) if (Path.cwd() / p).exists() else (REPO_DIR / p)
        if not p.exists(): raise FileNotFoundError(f"target {target!r}: file {p} not found")
        return dict(target=target, module=None, function=fn, file=str(p.resolve()), dir=str(p.resolve().parent), stem=p.stem)
    return dict(target=target, module=left, function=fn, file=None, dir=None, stem=None)


def _tree_rss_mb(proc) -> tuple[float, float]:
    """Resident memory of `proc` and all its descendants (MiB), summed as RSS (pages shared between them counted in
    each) and as PSS (each shared page split between its sharers, so counted once overall; 0 where unavailable)."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except Exception: return 0.0, 0.0
    rss = pss = 0
    for p in procs:
        try: rss += p.memory_info().rss
        except Exception: pass
        try: pss += getattr(p.memory_full_info(), 'pss', 0)
        except Exception: pass
    return rss / 2**20, pss / 2**20


def run_in_fresh_process(target: str, # 'package.module:function' or 'path/to/file.py:function'
                         kwargs: dict|None=None, # JSON-able keyword arguments for the function
                         timeout: float=600, # seconds before the child (and its process group) is killed
                         env: dict|None=None, # variables to set (value None removes one) in the child only
                         poll_rss: float=0.2, # seconds between psutil samples of the child tree's RSS; 0 disables
                        ) -> dict:
    """Run `target(**kwargs)` in a new `python -c` process; return its dict plus timing and memory.

    Added keys: `peak_rss_mb` (the child's own peak: VmHWM on Linux, else getrusage), `peak_rss_children_mb`
    (getrusage of its waited-for children, e.g. DataLoader workers; on Linux it includes what a worker inherited
    at fork), `peak_rss_tree_mb` (largest sampled sum of RSS over the child and its descendants, every
    `poll_rss` s; pages shared between them count more than once; needs psutil), `peak_pss_tree_mb` (the same with
    PSS: shared pages split between their sharers, so counted once; Linux), `loadavg_1m_before`, `wall_s`,
    `_import_s`, `_call_s`, `returncode`; on failure `error` (and `traceback` / `stderr_tail`) instead of raising,
    so one broken candidate does not stop a benchmark."""
    spec = _parse_target(target)
    spec['kwargs'] = kwargs or {}
    try: load_before = round(os.getloadavg()[0], 2)   # how busy the machine was when this run started
    except OSError: load_before = None
    child_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None: child_env.pop(k, None)
        else: child_env[k] = str(v)
    with tempfile.TemporaryDirectory(prefix='bench_') as td:
        spec['out'] = os.path.join(td, 'out.json')
        spec_path = os.path.join(td, 'spec.json')
        with open(spec_path, 'w') as f: json.dump(spec, f)
        err_path = os.path.join(td, 'stderr.txt')
        t0 = time.perf_counter()
        with open(err_path, 'w') as err:
            proc = subprocess.Popen([sys.executable, '-c', _CHILD, spec_path], env=child_env, cwd=str(REPO_DIR),
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        peak_tree = [0.0, 0.0]
        stop = threading.Event()
        def sample():
            try:
                import psutil
                p = psutil.Process(proc.pid)
            except Exception: return
            while not stop.is_set():
                rss, pss = _tree_rss_mb(p)
                peak_tree[0], peak_tree[1] = max(peak_tree[0], rss), max(peak_tree[1], pss)
                stop.wait(poll_rss)
        th = threading.Thread(target=sample, daemon=True)
        if poll_rss: th.start()
        timed_out = False
        try: proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try: os.killpg(proc.pid, 9)
            except ProcessLookupError: pass
            proc.wait()
        stop.set()
        if poll_rss: th.join()
        wall = time.perf_counter() - t0
        try:
            with open(spec['out']) as f: res = json.load(f)
        except (OSError, ValueError): res = {}
        if timed_out: res['error'] = f"timed out after {timeout} s"
        elif not res: res['error'] = f"child exited with code {proc.returncode} and wrote no result"
        if 'error' in res:
            try: res['stderr_tail'] = Path(err_path).read_text()[-3000:]
            except OSError: pass
    res['peak_rss_tree_mb'] = round(peak_tree[0], 1) if peak_tree[0] else None
    res['peak_pss_tree_mb'] = round(peak_tree[1], 1) if peak_tree[1] else None
    res['loadavg_1m_before'] = load_before
    res['wall_s'] = wall
    res['returncode'] = proc.returncode
    return res


def interleaved(candidates: dict, # name -> (target, kwargs) or (target, kwargs, env)
                repeats: int=3, # rounds; every candidate runs once per round
                timeout: float=600, # per run, seconds
                rotate: bool=True, # start each round one candidate later, so no candidate always runs first
                verbose: bool=True, # print one line per run to stderr
                ) -> list[dict]:
    "Run every candidate once per round, round-robin, each in a fresh process; one row per run (`name`, `repeat`, results)."
    names = list(candidates)
    rows = []
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)] if (rotate and names) else names
        for name in order:
            c = candidates[name]
            tgt, kw, env = (c + (None,))[:3] if len(c) == 2 else c
            res = run_in_fresh_process(tgt, kw, timeout=timeout, env=env)
            row = {'name': name, 'repeat': r, **res}
            rows.append(row)
            if verbose:
                msg = row.get('error') or ', '.join(f"{k}={v:,.4g}" for k, v in row.items()
                                                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and k not in ('repeat', 'returncode') and not k.startswith('_'))
                print(f"[{r + 1}/{repeats}] {name}: {msg}", file=sys.stderr, flush=True)
    return rows


def medians(rows: list[dict], # rows from `interleaved`
            key: str='name', # group by this column
           ) -> list[dict]:
    "One row per group: median of each numeric column over runs without `error`; booleans all-true; `n_ok`/`n_runs`; first error."
    groups: dict = {}
    for r in rows: groups.setdefault(r[key], []).append(r)
    out = []
    for name, rs in groups.items():
        ok = [r for r in rs if 'error' not in r]
        m = {key: name, 'n_ok': len(ok), 'n_runs': len(rs)}
        cols = []
        for r in ok:
            for k, v in r.items():
                if k not in cols and isinstance(v, (int, float)) and not isinstance(v, bool) and k != 'repeat': cols.append(k)
        for k in cols:
            vals = [r[k] for r in ok if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                    and not (isinstance(r[k], float) and math.isnan(r[k]))]
            if vals: m[k] = statistics.median(vals)
        bools = {k for r in ok for k, v in r.items() if isinstance(v, bool)}
        for k in bools: m[k] = all(r.get(k) is True for r in ok)   # True only when every run says so
        for r in ok:   # non-numeric descriptive fields (first run's) e.g. notes, versions
            for k, v in r.items():
                if k not in m and isinstance(v, str) and k not in ('traceback', 'stderr_tail'): m[k] = v
        errs = [r['error'] for r in rs if 'error' in r]
        if errs: m['error'] = errs[0]
        out.append(m)
    return out


# ---------------------------------------------------------------------------------------------- output
def _fmt(v, fmt) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)): return '-'
    if fmt and isinstance(v, (int, float)) and not isinstance(v, bool):
        try: return fmt.format(v)
        except (ValueError, TypeError): pass
    if isinstance(v, float): return f"{v:.4g}"
    return str(v)


def format_table(rows: list[dict], # one dict per line
                 columns: list, # each a key, or (key, header) or (key, header, format such as '{:,.0f}')
                ) -> str:
    "Rows as an aligned text table: text columns left-aligned, numbers right-aligned, missing values as '-'."
    cols = [(c, c, None) if isinstance(c, str) else (tuple(c) + (None,) * (3 - len(c))) for c in columns]
    cells = [[_fmt(r.get(k), f) for k, _, f in cols] for r in rows]
    heads = [h for _, h, _ in cols]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    numeric = [all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows) and rows
               for k, _, _ in cols]
    def line(vals): return '  '.join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()
    return '\n'.join([line(heads), line(['-' * w for w in widths])] + [line(c) for c in cells])


def print_table(rows: list[dict], columns: list, file=None) -> str:
    "Print `format_table(rows, columns)` (to stdout unless `file`) and return it."
    s = format_table(rows, columns)
    print(s, file=file or sys.stdout, flush=True)
    return s


def target(value: float|None, # the measured value (None: not measured)
           op: str, # '>=', '>', '<=' or '<'
           threshold: float, # the target
           note: str='', # what the number is, how it was computed
          ) -> dict:
    "A `ratios` entry: value, target and `pass` (None when the value could not be measured)."
    ops = {'>=': lambda a, b: a >= b, '>': lambda a, b: a > b, '<=': lambda a, b: a <= b, '<': lambda a, b: a < b}
    if op not in ops: raise ValueError(f"op {op!r}: expected one of {list(ops)}")
    ok = None if value is None or (isinstance(value, float) and math.isnan(value)) else bool(ops[op](value, threshold))
    return {'value': value, 'target': f"{op} {threshold}", 'pass': ok, 'note': note}


def _json_safe(o):
    "NaN/inf become None (strict JSON), numpy scalars become Python numbers, tuples become lists."
    if isinstance(o, dict): return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return [_json_safe(v) for v in o]
    if hasattr(o, 'item') and not isinstance(o, (str, bytes)):
        try: o = o.item()
        except (ValueError, TypeError): return str(o)
    if isinstance(o, float) and not math.isfinite(o): return None
    return o


def write_json(path: str|Path|None, # destination; nothing is written when None
               rows: list[dict], # every raw run
               ratios: dict, # name -> `target(...)` entries (or plain numbers)
               extra: dict|None=None, # anything else: medians, parameters, data description
               packages=DEFAULT_PACKAGES, # versions to record in `machine`
              ) -> dict:
    "Write {machine, versions, rows, ratios, **extra} to `path` atomically (temporary file, then rename); return the dict."
    mi = machine_info(packages)
    doc = _json_safe({'machine': mi, 'versions': mi['packages'], 'ratios': ratios, 'rows': rows, **(extra or {})})
    if path is None: return doc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(doc, f, indent=1, allow_nan=False, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp): os.unlink(tmp)
    return doc


def base_argparser(desc: str) -> argparse.ArgumentParser:
    "An ArgumentParser with the flags every benchmark takes: --quick, --json PATH, --repeats N, --timeout S."
    p = argparse.ArgumentParser(description=desc, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--quick', action='store_true', help='small sizes, whole run within 60 s')
    p.add_argument('--json', metavar='PATH', default=None, help='write machine info, versions, every row and ratios here')
    p.add_argument('--repeats', type=int, default=None, help='rounds over all candidates (default: 1 with --quick, else 3)')
    p.add_argument('--timeout', type=float, default=600, help='seconds allowed for one candidate run')
    return p


# ---------------------------------------------------------------------------------------------- timing a loop
def time_batches(batches, # an iterable of batches
                 n_batches: int=50, # batches timed after warm-up (the loop also stops after `max_seconds`)
                 warmup: int=3, # batches (after the first) not timed for the steady-state rate
                 max_seconds: float=float('inf'), # stop timing after this many seconds of steady state
                 count=len, # batch -> number of items (cells) it holds
                 consume=None, # batch -> None, e.g. a check or a reduction so lazy work is done; default nothing
                 warmup_s: float=0.0, # ... and warm-up lasts at least this long after the first batch
                 align: int=1, # warm-up ends after 1 + warmup + a multiple of `align` batches
                 min_seconds: float=0.0, # ... and timing goes on past `n_batches` (in whole `align`s) until this long
                ) -> dict:
    """Iterate `batches`, returning time to first batch, steady-state and overall throughput.

    `first_batch_s`: from the call to the first batch; `items_per_s`: items over the timed batches (after
    1 + `warmup` batches and `warmup_s` seconds) divided by their time; `items_per_s_incl_first`: all items over all time."""
    t0 = time.perf_counter()
    it = iter(batches)
    n_items = n_steady = n_b = warm_b = 0
    t_first = t_steady0 = None
    for b in it:
        if consume is not None: consume(b)
        now = time.perf_counter()
        k = count(b)
        n_items += k
        n_b += 1
        if t_first is None: t_first = now - t0
        if t_steady0 is None:
            if n_b >= 1 + warmup and (n_b - 1 - warmup) % align == 0 and now - t0 - t_first >= warmup_s:
                t_steady0, warm_b = now, n_b
        elif n_b > warm_b:
            n_steady += k
            done = n_b - warm_b >= n_batches and now - t_steady0 >= min_seconds and (n_b - warm_b) % align == 0
            if done or now - t_steady0 >= max_seconds: break
    t_end = time.perf_counter()
    steady_s = (t_end - t_steady0) if t_steady0 is not None else float('nan')
    return {'first_batch_s': t_first if t_first is not None else float('nan'),
            'items_per_s': n_steady / steady_s if n_steady and steady_s > 0 else float('nan'),
            'items_per_s_incl_first': n_items / (t_end - t0) if n_items else float('nan'),
            'n_items': n_items, 'n_batches': n_b, 'steady_s': steady_s}
