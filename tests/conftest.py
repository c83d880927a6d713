"Shared pytest fixtures: small simulated datasets written once per test session."
import os
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture(scope='session')
def spatial_paths(tmp_path_factory):
    "Three small simulated slides (.h5ad, raw counts), written once per session."
    from spatial_dl.datasets import write_spatial_dataset
    return write_spatial_dataset(tmp_path_factory.mktemp('spatial'), n_samples=3, n_rows=12, n_cols=12, n_genes=200, seed=0)

@pytest.fixture(scope='session')
def cells_path(tmp_path_factory):
    "A small single-cell-like CSR .h5ad (2,000 × 1,000, rows sorted by sample then cell type)."
    from spatial_dl.datasets import write_cells_h5ad
    return write_cells_h5ad(tmp_path_factory.mktemp('cells')/'cells.h5ad', n_obs=2000, n_vars=1000, nnz_per_cell=80,
                            n_samples=2, n_cell_types=6, progress=False)
