"On-the-fly MLM batches from .h5ad: masks depend on the batch, not on how many batches came before (exact resume)."
import numpy as np
import torch
from spatial_dl.datasets import write_spatial_dataset
from spatial_dl.tokenizers import gene_medians, TokenDictionary, RankValueTokenizer
from spatial_dl.collate import MLMCollator
from spatial_dl.train import h5ad_token_batches

def _passes(tmp_path, collator_seed):
    paths = write_spatial_dataset(tmp_path/f'h5_{collator_seed}', n_samples=2, n_rows=8, n_cols=8, n_genes=60, seed=0)
    med = gene_medians(paths, progress=False)
    td = TokenDictionary.build(sorted(med))
    tok = RankValueTokenizer(td, med, model_input_size=32)
    ds = h5ad_token_batches(paths, tok, MLMCollator(td, seed=collator_seed), batch_size=8, seed=3)
    ds.set_epoch(1); full = [(b['index'].clone(), b['input_ids'].clone(), b['labels'].clone()) for b in ds]
    ds.set_epoch(1); ds.skip = 3; rest = [(b['index'].clone(), b['input_ids'].clone(), b['labels'].clone()) for b in ds]
    return full, rest

def test_masks_after_a_skip_equal_the_uninterrupted_pass(tmp_path):
    for collator_seed in (0, None):
        full, rest = _passes(tmp_path, collator_seed)
        assert len(rest) == len(full) - 3 and len(full) > 4
        for (i1, x1, y1), (i2, x2, y2) in zip(full[3:], rest):
            assert torch.equal(i1, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)
        assert any((y != -100).any() for _, _, y in full)                       # something was masked
        m0, m1 = full[0][2] != -100, full[1][2] != -100                          # and batches get different masks
        r, c = min(m0.shape[0], m1.shape[0]), min(m0.shape[1], m1.shape[1])
        assert not torch.equal(m0[:r, :c], m1[:r, :c])
