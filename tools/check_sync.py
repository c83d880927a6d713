"""Fail when `spatial_dl/` differs from what `nbdev_export` writes from `nbs/`, or when a notebook is not clean.

Works on a temporary copy, so the working tree is never modified by the check."""
import filecmp, shutil, subprocess, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
bin_dir = Path(sys.executable).parent

def tree_files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob('*') if p.is_file() and '__pycache__' not in p.parts}

def lint_notebooks(nbs: Path) -> list[str]:
    "Conventions the docs build relies on: imports alone in their cells (it executes every cell containing an import)."
    import ast, json
    problems = []
    for nb_path in sorted(nbs.rglob('*.ipynb')):
        if any(p.startswith(('.', '_')) for p in nb_path.relative_to(nbs).parts): continue
        for i, c in enumerate(json.loads(nb_path.read_text(encoding='utf-8'))['cells']):
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or src.lstrip().startswith(('%', '!')): continue
            lines = [l for l in src.splitlines() if not l.startswith('#|')]
            directives = [l.replace(' ', '') for l in src.splitlines() if l.startswith('#|')]
            if any(d.startswith(('#|export', '#|exporti', '#|exports', '#|eval:false')) for d in directives): continue
            try: tree = ast.parse('\n'.join(lines))
            except SyntaxError: continue
            kinds = {type(n) for n in tree.body}
            if kinds & {ast.Import, ast.ImportFrom} and kinds - {ast.Import, ast.ImportFrom}:
                problems.append(f"{nb_path.relative_to(nbs.parent)} cell {i}: imports mixed with other code "
                                f"(put imports in their own cell; the docs build executes every cell with an import)")
    return problems

def main() -> int:
    problems = lint_notebooks(root/'nbs')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ('settings.ini', '_quarto.yml', 'pyproject.toml', 'setup.py', 'README.md'):
            if (root/name).exists(): shutil.copy2(root/name, tmp/name)
        shutil.copytree(root/'nbs', tmp/'nbs', symlinks=True, ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
        shutil.copytree(root/'spatial_dl', tmp/'spatial_dl', ignore=shutil.ignore_patterns('__pycache__'))
        for cmd in ('nbdev_export', 'nbdev_clean'):
            r = subprocess.run([str(bin_dir/cmd)], cwd=tmp, capture_output=True, text=True)
            if r.returncode: problems.append(f"{cmd} failed:\n{r.stdout}{r.stderr}")
        for sub in ('spatial_dl', 'nbs'):
            a, b = root/sub, tmp/sub
            fa, fb = tree_files(a), tree_files(b)
            if sub == 'nbs':
                fa = {f for f in fa if f.endswith('.ipynb')}; fb = {f for f in fb if f.endswith('.ipynb')}
            for f in sorted(fb - fa): problems.append(f"{sub}/{f}: written by the export but missing from the repository")
            for f in sorted(fa & fb):
                if not filecmp.cmp(a/f, b/f, shallow=False):
                    what = 'not what the notebooks export (run nbdev_export)' if sub == 'spatial_dl' else 'not clean (run nbdev_clean)'
                    problems.append(f"{sub}/{f}: {what}")
    sys.path.insert(0, str(root/'tools'))
    import make_readme
    if make_readme.main(check=True, root=root): problems.append('README.md: not what nbs/index.ipynb generates (run python tools/make_readme.py)')
    for p in problems: print('SYNC ERROR:', p)
    if not problems: print('spatial_dl/ matches the notebooks; notebooks are clean; README.md matches nbs/index.ipynb')
    return 1 if problems else 0

if __name__ == '__main__': sys.exit(main())
