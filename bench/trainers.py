#!/usr/bin/env python
"""Trainer benchmark: masked-LM pretraining of the same small BERT on the same tokens, on CPU, through spatial_dl
(`MLMPretrainer` + `TokenBatches` + `MLMCollator` on a Lightning Trainer, `spatial_dl.train.fit_pretraining`) and
through Hugging Face's `transformers.Trainer` (same model config, same initial weights, same collator, its own
length-grouped sampler), in the same run.

    .venv/bin/python bench/trainers.py --quick                              # <= 60 s on 2 cores
    .venv/bin/python bench/trainers.py --json bench/results/trainers.json   # full: bigger model, more steps, 3 rounds

Reported per candidate (medians over rounds, each run in a fresh process, candidates interleaved):
  tokens_per_s     non-pad tokens trained per second of wall time, over the steps after the warm-up steps
  final_loss       mean training loss of the last 10 steps (same seed, so the two should agree within noise)
  data_wait_frac   spatial_dl only: share of step wall time spent waiting for the next batch (loader + collate)
Targets (`ratios` in the JSON): spatial_dl tokens/s >= 1.0x HF Trainer; |final loss ratio - 1| <= 0.1; data_wait_frac <= 0.2.
Data: the simulator's slides tokenized (rank-value, spot mode) to a Hugging Face dataset under --data-dir.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# run as a script, bench/ comes first on sys.path and bench/tokenizers.py would shadow HuggingFace's `tokenizers`
# (imported by transformers/datasets): keep bench/ last, only for `_common`
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or '.').resolve() != _here] + [str(_here)]
from _common import base_argparser, interleaved, medians, print_table, target, write_json  # noqa: E402

PACKAGES = ('spatial_dl', 'torch', 'lightning', 'transformers', 'datasets', 'numpy')
HERE = Path(__file__).resolve()
SIZES = {  # quick: tiny model and few steps; full: a small BERT for a few hundred steps
    True: dict(n_rows=16, n_cols=16, n_genes=300, max_input=64, layers=1, heads=2, dim=64, batch=16, steps=30, warmup=5),
    False: dict(n_rows=32, n_cols=32, n_genes=1000, max_input=256, layers=4, heads=4, dim=128, batch=16, steps=120, warmup=10),
}


def ensure_tokens(data_dir: str, n_rows: int, n_cols: int, n_genes: int, max_input: int) -> str:
    "Tokenized simulator slides as a Hugging Face dataset on disk (+ token dictionary); built once per size."
    out = Path(data_dir) / f'tokens_{n_rows}x{n_cols}x{n_genes}_L{max_input}'
    if (out / 'dataset_info.json').exists() or (out / 'state.json').exists(): return str(out)
    import anndata as ad, datasets
    from spatial_dl.datasets import write_spatial_dataset
    from spatial_dl.tokenizers import gene_medians, TokenDictionary, RankValueTokenizer
    paths = write_spatial_dataset(Path(data_dir) / f'slides_{n_rows}x{n_cols}x{n_genes}', overwrite=True, n_samples=3,
                                  n_rows=n_rows, n_cols=n_cols, n_genes=n_genes, seed=0)
    med = gene_medians(paths, progress=False)
    td = TokenDictionary.build(sorted(med))
    tok = RankValueTokenizer(td, med, model_input_size=max_input)
    ids = [x.tolist() for p in paths for x in tok.tokenize_adata(ad.read_h5ad(p)) if len(x)]
    tmp = out.with_name(out.name + '.tmp')
    datasets.Dataset.from_dict({'input_ids': ids, 'length': [len(x) for x in ids]}).save_to_disk(str(tmp))
    td.save(tmp / 'token_dictionary.pkl')
    os.replace(tmp, out)
    return str(out)


def _setup(data: str, max_input: int, layers: int, heads: int, dim: int, seed: int = 0):
    import torch
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '1')))
    from spatial_dl.tokenizers import TokenDictionary
    from spatial_dl.models import build_bert_config
    td = TokenDictionary.load(Path(data) / 'token_dictionary.pkl')
    cfg = build_bert_config(len(td), num_layers=layers, num_heads=heads, embed_dim=dim, max_input=max_input)
    return td, cfg


def run_spatial_dl(data: str, max_input: int, layers: int, heads: int, dim: int, batch: int, steps: int, warmup: int, **_) -> dict:
    "Pretrain with spatial_dl.train.fit_pretraining for `steps` steps; throughput after `warmup` steps."
    import warnings, logging
    warnings.filterwarnings('ignore'); logging.getLogger('lightning.pytorch').setLevel(logging.ERROR)
    import torch
    from lightning.pytorch.callbacks import Callback
    td, cfg = _setup(data, max_input, layers, heads, dim)
    from spatial_dl.collate import MLMCollator
    from spatial_dl.models import MLMPretrainer
    from spatial_dl.train import TokenBatches, fit_pretraining, get_training_arguments, setup_environment
    setup_environment(0)
    module = MLMPretrainer(cfg, lr=1e-3, weight_decay=0.001, warmup_steps=warmup, scheduler='linear', total_steps=steps)
    tb = TokenBatches(data, MLMCollator(td), batch_size=batch, seed=0)
    marks = []
    class Clock(Callback):
        def on_train_batch_end(self, tr, m, out, b, i): marks.append((time.perf_counter(), int(b['attention_mask'].sum())))
    tcfg = get_training_arguments(batch_size=batch, max_steps=steps, max_epochs=10**6, lr=1e-3, warmup_steps=warmup,
                                  grad_clip=1.0, progress=False, log_every=10, seed=0)
    res = fit_pretraining(module, tb, tcfg, dirs={}, callbacks=[Clock()], logger=False)
    (t0, _), rest = marks[warmup - 1], marks[warmup:]
    losses = res.losses()
    return dict(tokens_per_s=sum(n for _, n in rest) / (rest[-1][0] - t0), final_loss=sum(losses[-10:]) / len(losses[-10:]),
                first_loss=losses[0], steps=len(marks), data_wait_frac=res.throughput['data_wait_frac'])


def run_hf_trainer(data: str, max_input: int, layers: int, heads: int, dim: int, batch: int, steps: int, warmup: int, **_) -> dict:
    "The same model, initial weights, collator and data through transformers.Trainer."
    import warnings, tempfile, logging
    warnings.filterwarnings('ignore')
    import datasets, torch
    import transformers
    transformers.logging.set_verbosity_error()
    from transformers import BertForMaskedLM, Trainer, TrainingArguments, TrainerCallback
    td, cfg = _setup(data, max_input, layers, heads, dim)
    from spatial_dl.collate import MLMCollator
    from spatial_dl.train import setup_environment
    setup_environment(0)
    model = BertForMaskedLM(cfg)          # same seed, same construction: the same initial weights as spatial_dl's
    coll = MLMCollator(td)
    marks, pending = [], []
    def collate(ex):
        b = coll(ex); pending.append(int(b['attention_mask'].sum())); return b
    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw): marks.append((time.perf_counter(), pending.pop(0) if pending else 0))
    ds = datasets.load_from_disk(data)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-3,
                                 weight_decay=0.001, warmup_steps=warmup, lr_scheduler_type='linear', max_grad_norm=1.0,
                                 logging_steps=1, save_strategy='no', report_to=[], use_cpu=True, seed=0,
                                 train_sampling_strategy='group_by_length', length_column_name='length', dataloader_num_workers=0,
                                 disable_tqdm=True, remove_unused_columns=True)
        tr = Trainer(model=model, args=args, train_dataset=ds, data_collator=collate, callbacks=[Clock()])
        tr.train()
        losses = [h['loss'] for h in tr.state.log_history if 'loss' in h]
    (t0, _), rest = marks[warmup - 1], marks[warmup:]
    return dict(tokens_per_s=sum(n for _, n in rest) / (rest[-1][0] - t0), final_loss=sum(losses[-10:]) / len(losses[-10:]),
                first_loss=losses[0], steps=len(marks))


def main(argv=None) -> int:
    p = base_argparser(__doc__.split('\n')[0])
    p.add_argument('--data-dir', default='/tmp/spatial_dl_bench', help='where generated slides and tokens are kept')
    p.add_argument('--threads', type=int, default=1, help='torch threads in each candidate (1: least sensitive to a shared, loaded machine)')
    args = p.parse_args(argv)
    size = SIZES[args.quick]
    repeats = args.repeats or (1 if args.quick else 3)
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = ensure_tokens(args.data_dir, size['n_rows'], size['n_cols'], size['n_genes'], size['max_input'])
    print(f"tokens ready in {time.perf_counter() - t:.1f} s: {data}", file=sys.stderr)
    kw = dict(data=data, **{k: size[k] for k in ('max_input', 'layers', 'heads', 'dim', 'batch', 'steps', 'warmup')})
    env = {'BENCH_THREADS': args.threads, 'TOKENIZERS_PARALLELISM': 'false'}
    rows = interleaved({'spatial_dl': (f'{HERE}:run_spatial_dl', kw, env), 'hf_trainer': (f'{HERE}:run_hf_trainer', kw, env)},
                       repeats=repeats, timeout=args.timeout)
    med = medians(rows)
    print_table(med, ['name', ('tokens_per_s', 'tokens/s', '{:,.0f}'), ('first_loss', 'loss@1', '{:.3f}'),
                      ('final_loss', f"loss@{size['steps']}", '{:.3f}'), ('data_wait_frac', 'data wait', '{:.1%}'),
                      ('_call_s', 'call s', '{:.1f}'), 'n_ok'])
    m = {r['name']: r for r in med}
    sd, hf = m.get('spatial_dl', {}), m.get('hf_trainer', {})
    tps = sd.get('tokens_per_s') / hf['tokens_per_s'] if sd.get('tokens_per_s') and hf.get('tokens_per_s') else None
    lr_ = sd.get('final_loss') / hf['final_loss'] if sd.get('final_loss') and hf.get('final_loss') else None
    ratios = {'tokens_per_s_vs_hf_trainer': target(tps, '>=', 1.0, 'spatial_dl tokens/s over HF Trainer tokens/s, same model/data/collator'),
              'final_loss_rel_diff': target(abs(lr_ - 1) if lr_ is not None else None, '<=', 0.1,
                                            f"|spatial_dl / HF final loss - 1|, mean of the last 10 of {size['steps']} steps"),
              'data_wait_frac': target(sd.get('data_wait_frac'), '<=', 0.2, 'share of spatial_dl step time waiting for data')}
    for k, v in ratios.items(): print(f"{k}: {v['value'] if v['value'] is None else round(v['value'], 3)} (target {v['target']}) pass={v['pass']}")
    write_json(args.json, rows, ratios, extra={'medians': med, 'sizes': size, 'repeats': repeats}, packages=PACKAGES)
    return 0


if __name__ == '__main__':
    sys.exit(main())
