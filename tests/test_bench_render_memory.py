"""scripts/bench_render_memory.py: its runs work at tiny sizes (the figures come from
running the script itself on a quiet machine)."""
import pytest
import torch

from helpers import load_script

bench = load_script('scripts/bench_render_memory.py')


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()   # the script sets --threads
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('decoder', ['liif', 'srno'])
def test_bounded_render_runs_and_reports(decoder, capsys):
    figures = bench.main(bench.parse_args(['--decoder', decoder, '--size', '8', '--scale', '4',
                                           '--bsize', '200', '--threads', '1', '--tile', '5']))
    out = capsys.readouterr().out
    assert f'edsr-baseline-{decoder} (fast query) on cpu, input 8x8, output 32x32' in out
    assert 'the whole output' in out                 # every block rendered
    assert figures['model'] <= figures['image'] <= figures['render']


def test_chunks_stop_early(capsys):
    bench.main(bench.parse_args(['--decoder', 'srno', '--size', '8', '--scale', '4',
                                 '--bsize', '100', '--chunks', '2', '--threads', '1']))
    assert 'peak after 2 chunk(s)' in capsys.readouterr().out


def test_whole_forward_and_its_projection(capsys):
    figures = bench.main(bench.parse_args(['--decoder', 'srno', '--whole', '--size', '8',
                                           '--scale', '4', '--project', '1000',
                                           '--threads', '1']))
    out = capsys.readouterr().out
    assert 'one forward pass' in out and 'projected for a 1000x1000 input (4000x4000 output)' in out
    per_pixel = (figures['render'] - figures['image']) / 32 ** 2
    expected = figures['model'] + 4000 ** 2 * (4 / 2 ** 20 + per_pixel)
    assert figures['projected'] == pytest.approx(expected)


def test_project_needs_whole():
    with pytest.raises(SystemExit):
        bench.parse_args(['--project', '1000'])
