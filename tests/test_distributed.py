"Multi-process training: Lightning DDP over 2 CPU processes (gloo) and RayTrainRunner with 2 CPU workers."
import os, warnings
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')


@pytest.fixture(scope='module')
def slides(tmp_path_factory):
    from spatial_dl.datasets import write_spatial_dataset
    d = tmp_path_factory.mktemp('slides')
    # 2 slides x 99 spots: 198 rows, not a multiple of batch size x ranks (uneven on purpose)
    return write_spatial_dataset(d, n_samples=2, n_rows=9, n_cols=11, n_genes=40, n_regions=3, seed=1)


@pytest.mark.slow
def test_ddp_two_cpu_processes_disjoint_rows_equal_steps(slides, tmp_path):
    from spatial_dl.distributed import ddp_trainer, SeenRows, read_seen_rows
    from spatial_dl.loaders import AnnDataModule
    from spatial_dl.models import ExpressionClassifier
    from spatial_dl.train import get_training_arguments
    # the DataModule builds its datasets inside each DDP process (after the process group exists), so each finds its rank
    dm = AnnDataModule(slides, batch_size=16, split=(1.0, 0.0, 0.0), obs_keys=['region'], drop_last=True)
    cfg = get_training_arguments(max_epochs=1, batch_size=16, progress=False, scheduler='constant')
    trainer = ddp_trainer(cfg, 2, launcher='spawn', callbacks=[SeenRows(tmp_path/'seen')])
    trainer.fit(ExpressionClassifier(40, 3, hidden=8), datamodule=dm)
    r = read_seen_rows(tmp_path/'seen')
    assert [x['rank'] for x in r] == [0, 1] and all(x['world_size'] == 2 for x in r)
    assert r[0]['steps'] == r[1]['steps'] == 198 // 32        # equal steps, remainder dropped on both ranks
    assert not set(r[0]['rows']) & set(r[1]['rows'])          # disjoint data
    assert len(r[0]['rows']) == len(set(r[0]['rows'])) == 16 * r[0]['steps']


@pytest.fixture(scope='module')
def ray_session(tmp_path_factory):
    """ONE local Ray start for this module (ray.init costs ~35 s here), shut down after it: later tests fork worker
    processes, and forking a process that runs Ray's gRPC threads can kill the child."""
    ray = pytest.importorskip('ray')
    d = tmp_path_factory.mktemp('ray')
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(d), ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_train_runner_two_cpu_workers_and_resume(ray_session, slides, tmp_path):
    from spatial_dl.distributed import RayTrainRunner
    from spatial_dl.models import ExpressionClassifier
    runner = RayTrainRunner(ExpressionClassifier, model_keys=['n_genes', 'n_classes'],
                            model_kwargs=dict(hidden=8, label_key='region'))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        res = runner.train(slides, batch_size=16, val_size=0.2, max_epochs=1, num_workers=2, thread_per_worker=1,
                           is_gpu=True, obs_keys=['region'], result_storage_path=str(tmp_path/'results'), name='a')
    assert any('no GPU' in str(x.message) for x in w)        # is_gpu on a CPU cluster falls back with a warning
    assert res.error is None
    assert {'train_loss', 'val_acc', 'val_f1'} <= set(res.metrics), res.metrics
    assert res.metrics['epoch'] == 0
    ckpt = RayTrainRunner.checkpoint_file(res)
    assert ckpt and Path(ckpt).exists() and str(tmp_path/'results') in ckpt
    res2 = runner.train(slides, batch_size=16, val_size=0.2, max_epochs=2, num_workers=2, thread_per_worker=1,
                        is_gpu=False, obs_keys=['region'], result_storage_path=str(tmp_path/'results'), name='b',
                        ckpt_path=ckpt)
    assert res2.error is None and res2.metrics['epoch'] == 1   # resumed: only the second epoch ran
    with pytest.raises(FileNotFoundError, match='ckpt_path'):
        runner.train(slides, ckpt_path=str(tmp_path/'missing.ckpt'), is_gpu=False)
    with pytest.raises(KeyError, match='model_keys'):
        RayTrainRunner(ExpressionClassifier, model_keys=['n_cells']).train(slides, is_gpu=False, num_workers=1)


@pytest.mark.slow
def test_hpo_ray_tune_backend(ray_session, tmp_path, capsys):
    "run_hpo(backend='ray') on the session's local Ray: 2 trials, best printed and saved."
    import json
    from spatial_dl.train import run_hpo
    space = {'x': {'type': 'uniform', 'low': -1.0, 'high': 1.0}, 'k': {'type': 'categorical', 'values': [0, 5]}}
    best = run_hpo(lambda p: p['x'] ** 2 + p['k'], space, n_trials=2, backend='ray', output_dir=tmp_path / 'hpo',
                   resources_per_trial={'CPU': 1})
    assert len(best['trials']) == 2
    assert best['best_value'] == min(t['value'] for t in best['trials'])
    assert json.loads((tmp_path / 'hpo' / 'best_trial.json').read_text())['best_params'] == best['best_params']
    assert 'best trial' in capsys.readouterr().out
