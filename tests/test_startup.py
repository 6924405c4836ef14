"""Start-up cost: no entry point imports ``torch._dynamo`` / inductor unless the run asks
to compile, and the compile-friendly query still traces without a graph break when it does.

``torch.compiler.assume_constant_result`` imports ``torch._dynamo`` (over a second of
start-up); ``models.liif_fast.enable_compile_support`` applies it only when compiling.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from engine import throughput
from engine.throughput import apply_throughput_options
from models import liif_fast
from models.published import PUBLISHED_SPECS
from utils.coords import make_cell, make_coord

REPO = Path(__file__).resolve().parents[1]
# Every command-line entry point, with the modules its start-up imports (what runs before
# the first line of main): the script itself, run with --help.
ENTRY_POINTS = ['train_liif.py', 'test.py', 'demo.py', 'viewer.py', 'scripts/eval_all.py',
                'scripts/export_onnx.py', 'scripts/onnx_upscale.py', 'scripts/init_cmsr.py']
HEAVY = ('torch._dynamo', 'torch._inductor')


def loaded_after(script):
    """Modules in ``sys.modules`` after running ``script --help`` in a fresh interpreter."""
    code = ('import runpy, sys\n'
            f'sys.argv = [{script!r}, "--help"]\n'
            'try:\n'
            f'    runpy.run_path({script!r}, run_name="__main__")\n'
            'except SystemExit:\n'
            '    pass\n'
            'print("\\n".join(sys.modules), file=sys.stderr)\n')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stderr.split())


@pytest.mark.parametrize('script', ENTRY_POINTS)
def test_entry_points_do_not_import_the_compiler(script):
    loaded = loaded_after(script)
    if script != 'scripts/onnx_upscale.py':     # the PyTorch-free one
        assert 'torch' in loaded and 'models' in loaded    # the check ran the real imports
    heavy = sorted(m for m in loaded if m.startswith(HEAVY))
    assert not heavy, f'{script} imports {heavy[:5]}'


def test_importing_the_packages_leaves_the_compiler_out():
    code = ('import sys, models, datasets, engine.render, engine.evaluate, engine.train, '
            'engine.throughput\n'
            'print(any(m.startswith(("torch._dynamo", "torch._inductor")) for m in sys.modules))')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == 'False'


def test_compile_support_makes_the_fast_query_one_graph():
    """With compile asked for, the LIIF fast query traces in one graph (``fullgraph``:
    a graph break is an error), the rounding probe being a constant of the trace."""
    model = models.make(PUBLISHED_SPECS['edsr-baseline-liif']).eval()
    liif_fast.enable_compile_support()
    feat = torch.randn(1, 64, 6, 7)
    coord = make_coord((13, 11)).unsqueeze(0)
    cell = make_cell(coord, (13, 11))
    prepared = model.prepare(feat)
    with torch.no_grad():
        expected = model.query(prepared, coord, cell)
        compiled = torch.compile(model.query, backend='eager', fullgraph=True)
        got = compiled(prepared, coord, cell)
    assert (got - expected).abs().max() <= 1e-6


def test_compile_option_enables_the_support(monkeypatch):
    """``apply_throughput_options(compile=True)`` prepares the queries before compiling
    (and only then: without it the probe is not marked, see the subprocess tests)."""
    calls = []
    monkeypatch.setattr(throughput, 'enable_compile_support', lambda: calls.append(1))
    model = models.make(PUBLISHED_SPECS['edsr-baseline-liif']).eval()
    apply_throughput_options(model, compile=False)
    assert calls == []
    apply_throughput_options(model, compile=True)      # compiles lazily: nothing runs yet
    assert calls == [1]


def test_the_onnx_upscaler_imports_no_torch():
    """``scripts/onnx_upscale.py`` runs where PyTorch is not installed: its start-up
    imports neither torch nor the packages that need it."""
    loaded = loaded_after('scripts/onnx_upscale.py')
    assert 'numpy' in loaded and 'utils.render_plan' in loaded
    assert not sorted(m for m in loaded if m == 'torch' or m.startswith(('torch.', 'models',
                                                                         'engine')))
