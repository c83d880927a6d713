"spatial_dl.train: CPU pretraining, exact resume, export, embeddings, HPO, bad input, CLI."
import json, os, warnings
from pathlib import Path
import numpy as np
import pytest
import torch

os.environ.setdefault('MPLBACKEND', 'Agg')
from spatial_dl.collate import MLMCollator
from spatial_dl.models import MLMPretrainer, build_bert_config
from spatial_dl.tokenizers import TokenDictionary
from spatial_dl.train import (TokenBatches, fit_pretraining, get_training_arguments, setup_environment, save_pretrained,
                              load_pretrained, extract_embeddings, run_hpo, check_search_space, PretrainML, make_trainer,
                              pretrain_main, embed_main, train_classifier_main, hpo_main)

TD = TokenDictionary.build([f"g{i}" for i in range(30)])
# runs of consecutive gene ids: a pattern a tiny BERT learns in a few dozen steps
EX = [{'input_ids': [2 + (5 * i + k) % 30 for k in range(6 + i % 9)]} for i in range(96)]


def model(seed=0, vocab=len(TD), max_input=16, lr=1e-2):
    setup_environment(seed)
    return MLMPretrainer(build_bert_config(vocab, num_layers=1, num_heads=2, embed_dim=32, max_input=max_input), lr=lr)


def batches(seed=0, bs=8):
    return TokenBatches(EX, MLMCollator(TD, mlm_probability=0.25), batch_size=bs, seed=seed)


def cfg(tmp_path, **kw):
    base = dict(batch_size=8, max_epochs=3, seed=0, progress=False, log_every=1, output_dir=str(tmp_path), run_name='r')
    return get_training_arguments(**{**base, **kw})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp('pre')
    return fit_pretraining(model(), batches(), cfg(d, ckpt_every=5))


def test_few_step_cpu_pretraining_lowers_loss(trained):
    l = trained.losses()
    assert len(l) == 36
    assert np.mean(l[-6:]) < np.mean(l[:6]) - 0.3, l
    assert trained.throughput['tokens_per_s'] > 0 and 0 <= trained.throughput['data_wait_frac'] < 1


def test_same_seed_same_losses(trained):
    again = fit_pretraining(model(), batches(), cfg(Path('.'), ckpt_every=None), dirs={})
    assert again.losses() == trained.losses()


def test_resume_same_step_same_next_batch(trained):
    seen = []
    from lightning.pytorch.callbacks import Callback
    class Spy(Callback):
        def on_train_batch_start(self, tr, m, b, i): seen.append((tr.global_step, tr.current_epoch, int(b['batch_number']), b['labels'].clone()))
    ck = trained.dirs['checkpoints']/'epoch=0-step=5.ckpt'
    res = fit_pretraining(model(seed=9), batches(), cfg(Path('.')), ckpt_path=ck, dirs={}, callbacks=[Spy()])
    step, epoch, bno, labels = seen[0]
    assert (step, epoch, bno) == (5, 0, 5)                        # same step, the batch after the checkpoint
    ref = list(batches())[5]
    assert torch.equal(labels, ref['labels'])                       # same examples, same masks
    np.testing.assert_allclose(res.losses(), trained.losses()[5:], rtol=1e-5)   # and the same losses from there on
    # resuming in a later epoch picks the right epoch's order
    ck2 = trained.dirs['checkpoints']/'epoch=1-step=15.ckpt'
    seen.clear(); fit_pretraining(model(seed=9), batches(), cfg(Path('.')), ckpt_path=ck2, dirs={}, callbacks=[Spy()])
    assert seen[0][:3] == (15, 1, 3)


def test_missing_and_incompatible_checkpoint(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        fit_pretraining(model(), batches(), cfg(tmp_path), ckpt_path=tmp_path/'nope.ckpt', dirs={})
    ck = trained.dirs['checkpoints']/'last.ckpt'
    with pytest.raises(ValueError, match='incompatible checkpoint.*shape mismatch'):
        fit_pretraining(model(vocab=40), batches(), cfg(tmp_path), ckpt_path=ck, dirs={})
    (tmp_path/'junk.ckpt').write_text('not a checkpoint')
    with pytest.raises(ValueError, match='not a readable torch checkpoint'):
        fit_pretraining(model(), batches(), cfg(tmp_path), ckpt_path=tmp_path/'junk.ckpt', dirs={})
    with pytest.raises(ValueError, match='incompatible checkpoint'):                 # other data / seed than the checkpoint
        fit_pretraining(model(), batches(seed=1), cfg(tmp_path), ckpt_path=trained.dirs['checkpoints']/'epoch=0-step=5.ckpt', dirs={})


def test_save_pretrained_reloads_in_plain_transformers(trained, tmp_path):
    from transformers import BertForMaskedLM
    out = save_pretrained(trained.module, tmp_path/'model', TD)
    plain = BertForMaskedLM.from_pretrained(str(out)).eval()
    b = next(iter(batches(seed=3)))
    trained.module.eval()
    with torch.no_grad():
        a = plain(input_ids=b['input_ids'], attention_mask=b['attention_mask']).logits
        e = trained.module(b['input_ids'], b['attention_mask']).logits
    assert torch.equal(a, e)
    m, td, _ = load_pretrained(out)
    assert td == TD and TokenDictionary.load(out/'token_dictionary.json') == TD
    emb = extract_embeddings(out, EX[:10], pooling='mean', progress=False)
    assert emb.shape == (10, 32) and np.isfinite(emb).all()
    with pytest.raises(ValueError, match='vocab_size mismatch'):
        save_pretrained(trained.module, tmp_path/'bad', TokenDictionary.build(['a']))


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match='max_input too small'):        # data longer than the model's input
        fit_pretraining(model(max_input=8), batches(), cfg(tmp_path), dirs={})
    assert get_training_arguments(optimizer='AdamW').optimizer == 'adamw'          # case-insensitive
    with pytest.raises(ValueError, match="did you mean 'adamw'"): get_training_arguments(optimizer='admw')
    with pytest.raises(ValueError, match="did you mean 'cosine'"): get_training_arguments(scheduler='cosin')
    with pytest.raises(ValueError, match="did you mean 'loguniform'"):
        check_search_space({'lr': {'type': 'logunifrom', 'low': 1e-4, 'high': 1e-2}})
    with pytest.raises(ValueError, match='vocab_size mismatch'):
        PretrainML(EX, TD, model_args=dict(vocab_size=99, max_input=16)).build_config()
    with pytest.warns(UserWarning, match='falling back to fp32'):
        t = make_trainer(get_training_arguments(precision='fp16', accelerator='cpu', progress=False))
    assert t.precision == '32-true'


def test_hpo_two_tiny_trials_reports_best(tmp_path, capsys):
    pml = PretrainML(EX, TD, tmp_path, model_args=dict(num_layers=1, num_heads=2, embed_dim=16, max_input=16),
                     training_args=dict(batch_size=16, max_epochs=1, progress=False), val_fraction=0.25)
    best = pml.run_hyperparameter_train({'lr': {'type': 'loguniform', 'low': 1e-4, 'high': 1e-2},
                                         'num_layers': {'type': 'int', 'low': 1, 'high': 2}}, n_trials=2)
    assert len(best['trials']) == 2
    assert best['best_value'] == min(t['value'] for t in best['trials'])
    saved = json.loads(Path(best['path']).read_text())
    assert saved['best_params'] == best['best_params'] and 'best trial' in capsys.readouterr().out


@pytest.fixture(scope='module')
def slides(tmp_path_factory):
    from spatial_dl.datasets import write_spatial_dataset
    return write_spatial_dataset(tmp_path_factory.mktemp('h5'), n_samples=2, n_rows=8, n_cols=8, n_genes=60, n_regions=3)


def test_cli_pretrain_embed_classify_hpo(slides, tmp_path, capsys):
    import anndata as ad
    files = list(map(str, slides))
    assert pretrain_main(['--h5ad', *files, '--max-input', '16', '--num-layers', '1', '--num-heads', '2', '--embed-dim', '16',
                          '--batch-size', '16', '--max-epochs', '1', '--precision', 'fp16', '--output-dir', str(tmp_path),
                          '--run-name', 'pre', '--no-progress']) == 0
    out = capsys.readouterr().out
    assert 'pretraining done' in out and str(tmp_path/'pre'/'model') in out
    (tmp_path/'embed.yaml').write_text(f"model: {tmp_path/'pre'/'model'}\nout: {tmp_path/'emb.h5ad'}\npooling: mean\n")
    assert embed_main(['--config', str(tmp_path/'embed.yaml'), '--h5ad', *files, '--no-progress']) == 0
    a = ad.read_h5ad(tmp_path/'emb.h5ad')
    assert a.obsm['X_emb'].shape == (128, 16) and 'region' in a.obs
    assert train_classifier_main(['--h5ad', *files, '--hidden', '16', '--max-epochs', '1', '--batch-size', '32',
                                  '--output-dir', str(tmp_path), '--run-name', 'clf', '--no-progress']) == 0
    m = json.loads((tmp_path/'clf'/'metrics.json').read_text())
    assert {'val_acc', 'val_f1', 'test_acc', 'test_f1'} <= set(m)
    assert hpo_main(['--h5ad', *files, '--search-space', '{"lr": {"type": "loguniform", "low": 0.001, "high": 0.1}}',
                     '--n-trials', '2', '--max-epochs', '1', '--batch-size', '32', '--output-dir', str(tmp_path)]) == 0
    assert json.loads((tmp_path/'hpo'/'best_trial.json').read_text())['best_params'].keys() == {'lr'}
    with pytest.raises(SystemExit): pretrain_main(['--output-dir', str(tmp_path)])      # no data given
    with pytest.raises(ValueError, match="did you mean 'categorical'"):
        hpo_main(['--h5ad', *files, '--search-space', '{"hidden": {"type": "categorial", "values": [8]}}'])
