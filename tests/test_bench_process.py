"""scripts/bench_process.py's instrumented runs follow the entry points' own ``main``."""
import numpy as np
from PIL import Image

from helpers import load_script, make_test_image, save_tiny_checkpoint


def test_demo_phases_are_ordered_and_the_image_is_demos(tmp_path, capsys):
    bench = load_script('scripts/bench_process.py')
    model = save_tiny_checkpoint(tmp_path / 'tiny.pth')
    Image.fromarray(make_test_image(10, 13)).save(tmp_path / 'in.png')
    argv = ['--input', str(tmp_path / 'in.png'), '--model', str(model), '--scale', '3',
            '--output', str(tmp_path / 'out.png')]
    marks = bench.phases_demo(argv, started=0.0)
    order = ['spawn', 'imported', 'loaded', 'computed', 'written']
    assert list(marks) == order
    assert all(marks[a] <= marks[b] for a, b in zip(order, order[1:]))
    out = np.asarray(Image.open(tmp_path / 'out.png'))
    assert out.shape == (30, 39, 3)
    # the same pixels as demo.py run normally
    load_script('demo.py').main(load_script('demo.py').parse_args(
        argv[:-1] + [str(tmp_path / 'ref.png')]))
    assert np.array_equal(out, np.asarray(Image.open(tmp_path / 'ref.png')))


def test_timed_marks_when_the_call_returns():
    bench = load_script('scripts/bench_process.py')
    marks = {}
    assert bench.timed(lambda x: x + 1, marks, 'done')(1) == 2
    assert set(marks) == {'done'}


def test_import_times_reads_torch_and_the_total():
    bench = load_script('scripts/bench_process.py')
    total, torch = bench.import_times('scripts/init_cmsr.py')
    assert 0 < torch <= total
