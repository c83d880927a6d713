"The docs site builds without Quarto, every notebook gets a page linked from the index, API docs are rendered."
import json, re, subprocess, sys
from pathlib import Path
import pytest

root = Path(__file__).resolve().parent.parent

@pytest.mark.slow
def test_docs_site_builds_and_links_every_notebook(tmp_path):
    out = tmp_path/'site'
    r = subprocess.run([sys.executable, str(root/'tools'/'build_docs.py'), '--out', str(out), '--force'],
                       cwd=root, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    notebooks = sorted(p.relative_to(root/'nbs') for p in (root/'nbs').rglob('*.ipynb')
                       if not any(part.startswith(('_', '.')) for part in p.relative_to(root/'nbs').parts))
    pages = json.loads((out/'pages.json').read_text())
    assert len(pages) == len(notebooks)
    index = (out/'index.html').read_text()
    for nb in notebooks:
        page = str(nb.with_name(re.sub(r'^\d+[a-z]?_', '', nb.stem) + '.html'))
        assert (out/page).exists(), f"no page for {nb}"
        assert f'href="{page}"' in index, f"{page} not linked from the index"
    core = (out/'core.html').read_text()
    for name in ('make_rng', 'atomic_write', 'DistInfo'):  # show_doc output for exported names
        assert name in core
    assert '<nav class="sdl-nav">' in core

def test_readme_is_generated_from_index():
    sys.path.insert(0, str(root/'tools'))
    import make_readme
    text = make_readme.render(root/'nbs'/'index.ipynb')
    assert (root/'README.md').read_text() == text
    # the README opens with the two commands
    block = text[text.index('```sh'):]
    cmds = [l.split('#')[0].strip() for l in block.splitlines()[1:block.splitlines().index('```')]]
    assert cmds == ['make demo', 'make test']
