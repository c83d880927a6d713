"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does, without needing Quarto).

Markdown cells are copied; code cells become ```python blocks; cells with `#| hide` are left out, and directive
lines (`#| ...`) are dropped.  `python tools/make_readme.py [--check]` (--check: exit 1 if README.md is stale)."""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        lines = src.splitlines()
        directives = [l for l in lines if l.startswith('#|')]
        if any(d.replace(' ', '') in ('#|hide', '#|include:false') for d in directives): continue
        body = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
        if not body.strip(): continue
        if c['cell_type'] == 'markdown': parts.append(body)
        elif c['cell_type'] == 'code': parts.append(f"```python\n{body}\n```")
    header = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n'
    return header + '\n\n'.join(parts) + '\n'

def main(check: bool=False, root: Path=root) -> int:
    text = render(root/'nbs'/'index.ipynb')
    readme = root/'README.md'
    if check:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            print('README.md is not what nbs/index.ipynb generates (run python tools/make_readme.py)'); return 1
        return 0
    tmp = readme.with_suffix('.md.tmp'); tmp.write_text(text, encoding='utf-8'); tmp.replace(readme)
    return 0

if __name__ == '__main__': sys.exit(main('--check' in sys.argv))
