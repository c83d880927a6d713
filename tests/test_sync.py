"The test command's first step (tools/check_sync.py) fails when a notebook was edited but not exported."
import json, shutil, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def _copy_project(dest: Path):
    for name in ('settings.ini', '_quarto.yml', 'pyproject.toml', 'setup.py', 'README.md'):
        if (root/name).exists(): shutil.copy2(root/name, dest/name)
    shutil.copytree(root/'nbs', dest/'nbs', symlinks=True)
    shutil.copytree(root/'spatial_dl', dest/'spatial_dl', ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(root/'tools', dest/'tools', ignore=shutil.ignore_patterns('__pycache__'))

def _check(d: Path):
    return subprocess.run([sys.executable, str(d/'tools'/'check_sync.py')], cwd=d, capture_output=True, text=True, timeout=600)

def test_sync_check_passes_then_fails_on_unexported_edit(tmp_path):
    _copy_project(tmp_path)
    r = _check(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    nb_path = tmp_path/'nbs'/'00_core.ipynb'
    nb = json.loads(nb_path.read_text())
    cell = next(c for c in nb['cells'] if c['cell_type'] == 'code' and ''.join(c['source']).startswith('#| export\ndef make_rng'))
    cell['source'] = [l.replace('An independent, reproducible', 'A changed') for l in cell['source']]
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    r = _check(tmp_path)
    assert r.returncode == 1
    assert 'spatial_dl/core.py: not what the notebooks export' in r.stdout

def test_sync_check_fails_on_stale_readme(tmp_path):
    _copy_project(tmp_path)
    (tmp_path/'README.md').write_text((tmp_path/'README.md').read_text() + '\nhand edit\n')
    r = _check(tmp_path)
    assert r.returncode == 1 and 'README.md' in r.stdout
