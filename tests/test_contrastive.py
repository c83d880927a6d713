"""Contrastive trainer: loss and gathered-negative gradients under DDP (gloo), retrieval metrics, training raises recall,
DDP through Lightning, CLI and exports."""
import json, os, socket, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings, strategies as st

from spatial_dl.shards import prepare_shards, demo_paired_embeddings, read_manifest
from spatial_dl.contrastive import (ContrastiveModule, clip_loss, retrieval_metrics, partner_ranks, train_contrastive,
                                    train_contrastive_main, export_embeddings, shard_loaders)

torch.set_num_threads(1)
warnings.filterwarnings('ignore', category=UserWarning)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def demo_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo') / 'shards'
    d = demo_paired_embeddings(2, 20, 20)
    prepare_shards(d['morph'], d['pos'], d['tx'], d['cell_ids'], root, 'demo', dtype='bfloat16', split='block',
                   val_fraction=0.2, block_size=400, groups=d['slide'], max_count=100)
    return root


# ------------------------------------------------------------------------------------------- metrics
@given(st.integers(2, 60), st.integers(2, 8), st.integers(0, 10**6))
@settings(max_examples=40, deadline=None)
def test_partner_ranks_properties(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    r = partner_ranks(q, k)
    assert r.min() >= 1 and r.max() <= n
    sim = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).T
    ref = (sim >= sim.diag()[:, None]).sum(1)
    assert torch.equal(r, ref)
    perm = torch.randperm(n, generator=g)  # relabelling the pairs does not change the metrics
    r2 = partner_ranks(q[perm], k[perm])
    assert (r2 - r[perm]).abs().max() <= 1 and (r2 == r[perm]).float().mean() > 0.9  # equal up to float ties
    e = torch.eye(n)[:, :n] * torch.rand(n, 1, generator=g).add(0.5)  # distinct directions: every partner ranks first
    assert retrieval_metrics(e, e)['m2t_recall@1'] == 1.0 and retrieval_metrics(e, e)['t2m_median_rank'] == 1.0


def test_partner_ranks_chunking_and_bad_shapes():
    q, k = torch.randn(300, 5), torch.randn(300, 5)
    assert torch.equal(partner_ranks(q, k, chunk=7), partner_ranks(q, k))
    with pytest.raises(ValueError, match='same shape'): partner_ranks(q, k[:10])


# ------------------------------------------------------------------------------------------- DDP gradient equivalence
def _ddp_worker(rank, world, port, B, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        from torch.distributed.nn.functional import all_gather  # what Lightning's all_gather(sync_grads=True) uses
        torch.manual_seed(0); model = ContrastiveModule(6, 4, embed_dim=8, hidden_dim=16, dropout=0.0)
        g = torch.Generator().manual_seed(1)
        M, T = torch.randn(world * B, 6, generator=g), torch.randn(world * B, 4, generator=g)
        sl = slice(rank * B, (rank + 1) * B)
        zm, zt = model(M[sl], T[sl])
        gm, gt = torch.cat(all_gather(zm)), torch.cat(all_gather(zt))
        loss = clip_loss(zm, zt, model.logit_scale, gm, gt, rank)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        dist.all_reduce(grads); grads /= world  # what DDP does to parameter gradients
        if rank == 0: torch.save(dict(grads=grads, loss=loss.detach()), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('world', [2, 3])
def test_gathered_negatives_match_single_process_gradient(tmp_path, world):
    B = 5
    out = tmp_path / 'g.pt'
    mp.spawn(_ddp_worker, args=(world, _free_port(), B, str(out)), nprocs=world, join=True)
    got = torch.load(out)
    torch.manual_seed(0); model = ContrastiveModule(6, 4, embed_dim=8, hidden_dim=16, dropout=0.0)
    g = torch.Generator().manual_seed(1)
    M, T = torch.randn(world * B, 6, generator=g), torch.randn(world * B, 4, generator=g)
    zm, zt = model(M, T)
    clip_loss(zm, zt, model.logit_scale).backward()  # one process, the whole global batch as candidates
    ref = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert torch.allclose(got['grads'], ref, atol=1e-6, rtol=1e-4)
    # without the gather each rank would only see B candidates: a different (wrong) gradient
    torch.manual_seed(0); m2 = ContrastiveModule(6, 4, embed_dim=8, hidden_dim=16, dropout=0.0)
    sum(clip_loss(*m2(M[r * B:(r + 1) * B], T[r * B:(r + 1) * B]), m2.logit_scale) for r in range(world)).div(world).backward()
    local = torch.cat([p.grad.flatten() for p in m2.parameters() if p.grad is not None])
    assert not torch.allclose(local, ref, atol=1e-6, rtol=1e-4)


def test_clip_loss_is_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(0)
    zm = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=-1)
    zt = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=-1)
    s = torch.tensor(7.0)
    logits = s * zm @ zt.T
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(6)) + torch.nn.functional.cross_entropy(logits.T, torch.arange(6)))
    assert torch.allclose(clip_loss(zm, zt, s), ref)
    assert torch.allclose(clip_loss(zm, zt, s), clip_loss(zt, zm, s))


# ------------------------------------------------------------------------------------------- training
def test_few_steps_raise_recall(demo_shards):
    res = train_contrastive(demo_shards, None, epochs=6, batch_size=64, embed_dim=32, hidden_dim=128, lr=3e-3,
                            accelerator='cpu', devices=1, seed=0)
    n_val = read_manifest(demo_shards)['counts']['val']
    b, a = res['before'], res['after']
    assert res['steps'] == 6 * (read_manifest(demo_shards)['counts']['train'] // 64)  # drop_last: whole batches only
    for k in ('m2t', 't2m'):
        assert a[f'val_{k}_recall@10'] > b[f'val_{k}_recall@10']
        assert a[f'val_{k}_recall@10'] > 3 * 10 / n_val  # well above chance
        assert a[f'val_{k}_median_rank'] < b[f'val_{k}_median_rank']
    assert a['val_loss'] < b['val_loss']


def test_module_bad_inputs(demo_shards):
    with pytest.raises(ValueError, match='temperature must be > 0'): ContrastiveModule(4, 4, temperature=0)
    with pytest.raises(ValueError, match='embed_dim must be a positive integer'): ContrastiveModule(4, 4, embed_dim=0)
    m = ContrastiveModule(4, 3)
    with pytest.raises(ValueError, match='morphology batch must be B x 4'): m.embed_morph(torch.randn(2, 5))
    with pytest.raises(ValueError, match='fewer than batch_size'): train_contrastive(demo_shards, batch_size=100_000)
    with pytest.raises(ValueError, match='epochs must be a positive integer'): train_contrastive(demo_shards, epochs=0)
    with pytest.raises(FileNotFoundError, match='no manifest.json'): train_contrastive(demo_shards.parent / 'nope')


def test_temperature_is_learned_and_capped():
    m = ContrastiveModule(4, 4, temperature=0.001)
    assert m.logit_scale.item() == pytest.approx(100.0)  # CLIP's cap
    assert ContrastiveModule(4, 4, learn_temperature=False).log_scale.requires_grad is False


def test_cli_end_to_end(demo_shards, tmp_path, capsys):
    out = tmp_path / 'run'
    argv = ['--shards', str(demo_shards), '--out', str(out), '--epochs', '2', '--batch-size', '64', '--embed-dim', '16',
            '--hidden-dim', '32', '--accelerator', 'cpu', '--devices', '1']
    assert train_contrastive_main(argv) == 0
    text = capsys.readouterr().out
    assert 'val_m2t_recall@10' in text and str(out / 'model.ckpt') in text
    met = json.loads((out / 'metrics.json').read_text())
    n_val = read_manifest(demo_shards)['counts']['val']
    assert met['n_embedded'] == n_val and met['steps'] > 0
    emb = np.load(out / 'embeddings.npz', allow_pickle=False)
    assert emb['morph'].shape == (n_val, 16) and emb['tx'].shape == (n_val, 16) and len(set(emb['key'])) == n_val
    model = ContrastiveModule.load_from_checkpoint(out / 'model.ckpt', weights_only=False)
    again = export_embeddings(model, demo_shards, 'val')
    assert np.allclose(again['morph'], emb['morph'], atol=1e-6) and (again['key'] == emb['key']).all()
    assert not list(out.glob('.*tmp*'))
    with pytest.raises(FileExistsError, match='exists'): train_contrastive_main(argv)
    assert train_contrastive_main(argv + ['--overwrite', '--epochs', '1']) == 0


def test_loaders_workers_cover_train_once(demo_shards):
    tl, vl = shard_loaders(demo_shards, batch_size=16, num_workers=2)
    keys = [k for _, _, _, meta in tl for k in meta['key']]
    n = read_manifest(demo_shards)['counts']['train']
    assert len(keys) == len(set(keys)) and n - len(keys) < 2 * 16  # drop_last loses under a batch per worker
    vkeys = [k for _, _, _, meta in vl for k in meta['key']]
    assert sorted(vkeys) == sorted(set(vkeys)) and len(vkeys) == read_manifest(demo_shards)['counts']['val']


# ------------------------------------------------------------------------------------------- Lightning DDP
@pytest.mark.slow
def test_lightning_ddp_two_ranks_gathers_negatives(tmp_path):
    # one validation shard for two ranks: rank 1 validates nothing and must still take part in the metric reduction
    d = demo_paired_embeddings(2, 20, 20)
    root = tmp_path / 'shards'
    m = prepare_shards(d['morph'], d['pos'], d['tx'], d['cell_ids'], root, 'demo', split='block', val_fraction=0.2,
                       block_size=400, groups=d['slide'], max_count=200)
    assert len(m['shards']['val']) == 1 and len(m['shards']['train']) >= 2
    from spatial_dl.distributed import ddp_strategy  # the trainers' DDP helper (gloo on CPU, spawn launcher)
    res = train_contrastive(root, tmp_path / 'ddp', epochs=2, batch_size=32, embed_dim=16, hidden_dim=32,
                            accelerator='cpu', devices=2, strategy=ddp_strategy('cpu', 'spawn'), seed=0)
    tr = res['trainer']
    assert tr.world_size == 2
    assert tr.callback_metrics['candidates'].item() == 2 * 32  # each query saw both ranks' batches
    met = json.loads((tmp_path / 'ddp' / 'metrics.json').read_text())
    assert met['world_size'] == 2 and met['n_embedded'] == m['counts']['val']
    assert 0 <= met['after']['val_m2t_recall@10'] <= 1 and met['after']['val_loss'] > 0


class _FirstKeys(__import__('lightning').Callback):
    def __init__(self): self.keys = []
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0: self.keys.append(list(batch[3]['key'][:4]))


@pytest.mark.parametrize('num_workers', [0, 2])
def test_lightning_epochs_reshuffle(demo_shards, num_workers):
    cb = _FirstKeys()
    train_contrastive(demo_shards, None, epochs=3, batch_size=64, embed_dim=8, hidden_dim=16, num_workers=num_workers,
                      accelerator='cpu', devices=1, trainer_kwargs=dict(callbacks=[cb], limit_val_batches=0))
    assert len(cb.keys) == 3 and len({tuple(k) for k in cb.keys}) == 3  # set_epoch reached the pipeline every epoch


# ------------------------------------------------------------------------------------------- Ray Train
@pytest.mark.slow
def test_ray_train_two_workers(demo_shards, tmp_path):
    import ray, tempfile, shutil
    from spatial_dl.contrastive import train_contrastive_ray
    rt = tempfile.mkdtemp(prefix='sdlr', dir='/tmp')  # Ray's socket paths must stay under 108 bytes
    try:
        result = train_contrastive_ray(demo_shards, num_workers=2, epochs=2, batch_size=32, embed_dim=16, hidden_dim=32,
                                       storage_path=str(tmp_path / 'ray'), name='t',
                                       init_kwargs=dict(num_cpus=2, include_dashboard=False, _temp_dir=rt))
        assert result.error is None
        assert result.metrics['candidates'] == 2 * 32  # negatives gathered across the two Ray workers
        assert 0 <= result.metrics['val_m2t_recall@10'] <= 1 and result.metrics['epoch'] == 1
        assert result.checkpoint is not None and list(Path(result.checkpoint.path).glob('*.ckpt'))
        with pytest.raises(ValueError, match='training shards for 64 workers'):
            train_contrastive_ray(demo_shards, num_workers=64)
    finally:
        ray.shutdown(); shutil.rmtree(rt, ignore_errors=True)
