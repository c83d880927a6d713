"Batch-exact mid-epoch resume when training from .h5ad files (AnnDataset.skip driven by train.ExactResume)."
import os
from pathlib import Path
import numpy as np
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')
from lightning.pytorch.callbacks import Callback
from spatial_dl.datasets import write_spatial_dataset
from spatial_dl.loaders import AnnDataset, make_dataloader
from spatial_dl.shuffle import BlockShuffleStrategy
from spatial_dl.train import fit_classifier, get_training_arguments


@pytest.fixture(scope='module')
def paths(tmp_path_factory):
    return write_spatial_dataset(tmp_path_factory.mktemp('h5ad'), n_samples=2, n_rows=8, n_cols=8, n_genes=50)


def strategy():   # small blocks and 2 batches per fetch: a skip ends inside a fetch, and workers interleave fetches
    return BlockShuffleStrategy(block_size=4, fetch_factor=2)


class Spy(Callback):
    "Step, epoch and global row ids of every training batch."
    def __init__(self): self.seen = []
    def on_train_batch_start(self, tr, m, b, i): self.seen.append((tr.global_step, tr.current_epoch, b['index'].tolist()))


def cfg(out, nw, **kw):
    base = dict(batch_size=8, max_epochs=2, seed=0, lr=1e-2, progress=False, log_every=1, scheduler='constant',
                weight_decay=0.0, output_dir=str(out), run_name='r', num_workers=nw)
    return get_training_arguments(**{**base, **kw})


@pytest.mark.parametrize('nw', [0, 2])
def test_skip_delivers_the_rest_of_the_epoch(paths, nw):
    ds = AnnDataset(paths, batch_size=8, strategy=strategy(), seed=3)
    ds.set_epoch(1)
    for persistent in ([False, True] if nw else [False]):
        dl = make_dataloader(ds, num_workers=nw, persistent_workers=persistent)
        full = [b['index'].tolist() for b in dl]
        for k in (1, 2, 5, len(full) - 1, len(full)):
            ds.skip = k
            assert [b['index'].tolist() for b in dl] == full[k:], (persistent, k)
            assert ds.skip == 0
        assert [b['index'].tolist() for b in dl] == full          # the next epoch is whole again


@pytest.mark.parametrize('nw', [0, 2])
def test_classifier_resume_same_batches_same_losses(paths, tmp_path, nw):
    spy = Spy()
    ref = fit_classifier(paths, 'region', cfg(tmp_path, nw, ckpt_every=5), hidden=(16,), strategy=strategy(), callbacks=[spy])
    n = len(spy.seen)
    per_epoch = n // 2
    assert n == 2 * per_epoch and 10 < per_epoch < 20 and 20 % per_epoch, n
    assert [s for s, _, _ in spy.seen] == list(range(n))
    ck = ref.dirs['checkpoints']
    for step in (5, 20):                                             # mid-epoch 0 and mid-epoch 1 (13 batches per epoch)
        p = ck/f'epoch={step // per_epoch}-step={step}.ckpt'
        assert p.exists(), sorted(x.name for x in ck.iterdir())
        again = Spy()
        res = fit_classifier(paths, 'region', cfg(Path('.'), nw), hidden=(16,), strategy=strategy(), ckpt_path=p,
                             dirs={}, callbacks=[again])
        assert again.seen == spy.seen[step:], step                   # same steps, epochs and rows, batch for batch
        assert again.seen[0][2] != spy.seen[(step // per_epoch) * per_epoch][2]   # not a restart of the epoch
        np.testing.assert_allclose(res.losses(), ref.losses()[step:], rtol=1e-6)   # same losses from there on
    with pytest.raises(ValueError, match='incompatible checkpoint'):                 # other plans than the checkpoint's
        fit_classifier(paths, 'region', cfg(Path('.'), nw, seed=1), hidden=(16,), strategy=strategy(),
                       ckpt_path=ck/'epoch=0-step=5.ckpt', dirs={})
