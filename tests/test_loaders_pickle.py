"Pickling an AnnDataset pins the rank only inside a distributed job (DDP with spawn must discover it per process)."
import pickle
from spatial_dl.loaders import AnnDataset

def test_rank_not_pinned_outside_a_distributed_job(spatial_paths, monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False); monkeypatch.delenv('RANK', raising=False)
    ds = pickle.loads(pickle.dumps(AnnDataset(spatial_paths, batch_size=32)))
    assert ds.rank is None and ds.world_size is None
    monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('RANK', '1')   # the child process of a DDP launch
    assert ds._rank_world() == (1, 2)
    assert len(ds) == AnnDataset(spatial_paths, batch_size=32, rank=1, world_size=2).__len__()

def test_rank_pinned_for_workers_inside_a_distributed_job(spatial_paths, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('RANK', '1')
    ds = AnnDataset(spatial_paths, batch_size=32)
    state = ds.__getstate__()
    assert (state['rank'], state['world_size']) == (1, 2)
