"AnnDataModule under a real Lightning Trainer: a new training order each epoch, sequential val, disjoint group splits."
import numpy as np
import pytest
import torch

from spatial_dl.datasets import write_spatial_dataset


@pytest.fixture(scope='module')
def paths(tmp_path_factory):
    return write_spatial_dataset(tmp_path_factory.mktemp('dm') / 's', n_samples=4, n_rows=8, n_cols=8, n_genes=40, seed=2)


def test_trainer_epochs_get_new_orders(paths, tmp_path):
    import lightning.pytorch as pl
    from spatial_dl.loaders import AnnDataModule

    class Probe(pl.LightningModule):
        "A linear model that records which rows it saw in each epoch."
        def __init__(self):
            super().__init__(); self.lin = torch.nn.Linear(40, 1); self.seen, self.val_seen = {}, {}
        def training_step(self, batch, i):
            self.seen.setdefault(self.current_epoch, []).append(batch['index'].numpy().copy())
            return self.lin(batch['X']).pow(2).mean()
        def validation_step(self, batch, i):
            self.val_seen.setdefault(self.current_epoch, []).append(batch['index'].numpy().copy())
        def configure_optimizers(self): return torch.optim.SGD(self.parameters(), lr=1e-3)

    dm = AnnDataModule(paths, batch_size=16, split=(0.5, 0.25, 0.25), split_by='sample', obs_keys=['cell_type'],
                       num_workers=1, block_size=4, fetch_factor=2)
    model = Probe()
    trainer = pl.Trainer(max_epochs=3, accelerator='cpu', devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    info = dm.split_info
    orders = [np.concatenate(model.seen[e]) for e in range(3)]
    for o in orders: np.testing.assert_array_equal(np.sort(o), info.train_indices)   # each epoch: every train row once
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    for e in range(3): np.testing.assert_array_equal(np.concatenate(model.val_seen[e]), info.val_indices)
    samples = dm.reader.obs_column('sample')
    groups = [set(samples[ix].tolist()) for ix in (info.train_indices, info.val_indices, info.test_indices)]
    assert groups[0].isdisjoint(groups[1]) and groups[0].isdisjoint(groups[2]) and groups[1].isdisjoint(groups[2])
    assert info.metadata['cell_type'] == dm.reader.obs_categories('cell_type')


def test_datamodule_bad_input(paths):
    from spatial_dl.loaders import AnnDataModule
    with pytest.raises(ValueError, match='sum to 1'): AnnDataModule(paths, split=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match='split must be'): AnnDataModule(paths, split=(1.0,))
    with pytest.raises(ValueError, match='batch_size must be a positive integer'): AnnDataModule(paths, batch_size=0)
    dm = AnnDataModule(paths, split_by='slide')
    with pytest.raises(KeyError, match="split_by: obs column 'slide' not found"): dm.setup('fit')


def test_lightning_breaks_out_of_persistent_worker_loaders(paths, tmp_path):
    "Sanity-check steps and limit_train_batches leave loops early every epoch; the next loop still gets the planned rows."
    import lightning.pytorch as pl
    from spatial_dl.loaders import AnnDataModule

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__(); self.lin = torch.nn.Linear(40, 1); self.seen, self.val_seen = {}, {}
        def training_step(self, batch, i):
            self.seen.setdefault(self.current_epoch, []).append(batch['index'].numpy().copy())
            assert torch.equal(batch['X'], batch['X'])   # touch the values
            return self.lin(batch['X']).pow(2).mean()
        def validation_step(self, batch, i):
            if not self.trainer.sanity_checking:
                self.val_seen.setdefault(self.current_epoch, []).append(batch['index'].numpy().copy())
        def configure_optimizers(self): return torch.optim.SGD(self.parameters(), lr=1e-3)

    dm = AnnDataModule(paths, batch_size=8, split=(0.5, 0.5), num_workers=2, block_size=4, fetch_factor=2, seed=4)
    model = Probe()
    trainer = pl.Trainer(max_epochs=3, accelerator='cpu', devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=2, limit_train_batches=3)
    trainer.fit(model, datamodule=dm)
    for e in range(3):
        planned = np.concatenate(dm.train_dataset.plan(e).fetches)[:3 * 8]
        np.testing.assert_array_equal(np.concatenate(model.seen[e]), planned)
        np.testing.assert_array_equal(np.sort(np.concatenate(model.val_seen[e])), dm.split_info.val_indices)
