"spatial_dl.models: config builder, schedules, metrics, bad input."
import math, warnings
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn.metrics import f1_score

from spatial_dl.models import (build_bert_config, check_vocab, check_max_input, make_optimizer, make_scheduler, lr_factor,
                               resolve_precision, confusion_matrix, macro_f1, MLMPretrainer, ExpressionClassifier)


def test_config_stformer_parameters():
    c = build_bert_config(vocab_size=1000, mode='neighborhood', num_layers=3, num_heads=4, embed_dim=64, max_input=128,
                          pad_token_id=0, activation='gelu', initializer_range=0.01, layer_norm_eps=1e-6,
                          attention_dropout=0.1, hidden_dropout=0.2)
    assert (c.vocab_size, c.num_hidden_layers, c.num_attention_heads, c.hidden_size) == (1000, 3, 4, 64)
    assert c.max_position_embeddings == 256          # neighbourhood doubles the input
    assert (c.hidden_act, c.initializer_range, c.layer_norm_eps) == ('gelu', 0.01, 1e-6)
    assert (c.attention_probs_dropout_prob, c.hidden_dropout_prob, c.pad_token_id) == (0.1, 0.2, 0)


@pytest.mark.parametrize('kw,msg', [(dict(mode='spots'), "did you mean 'spot'"), (dict(activation='rleu'), "did you mean 'relu'"),
                                    (dict(embed_dim=30), 'divisible'), (dict(pad_token_id=5000), 'pad_token_id'),
                                    (dict(hidden_dropout=1.5), 'hidden_dropout'), (dict(model_type='roberta'), 'model_type')])
def test_config_bad_input(kw, msg):
    with pytest.raises(ValueError, match=msg): build_bert_config(1000, **kw)


def test_vocab_and_max_input_checks():
    c = build_bert_config(10, max_input=8)
    with pytest.raises(ValueError, match='vocab_size mismatch.*9 tokens'): check_vocab(c, list(range(9)))
    with pytest.raises(ValueError, match='max_input too small.*9 tokens'): check_max_input(c, 9)
    m = MLMPretrainer(build_bert_config(10, num_layers=1, num_heads=1, embed_dim=8, max_input=8))
    with pytest.raises(ValueError, match='vocab_size=10'): m._check_batch(dict(input_ids=torch.full((1, 4), 12)))


def test_optimizer_scheduler_names():
    m = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="did you mean 'adamw'"): make_optimizer(m, 'admw')
    opt = make_optimizer(m, 'sgd', lr=0.1)
    with pytest.raises(ValueError, match="did you mean 'linear'"): make_scheduler(opt, 'lineer')
    with pytest.raises(ValueError, match="did you mean"): MLMPretrainer(build_bert_config(10), scheduler='cosin')
    with pytest.raises(ValueError, match="did you mean"): ExpressionClassifier(5, 2, optimizer='adamm')


@given(st.integers(0, 30), st.integers(1, 40), st.sampled_from(['linear', 'cosine', 'constant']))
def test_schedule_shape(warmup, extra, name):
    total = warmup + extra
    f = [lr_factor(s, warmup, total, name) for s in range(total + 1)]
    assert all(0 <= x <= 1 + 1e-12 for x in f)
    if warmup: assert f[warmup - 1] == pytest.approx(1.0)
    after = f[warmup:]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))        # non-increasing after warm-up
    if name != 'constant': assert f[total] == pytest.approx(0.0, abs=1e-12)


def test_fp16_without_gpu_falls_back():
    with pytest.warns(UserWarning, match='falling back to fp32'):
        assert resolve_precision('fp16', has_gpu=False) == '32-true'
    assert resolve_precision('fp16', has_gpu=True) == '16-mixed'


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_macro_f1_matches_sklearn(pairs):
    y, p = map(np.array, zip(*pairs))
    cm = confusion_matrix(torch.tensor(y), torch.tensor(p), 4)
    assert int(cm.sum()) == len(y)
    labels = sorted(set(y) | set(p))
    assert macro_f1(cm) == pytest.approx(f1_score(y, p, labels=labels, average='macro', zero_division=0))


def test_classifier_log1p_and_shapes():
    m = ExpressionClassifier(n_genes=6, n_classes=3, hidden=(4,), label_key='cell_type')
    x = torch.tensor([[0, 1, 3, 0, 0, 6.]])
    t = m.transform(x)
    assert torch.allclose(t, torch.log1p(x / 10 * 1e4))
    assert m(x).shape == (1, 3)
    with pytest.raises(KeyError, match="'cell_type'"): m._xy(dict(X=x))
    probe = ExpressionClassifier(n_genes=4, n_classes=2, hidden=(), input_key='X_emb', log1p=False)
    assert len(probe.net) == 1 and torch.equal(probe.transform(torch.ones(1, 4)), torch.ones(1, 4))
