"""Convert between a notebook and a light 'percent' script, for authoring notebooks from an editor.

The notebook stays the source of truth; the script is a scratch view:

    python tools/nbpy.py to-py nbs/03_readers.ipynb /tmp/03_readers.py    # edit the script ...
    python tools/nbpy.py to-nb /tmp/03_readers.py nbs/03_readers.ipynb    # ... and write the notebook back

Cells are separated by lines `# %%` (code) and `# %% [markdown]` (markdown; every line starts with `# `).
"""
import hashlib, json, sys
from pathlib import Path

def _md_lines(lines):
    return [l[2:] if l.startswith('# ') else ('' if l.strip() == '#' else l) for l in lines]

def script_to_cells(text: str) -> list[dict]:
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        while buf and not buf[-1].strip(): buf.pop()
        while buf and not buf[0].strip(): buf.pop(0)
        src = _md_lines(buf) if kind == 'markdown' else buf
        if not src: return
        source = [l + '\n' for l in src[:-1]] + [src[-1]]
        cid = hashlib.sha1(f"{len(cells)}\n{''.join(source)}".encode()).hexdigest()[:8]  # stable ids: stable exports
        cell = {'cell_type': kind, 'id': cid, 'metadata': {}, 'source': source}
        if kind == 'code': cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    for line in text.splitlines():
        if line.startswith('# %%'):
            flush(); buf = []
            kind = 'markdown' if '[markdown]' in line else 'code'
        else:
            if kind is None: kind = 'code'
            buf.append(line)
    flush()
    return cells

def to_nb(src: str, dest: str):
    cells = script_to_cells(Path(src).read_text())
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    tmp = Path(dest).with_suffix('.ipynb.tmp')
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    tmp.replace(dest)

def to_py(src: str, dest: str):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb['cells']:
        lines = ''.join(c['source']).splitlines()
        if c['cell_type'] == 'markdown':
            out.append('# %% [markdown]'); out += [('# ' + l) if l else '#' for l in lines]
        else:
            out.append('# %%'); out += lines
        out.append('')
    Path(dest).write_text('\n'.join(out))

if __name__ == '__main__':
    if len(sys.argv) != 4 or sys.argv[1] not in ('to-nb', 'to-py'):
        sys.exit(__doc__)
    {'to-nb': to_nb, 'to-py': to_py}[sys.argv[1]](sys.argv[2], sys.argv[3])
