"""engine/ema.py: the moving average against its formula, frozen parameters and buffers
copied, the same average through a DDP-style wrapper, restoring, config checks. (The
training run with EMA -- validation on the average, ``model`` = the average, exact
resume -- is tested in tests/test_train.py.)"""
import pytest
import torch
from torch import nn

from engine.ema import ModelEMA, check_ema_config, make_ema
from utils.errors import UserError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.trained = nn.Linear(3, 2)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.register_buffer('count', torch.zeros((), dtype=torch.long))


class Wrapper(nn.Module):
    """What DistributedDataParallel looks like to the EMA: the model under ``module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def step(net, k):
    """Stand-in for an optimizer step: new weights, frozen and buffer values."""
    with torch.no_grad():
        net.trained.weight.add_(0.5 * k)
        net.trained.bias.mul_(-1.0)
        net.frozen.fill_(float(k))
        net.count += 1


def test_update_follows_the_formula_and_copies_the_rest():
    net = Net()
    ema = ModelEMA(net, 0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for k in range(1, 4):
        step(net, k)
        ema.update(net)
        for name in ('trained.weight', 'trained.bias'):
            expected[name] = 0.9 * expected[name] + 0.1 * net.state_dict()[name]
    avg = ema.module.state_dict()
    for name in ('trained.weight', 'trained.bias'):
        assert torch.allclose(avg[name], expected[name], atol=1e-6)
        assert not torch.equal(avg[name], net.state_dict()[name])
    assert torch.equal(avg['frozen'], net.frozen) and int(avg['count']) == 3
    assert ema.updates == 3 and ema.state() == {'decay': 0.9, 'updates': 3}
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_update_through_a_wrapper_equals_the_bare_module():
    torch.manual_seed(0)
    bare = Net()
    wrapped = Wrapper(Net())
    wrapped.module.load_state_dict(bare.state_dict())
    a, b = ModelEMA(bare, 0.99), ModelEMA(wrapped, 0.99)
    for k in range(3):
        step(bare, k)
        step(wrapped.module, k)
        a.update(bare)
        b.update(wrapped)
    assert a.module.state_dict().keys() == b.module.state_dict().keys()  # no 'module.'
    assert all(torch.equal(x, y) for x, y in zip(a.module.state_dict().values(),
                                                 b.module.state_dict().values()))


def test_make_ema_restores_or_starts_from_the_model():
    net = Net()
    assert make_ema(None, net) is None
    fresh = make_ema({'decay': 0.5}, net)
    assert all(torch.equal(x, y) for x, y in zip(fresh.module.state_dict().values(),
                                                 net.state_dict().values()))
    saved = {k: v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    ckpt = {'model': {'sd': saved}, 'resume': {'ema': {'decay': 0.5, 'updates': 7}}}
    restored = make_ema({'decay': 0.5}, net, ckpt)
    assert restored.updates == 7
    assert torch.equal(restored.module.trained.weight, saved['trained.weight'])
    published = {'model': {'sd': saved}}  # no EMA state: start from the resumed weights
    assert torch.equal(make_ema({'decay': 0.5}, net, published).module.trained.weight,
                       net.trained.weight)


@pytest.mark.parametrize('value, message', [
    (0.999, r'ema must be a mapping \{decay: d\}'),
    ({'decay': 1.0}, r'ema\.decay must be a number in \(0, 1\), got 1\.0'),
    ({'decay': True}, r'ema\.decay must be a number in \(0, 1\)'),
    ({'decay': 0.9, 'warmup': 10}, r'ema: unknown key\(s\) warmup; valid: decay'),
])
def test_check_ema_config(value, message):
    with pytest.raises(UserError, match=message):
        check_ema_config(value, 'ema')
    check_ema_config({'decay': 0.999}, 'ema')
    check_ema_config(None, 'ema')
