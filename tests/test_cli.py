"End-to-end: the `spatial-dl` console script as a user runs it."
import json, os, subprocess, sys
from pathlib import Path
import pytest

exe = Path(sys.executable).parent/'spatial-dl'

def _run(*args, cwd=None, timeout=600):
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)

def test_help_lists_every_command():
    from spatial_dl.cli import COMMANDS
    r = _run('--help')
    assert r.returncode == 0
    for name in COMMANDS: assert name in r.stdout

def test_unknown_command_suggests_the_closest():
    r = _run('pretrian')
    assert r.returncode == 2 and "Did you mean 'pretrain'?" in r.stderr

def test_every_command_answers_help():
    from spatial_dl.cli import COMMANDS, resolve
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e: resolve(name)(['--help'])
        assert e.value.code == 0, name

@pytest.mark.slow
def test_demo_trains_and_reports(tmp_path, spatial_paths):
    r = _run('demo', *map(str, spatial_paths), '--out', str(tmp_path/'out'), '--epochs', '3', '--no-progress')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'cells/s' in r.stdout and 'loss:' in r.stdout
    m = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert m['loss_last'] < m['loss_first']
    assert m['cells_per_s'] > 0 and m['n_cells'] == 3*12*12
    assert (tmp_path/'out'/'loss.png').stat().st_size > 1000

def test_simulate_writes_files(tmp_path):
    r = _run('simulate', str(tmp_path), '--samples', '2', '--rows', '5', '--cols', '5', '--genes', '20')
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob('*.h5ad')) == ['s0.h5ad', 's1.h5ad']
