"""Build the docs site into `_docs/` without Quarto.

nbdev's own notebook processing (`nbdev.serve.proc_nbs`: adds and runs `show_doc` for every exported name, drops
hidden cells, handles directives) followed by nbconvert's HTML exporter, plus a navigation bar on every page.
Users with Quarto installed keep the standard path: `nbdev_docs` (it reads `_quarto.yml`, symlinked into nbs/).

    python tools/build_docs.py [--out _docs] [--force] [--execute]

--execute runs every notebook first (as nbdev_test does, skipping cells flagged gpu/slow) so pages show outputs and
plots; without it pages show what is stored in the notebooks (committed clean, so code and API docs only).
"""
import argparse, html, json, os, re, shutil, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def _frontmatter(nb) -> dict:
    "Title/description from the raw '---' cell nbdev's processing writes (or from the first heading)."
    import yaml
    meta = {}
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.strip().startswith('---'):
            meta = yaml.safe_load(c.source.strip().strip('-')) or {}
            break
    if 'title' not in meta:
        for c in nb.cells:
            m = re.search(r'^#\s+(.+)$', c.source, re.M) if c.cell_type == 'markdown' else None
            if m: meta['title'] = m.group(1).strip(); break
    return meta

def _page_name(rel: Path) -> str:
    "index.ipynb -> index.html; 03_readers.ipynb -> readers.html; tutorials/x.ipynb -> tutorials/x.html"
    stem = re.sub(r'^\d+[a-z]?_', '', rel.stem)
    return str(rel.with_name(stem + '.html'))

def _prepare_cells(nb):
    "Apply the Quarto cell options nbdev relies on: `echo: false` hides the code, `include: false` the whole cell; drop `#|` lines."
    keep = []
    for c in nb.cells:
        if c.cell_type != 'code': keep.append(c); continue
        lines = c.source.splitlines()
        opts = {l[2:].split(':', 1)[0].strip(): l[2:].split(':', 1)[1].strip() for l in lines if l.startswith('#|') and ':' in l}
        if opts.get('include') == 'false': continue
        c.source = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
        if opts.get('echo') == 'false' or not c.source:
            c.metadata.setdefault('tags', []).append('sdl-hide-input')
        if not c.source and not c.get('outputs'): continue
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md: o['data']['text/markdown'] = _fix_quarto_markdown(md if isinstance(md, str) else ''.join(md))
        keep.append(c)
    nb.cells = keep
    return nb

_QUARTO_ATTRS = re.compile(r'\[([^\]]+)\]\(([^)]+)\)\{target="_blank"[^}]*\}')

def _fix_quarto_markdown(html_text: str) -> str:
    "show_doc writes Quarto link attributes ('[source](url){target=...}'); render them as plain links."
    return _QUARTO_ATTRS.sub(lambda m: f'<a class="sdl-source" href="{m.group(2)}" target="_blank">{m.group(1)}</a>', html_text)

def _nav(pages, current: str) -> str:
    up = '../' * current.count('/')
    items = []
    for name, title in pages:
        cls = ' class="active"' if name == current else ''
        items.append(f'<li><a{cls} href="{up}{name}">{html.escape(title)}</a></li>')
    return ('<nav class="sdl-nav"><a class="sdl-brand" href="' + up + 'index.html">spatial_dl</a><ul>'
            + ''.join(items) + '</ul></nav>')

NAV_CSS = """<style>
body { margin-left: 250px !important; }
.sdl-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 230px; overflow-y: auto; padding: 1rem;
  background: #f6f8fa; border-right: 1px solid #ddd; font: 14px/1.5 system-ui, sans-serif; z-index: 10; }
.sdl-nav ul { list-style: none; padding: 0; margin: 0.5rem 0 0 0; }
.sdl-nav a { color: #24292f; text-decoration: none; display: block; padding: 2px 6px; border-radius: 4px; }
.sdl-nav a.active, .sdl-nav a:hover { background: #dde4ee; }
.sdl-brand { font-weight: 700; font-size: 18px; }
.sdl-header { padding: 1.5rem 1rem 0 1rem; max-width: 1100px; font-family: system-ui, sans-serif; }
.sdl-header h1 { margin-bottom: 0.3rem; }
.sdl-header p { color: #57606a; font-size: 1.1rem; margin-top: 0; }
a.sdl-source { float: right; font-size: smaller; }
</style>"""

def execute_notebook(src: str, dest: str, skip_flags: str='gpu slow'):
    "Run `src` in-process (execnb, as nbdev_test does) and write it with outputs to `dest`; cells flagged `skip_flags` are skipped."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor, extract_directives
    src, dest = Path(src), Path(dest)
    nb = read_nb(src)
    flags = set(skip_flags.split())
    def skip(cell):
        if cell.cell_type != 'code': return True
        d = extract_directives(cell, remove=False)
        return bool(flags & d.keys()) or d.get('eval:', [''])[0].lower() == 'false'
    os.environ['IN_TEST'] = '1'
    shell = CaptureShell(src)
    with working_directory(src.parent): shell.run_all(nb, exc_stop=False, preproc=skip)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dest)

def execute_all(nbs_dir: Path, dest_dir: Path, n_workers: int=2):
    "Execute every notebook of `nbs_dir` into `dest_dir` (one fresh process per notebook, `n_workers` at a time)."
    import subprocess
    from concurrent.futures import ThreadPoolExecutor
    shutil.copytree(nbs_dir, dest_dir, symlinks=True, dirs_exist_ok=True)
    nbs = [p for p in nbs_dir.rglob('*.ipynb') if not any(q.startswith(('_', '.')) for q in p.relative_to(nbs_dir).parts)]
    def run(p):
        d = dest_dir/p.relative_to(nbs_dir)
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import build_docs; build_docs.execute_notebook({str(d)!r}, {str(d)!r})"
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
        print(f"  executed {p.relative_to(nbs_dir)}" + ('' if r.returncode == 0 else f" (FAILED: {r.stderr[-300:]})"), flush=True)
    with ThreadPoolExecutor(n_workers) as ex: list(ex.map(run, nbs))

def build(out: Path, force: bool=False, execute: bool=False) -> list[Path]:
    os.chdir(root)
    from nbdev.serve import proc_nbs
    import nbformat
    from nbconvert import HTMLExporter
    nbs_dir = root/'nbs'
    if execute:
        exec_dir = Path(tempfile.mkdtemp(prefix='spatial_dl_exec_'))/'nbs'
        execute_all(nbs_dir, exec_dir); nbs_dir = exec_dir; force = True
    proc = Path(proc_nbs(path=str(nbs_dir), n_workers=0 if sys.platform == 'win32' else 2, force=force))
    nbs = sorted(p for p in proc.rglob('*.ipynb') if not any(part.startswith(('_', '.')) for part in p.relative_to(proc).parts))
    if not nbs: raise SystemExit(f"no processed notebooks found in {proc}")
    loaded = []
    for p in nbs:
        rel = p.relative_to(proc)
        nb = nbformat.read(p, as_version=4)
        meta = _frontmatter(nb)
        nb.cells = [c for c in nb.cells if not (c.cell_type == 'raw' and c.source.strip().startswith('---'))]
        loaded.append((rel, nb, meta))
    key = lambda t: (t[0].name != 'index.ipynb', len(t[0].parts) > 1, str(t[0]))
    loaded.sort(key=key)
    pages = [(_page_name(rel), meta.get('title', rel.stem)) for rel, _, meta in loaded]
    from traitlets.config import Config
    cfg = Config()
    cfg.TagRemovePreprocessor.enabled = True
    cfg.TagRemovePreprocessor.remove_input_tags = {'sdl-hide-input'}
    exporter = HTMLExporter(config=cfg, template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    tmp = Path(tempfile.mkdtemp(prefix='.docs.', dir=out.parent))
    written = []
    try:
        for (rel, nb, meta), (name, title) in zip(loaded, pages):
            body, _ = exporter.from_notebook_node(_prepare_cells(nb))
            desc = f'<p>{html.escape(str(meta["description"]))}</p>' if meta.get('description') else ''
            head = f'<header class="sdl-header"><h1>{html.escape(str(title))}</h1>{desc}</header>'
            body = body.replace('<title>Notebook</title>', f'<title>{html.escape(title)} – spatial_dl</title>')
            body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + NAV_CSS + _nav(pages, name) + head, body, count=1)
            dest = tmp/name; dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(body, encoding='utf-8'); written.append(out/name)
        (tmp/'pages.json').write_text(json.dumps([{'page': n, 'title': t} for n, t in pages], indent=1))
        if out.exists(): shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists(): shutil.rmtree(tmp)
    return written

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(root/'_docs'), help='output folder (replaced atomically)')
    ap.add_argument('--force', action='store_true', help="re-process every notebook, ignoring nbdev's _proc cache")
    ap.add_argument('--execute', action='store_true', help='run the notebooks first so pages show outputs and plots')
    a = ap.parse_args()
    pages = build(Path(a.out).resolve(), a.force, a.execute)
    print(f"wrote {len(pages)} pages to {a.out}; open {Path(a.out)/'index.html'}")
