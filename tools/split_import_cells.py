"""Split notebook cells that mix imports with other code into an imports cell followed by the rest.

The docs build (nbdev's processing) executes every cell containing an import, so such cells must not depend on
earlier cells. `python tools/split_import_cells.py nbs/X.ipynb [...]`, then `nbdev_clean`."""
import ast, hashlib, json, sys
from pathlib import Path

def split_cell(src: str):
    "(imports_source, rest_source) if `src` mixes top-level imports with other statements, else None."
    lines = src.splitlines()
    directives = [l for l in lines if l.startswith('#|')]
    if any(d.replace(' ', '').startswith(('#|export', '#|exporti', '#|exports', '#|eval:false')) for d in directives): return None
    try: tree = ast.parse(src)
    except SyntaxError: return None
    imps = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    if not imps or len(imps) == len(tree.body): return None
    imp_src = '\n'.join(ast.get_source_segment(src, n) for n in imps)
    # remove the import statements (they may share a line with other code, separated by ';')
    keep = lines[:]
    for n in sorted(imps, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        l0, l1 = n.lineno - 1, n.end_lineno - 1
        if l0 == l1:
            line = keep[l0]
            seg = line[n.col_offset:n.end_col_offset]
            rest = (line[:n.col_offset] + line[n.end_col_offset:]).strip()
            rest = rest.strip(';').strip()
            keep[l0] = rest
        else:
            for i in range(l0, l1 + 1): keep[i] = ''
    rest_src = '\n'.join(l for l in keep if l.strip() or l == '')
    body = '\n'.join(l for l in rest_src.splitlines() if not l.startswith('#|')).strip('\n')
    rest_src = '\n'.join(directives + [body])
    return '\n'.join(directives + [imp_src]), rest_src

def fix(path: Path) -> int:
    nb = json.loads(path.read_text(encoding='utf-8'))
    out, n = [], 0
    for c in nb['cells']:
        res = split_cell(''.join(c['source'])) if c['cell_type'] == 'code' else None
        if res is None: out.append(c); continue
        n += 1
        for i, s in enumerate(res):
            lines = s.splitlines()
            new = dict(c, source=[l + '\n' for l in lines[:-1]] + lines[-1:], outputs=[], execution_count=None)
            new['id'] = hashlib.sha1(f"{c.get('id', '')}{i}".encode()).hexdigest()[:8]
            out.append(new)
    if n:
        nb['cells'] = out
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    return n

if __name__ == '__main__':
    for p in sys.argv[1:]: print(p, fix(Path(p)), 'cells split')
