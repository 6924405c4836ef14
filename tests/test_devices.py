"""Device selection and every CUDA-only branch, on a CPU-only machine: ``torch.cuda``'s
availability, count, set_device and RNG functions (and NCCL's init) are replaced by
fakes that keep the real contracts -- an index-less ``torch.device('cuda')`` makes
``set_device`` raise, as torch does -- so a GPU-only bug fails here too."""
import argparse
import os

import pytest
import torch

import train_liif
from engine.checkpoint import restore_rng, rng_state
from utils import distributed
from utils.device import accurate_float, check_amp, select_device, set_tf32
from utils.distributed import DistEnv
from utils.errors import UserError


class FakeCuda:
    """``torch.cuda`` for ``count`` GPUs of compute capability ``capability``."""

    def __init__(self, count=2, capability=(9, 0)):
        self.count, self.capability, self.current = count, capability, 0
        self.set_calls = []
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}

    def index(self, device, optional):
        """torch.cuda._utils._get_device_index's contract."""
        if isinstance(device, int):
            return device
        if isinstance(device, str):
            device = torch.device(device)
        if device.type != 'cuda':
            raise ValueError(f'Expected a cuda device, but got: {device}')
        if device.index is None:
            if not optional:
                raise ValueError('Expected a torch.device with a specified index or an '
                                 f'integer, but got:{device}')
            return self.current
        return device.index

    def set_device(self, device):
        index = self.index(device, optional=False)
        if not 0 <= index < self.count:
            raise RuntimeError('CUDA error: invalid device ordinal')
        self.set_calls.append(index)
        self.current = index

    def get_rng_state(self, device='cuda'):
        return self.states[self.index(device, optional=True)].clone()

    def set_rng_state(self, state, device='cuda'):
        self.states[self.index(device, optional=True)] = state.clone()

    def install(self, monkeypatch):
        for name, value in {'is_available': lambda: True, 'device_count': lambda: self.count,
                            'current_device': lambda: self.current, 'set_device': self.set_device,
                            'get_rng_state': self.get_rng_state,
                            'set_rng_state': self.set_rng_state,
                            'is_initialized': lambda: False,
                            'get_device_capability': lambda device=None: self.capability}.items():
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
        return self


@pytest.fixture
def cuda(monkeypatch):
    return FakeCuda().install(monkeypatch)


def test_the_fake_keeps_torchs_contract(cuda):
    with pytest.raises(ValueError, match='specified index'):
        torch.cuda.set_device(torch.device('cuda'))
    torch.cuda.set_device(torch.device('cuda', 1))
    assert torch.cuda.current_device() == 1


@pytest.mark.parametrize('device,gpu,expected', [
    (None, None, 'cuda:0'),            # the default on a GPU machine
    ('cuda', None, 'cuda:0'),          # the current device, with its index
    ('cuda:1', None, 'cuda:1'),
    (None, '1', 'cuda:0'),             # --gpu 1: GPU 1 becomes the only visible one
    (None, '0,1', 'cuda:0'),
    ('cpu', None, 'cpu'),
])
def test_select_device_always_gives_cuda_an_index(cuda, device, gpu, expected):
    chosen = select_device(device, gpu)
    assert chosen == torch.device(expected)
    if gpu is not None:
        assert os.environ['CUDA_VISIBLE_DEVICES'] == gpu
    if chosen.type == 'cuda':
        torch.cuda.set_device(chosen)              # what crashed before: no index


def test_select_device_refuses_what_is_not_there(cuda):
    with pytest.raises(UserError, match=r'--device cuda:2: only 2 CUDA device\(s\) visible'):
        select_device('cuda:2')
    with pytest.raises(UserError, match='--device must be cpu, cuda, cuda:N or mps'):
        select_device('tpu')


def training_args(**flags):
    return argparse.Namespace(device=flags.get('device'), gpu=flags.get('gpu'), config='c.yaml')


@pytest.mark.parametrize('flags,env,expected', [
    ({}, DistEnv(), 1 * [0]),                                   # python train_liif.py --config
    ({'gpu': '0'}, DistEnv(), [0]),
    ({'device': 'cuda'}, DistEnv(), [0]),
    ({'device': 'cuda:1'}, DistEnv(), [1]),
    ({}, DistEnv(rank=1, world_size=2, local_rank=1), [1]),     # torchrun: cuda:LOCAL_RANK
    ({'gpu': '0,1'}, DistEnv(rank=1, world_size=2, local_rank=1), [1]),
])
def test_training_device_of_every_entry_point(cuda, flags, env, expected):
    device = train_liif.training_device(training_args(**flags), env)
    assert device == torch.device('cuda', expected[0])
    assert cuda.set_calls == expected and torch.cuda.current_device() == expected[0]


def test_several_gpus_without_torchrun_say_how(cuda):
    with pytest.raises(UserError, match=r'--gpu 0,1 names 2 GPUs.*torchrun --nproc_per_node=2 '
                                        r'train_liif\.py --config c\.yaml --gpu 0,1'):
        train_liif.training_device(training_args(gpu='0,1'), DistEnv())
    with pytest.raises(UserError, match=r'LOCAL_RANK=2 but only 2 CUDA device\(s\)'):
        train_liif.training_device(training_args(), DistEnv(rank=2, world_size=3, local_rank=2))


def test_nccl_init_binds_the_indexed_device(cuda, monkeypatch):
    calls = []

    def init_process_group(backend, rank, world_size, device_id=None):
        if device_id is not None and (not isinstance(device_id, torch.device)
                                      or device_id.index is None):
            raise ValueError(f'device_id must be an indexed torch.device, got {device_id!r}')
        calls.append((backend, rank, world_size, device_id))
    monkeypatch.setattr(distributed.dist, 'init_process_group', init_process_group)
    env = DistEnv(rank=1, world_size=2, local_rank=1)
    device = distributed.process_device(select_device(), env)
    distributed.init(env, device)
    assert calls == [('nccl', 1, 2, torch.device('cuda', 1))]


def test_cuda_rng_state_round_trip_on_the_process_device(cuda):
    device = torch.device('cuda', 1)
    cuda.states[1] = torch.arange(16, dtype=torch.uint8)
    state = rng_state(device)
    assert torch.equal(state['cuda'], torch.arange(16, dtype=torch.uint8))
    cuda.states[1] = torch.zeros(16, dtype=torch.uint8)        # training moves it on
    restore_rng(state, device)
    assert torch.equal(cuda.states[1], torch.arange(16, dtype=torch.uint8))
    assert torch.equal(cuda.states[0], torch.zeros(16, dtype=torch.uint8))  # the other GPU


def test_bf16_is_refused_where_it_is_emulated(monkeypatch):
    FakeCuda(capability=(7, 5)).install(monkeypatch)            # a Turing GPU
    with pytest.raises(UserError, match='--amp bf16: cuda:0 has no fast bfloat16'):
        check_amp('bf16', torch.device('cuda', 0))
    with pytest.warns(UserWarning, match='slower than float32'):
        assert check_amp('bf16', torch.device('cuda', 0), refuse_slow=False) == torch.bfloat16
    FakeCuda(capability=(8, 0)).install(monkeypatch)            # Ampere
    assert check_amp('bf16', torch.device('cuda', 0)) == torch.bfloat16
    assert check_amp('none', torch.device('cuda', 0)) is None
    with pytest.raises(UserError, match='runs on cuda or cpu, not mps'):
        check_amp('bf16', torch.device('mps'))


def test_amp_auto_takes_bf16_only_where_it_is_native(monkeypatch):
    FakeCuda(capability=(7, 5)).install(monkeypatch)
    assert check_amp('auto', torch.device('cuda', 0)) is None      # no warning, float32
    FakeCuda(capability=(8, 0)).install(monkeypatch)
    assert check_amp('auto', torch.device('cuda', 0)) == torch.bfloat16
    assert check_amp('auto', torch.device('mps')) is None
    import utils.device
    for native in (True, False):
        monkeypatch.setattr(utils.device, 'bf16_supported', lambda device, n=native: n)
        assert check_amp('auto', torch.device('cpu')) == (torch.bfloat16 if native else None)
    with pytest.raises(UserError, match='must be bf16, auto or none'):
        check_amp('fp16', torch.device('cpu'))


def test_no_float64_on_mps():
    assert accurate_float(torch.device('mps')) == torch.float32
    assert accurate_float(torch.device('cuda', 0)) == torch.float64
    assert accurate_float(None) == torch.float64


@pytest.fixture
def tf32_flags():
    """Restore the global TF32 flags after the test (they are module properties)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_the_fast_projection_drops_tf32_only_where_matmuls_have_none(tf32_flags):
    """On a CUDA feature map the projection convolution gets cuDNN TF32 exactly when
    matrix products may use TF32 (the plain path's Linear), and no change elsewhere."""
    from models.liif_fast import convolutions_as_precise_as_matmul

    class CudaFeat:
        device = torch.device('cuda', 0)
    torch.backends.cudnn.allow_tf32 = True                       # PyTorch's defaults
    torch.backends.cuda.matmul.allow_tf32 = False
    with convolutions_as_precise_as_matmul(CudaFeat()):
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is True               # restored after
    with convolutions_as_precise_as_matmul(torch.zeros(1)):      # CPU: untouched
        assert torch.backends.cudnn.allow_tf32 is True
    set_tf32(True)                                               # --allow-tf32
    with convolutions_as_precise_as_matmul(CudaFeat()):
        assert torch.backends.cudnn.allow_tf32 is True
