"""Whole-process time of demo.py and test.py, as a user feels it, split into phases.

    python scripts/bench_process.py                      # demo x4 and test.py Set5 x4, 3 alternating runs
    python scripts/bench_process.py --runs 5 --model edsr-baseline-liif.pth
    python scripts/bench_process.py --tasks demo --other 'orig=python /tmp/liif/demo.py --input {input} --model {model} --resolution {resolution} --output {output}'
    python scripts/bench_process.py --other 'old=/tmp/old-checkout/.venv/bin/python /tmp/old-checkout/demo.py --input {input} --model {model} --scale 4 --output {output}'

Workloads (the issue's, so figures compare across sessions):
- ``demo``: a 160x160 centre crop of Set5 ``baby`` (``../shared/data/Set5/baby.png``; a
  generated image of that size when absent) upscaled x4 to 640x640 by ``demo.py`` with an
  EDSR-baseline-LIIF checkpoint in the published format (random weights unless
  ``--model``: the time does not depend on them).
- ``imports``: ``python -X importtime SCRIPT --help`` for every entry point
  (``ENTRY_POINTS``), ``--runs`` times: the median time of all its imports, of
  ``import torch`` within them, and the difference (our modules and the standard library
  they pull in; the issue's bound is 0.3 s).
- ``test``: ``test.py`` on Set5 x4 (LR made with MATLAB's bicubic by
  ``scripts/make_lr_bicubic.py`` into ``--work``, the benchmark-4 protocol); skipped when
  Set5 is absent.

Each workload runs ``--runs`` times with our fast query and with ``--query plain`` (and
every ``--other`` command), alternating, so that a slow moment of the machine hits all
of them alike; the table gives the median and range of the whole-process wall time and
the ratio of each to ours. A second, instrumented run per variant splits the time into
phases: ``start+import`` (from the spawn until the script's modules are imported),
``load`` (checkpoint to model), ``compute`` (render, or evaluation) and ``write`` (the
PNG); it calls the script's own functions in the order its ``main`` does. ``--other``
commands are timed whole only; ``{input}``, ``{model}``, ``{output}``, ``{resolution}``
(``H,W``) and ``{config}`` are filled in.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SET5 = REPO.parent / 'shared' / 'data' / 'Set5'
CROP = 160
SCALE = 4
TASKS = ('imports', 'demo', 'test')
ENTRY_POINTS = ('train_liif.py', 'test.py', 'demo.py', 'viewer.py', 'scripts/eval_all.py',
                'scripts/export_onnx.py', 'scripts/init_cmsr.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=TASKS)
    parser.add_argument('--runs', type=int, default=3, help='timed runs per variant')
    parser.add_argument('--model', default=None,
                        help='EDSR-baseline-LIIF checkpoint (default: random weights)')
    parser.add_argument('--set5', default=str(SET5), help='folder of the Set5 HR images')
    parser.add_argument('--work', default='save/bench-process',
                        help='folder for the checkpoint, crop, LR images and outputs')
    parser.add_argument('--other', action='append', default=[], metavar='NAME=COMMAND',
                        help='another command to time against ours (see the docstring)')
    parser.add_argument('--json', default=None, help='also write all figures to this file')
    parser.add_argument('--phases-of', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--started', type=float, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the instrumented child: the script's own steps with timestamps ----------------------

def load_entry_point(name):
    """Import ``demo.py`` / ``test.py`` as a module (its imports are the start-up cost)."""
    import importlib.util
    sys.path.insert(0, str(REPO))
    spec = importlib.util.spec_from_file_location(f'bench_{name}', REPO / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(function, marks, name):
    """``function``, setting ``marks[name]`` to the time each call returns."""
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        marks[name] = time.time()
        return result
    return wrapper


def phases_demo(argv, started):
    """demo.py's own ``main``, with timestamps where it has loaded the model, rendered and
    written the image (its functions wrapped, so the steps are exactly demo.py's)."""
    marks = {'spawn': started}
    demo = load_entry_point('demo')
    marks['imported'] = time.time()
    run_jobs = demo.run_jobs
    demo.run_jobs = lambda args, load, upscale: run_jobs(args, timed(load, marks, 'loaded'),
                                                         upscale)
    demo.render = timed(demo.render, marks, 'computed')
    demo.save_image = timed(demo.save_image, marks, 'written')
    demo.main(demo.parse_args(argv))
    return marks


def phases_test(argv, started):
    """test.py's own ``main``, with timestamps where it has loaded the model and finished
    the evaluation."""
    marks = {'spawn': started}
    test = load_entry_point('test')
    marks['imported'] = time.time()
    test.load_model = timed(test.load_model, marks, 'loaded')
    test.evaluate_config = timed(test.evaluate_config, marks, 'computed')
    test.main(test.parse_args(argv))
    marks['written'] = time.time()
    return marks


# --- the driver ----------------------------------------------------------------------------

def prepare(args):
    """The checkpoint, the demo input and (with Set5) the test config, under ``--work``."""
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch
    from PIL import Image

    import models
    from engine.checkpoint import model_entry
    from models.published import PUBLISHED_SPECS

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_path = args.model
    if model_path is None:
        model_path = work / 'edsr-baseline-liif-random.pth'
        torch.manual_seed(0)
        spec = PUBLISHED_SPECS['edsr-baseline-liif']
        net = models.make(spec)
        torch.save({'model': model_entry(spec, net),
                    'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}, 'sd': {}},
                    'epoch': 1000}, model_path)
    baby = Path(args.set5) / 'baby.png'
    if baby.is_file():
        img = np.asarray(Image.open(baby).convert('RGB'))
        top, left = (img.shape[0] - CROP) // 2, (img.shape[1] - CROP) // 2
        crop, source = img[top:top + CROP, left:left + CROP], f'{baby} centre crop'
    else:
        rng = np.random.default_rng(0)
        crop = (rng.random((CROP, CROP, 3)) * 255).astype(np.uint8)
        source = 'generated (Set5 absent)'
    inp = work / f'baby_crop{CROP}.png'
    Image.fromarray(crop).save(inp)
    config = None
    if 'test' in args.tasks and Path(args.set5).is_dir():
        lr_dir = work / 'Set5' / 'LR_bicubic'
        lr_dir.parent.mkdir(exist_ok=True)
        if not (lr_dir / f'X{SCALE}').is_dir():
            subprocess.run([sys.executable, 'scripts/make_lr_bicubic.py', '--hr', args.set5,
                            '--out', str(lr_dir), '--scales', str(SCALE)], cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        config = work / f'test-set5-{SCALE}.yaml'
        config.write_text(
            'test_dataset:\n  dataset:\n    name: paired-image-folders\n    args:\n'
            f'      root_path_1: {lr_dir.resolve()}/X{SCALE}\n'
            f'      root_path_2: {Path(args.set5).resolve()}\n'
            '  wrapper:\n    name: sr-implicit-paired\n    args: {}\n  batch_size: 1\n'
            f'eval_type: benchmark-{SCALE}\neval_bsize: 30000\n')
    return Path(model_path), inp, config, source


def commands(args, model, inp, config, work):
    """``{task: {variant: (argv of the whole-process run, argv for the phases run)}}``."""
    python = [sys.executable]
    out = {}
    fills = {'input': inp, 'model': model, 'resolution': f'{CROP * SCALE},{CROP * SCALE}',
             'config': config}
    if 'demo' in args.tasks:
        variants = {}
        for impl in ('fast', 'plain'):
            script_args = ['--input', str(inp), '--model', str(model), '--scale', str(SCALE),
                           '--output', str(work / f'demo-{impl}.png'), '--query', impl]
            variants[f'ours-{impl}'] = (python + [str(REPO / 'demo.py')] + script_args,
                                        ('demo', script_args))
        for name, template in others(args.other):
            argv = template.format(**fills, output=work / f'demo-{name}.png').split()
            variants[name] = (argv, None)
        out['demo'] = variants
    if 'test' in args.tasks and config is not None:
        variants = {}
        for impl in ('fast', 'plain'):
            script_args = ['--config', str(config), '--model', str(model), '--query', impl,
                           '--no-progress']
            variants[f'ours-{impl}'] = (python + [str(REPO / 'test.py')] + script_args,
                                        ('test', script_args))
        for name, template in others(args.other):
            if '{config}' in template:
                variants[name] = (template.format(**fills, output='').split(), None)
        out['test'] = variants
    return out


def others(pairs):
    for pair in pairs:
        name, sep, template = pair.partition('=')
        if not sep or not name or not template:
            raise SystemExit(f'--other {pair!r}: expected NAME=COMMAND')
        yield name, template


def import_times(script):
    """(all top-level imports, ``import torch``) in seconds, from ``-X importtime``."""
    done = subprocess.run([sys.executable, '-X', 'importtime', script, '--help'], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f'failed: {script} --help\n{done.stderr[-2000:]}')
    total = torch = 0
    for line in done.stderr.splitlines():
        m = re.match(r'import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$', line)
        if m and not m.group(2):                     # a top-level import of the script
            total += int(m.group(1))
        if m and m.group(3) == 'torch':
            torch = int(m.group(1))
    return total / 1e6, torch / 1e6


def imports_table(runs):
    print('### imports (python -X importtime SCRIPT --help)\n')
    print('| entry point | all imports s | import torch s | ours over torch s |\n|---|---|---|---|')
    rows = {}
    for script in ENTRY_POINTS:
        times = [import_times(script) for _ in range(runs)]
        total = statistics.median(t for t, _ in times)
        torch = statistics.median(t for _, t in times)
        over = statistics.median(t - u for t, u in times)
        rows[script] = {'all': total, 'torch': torch, 'over': over}
        print(f'| {script} | {total:.2f} | {torch:.2f} | {over:.2f} |', flush=True)
    print()
    return rows


def run_whole(argv):
    """Wall seconds of one whole-process run (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f'failed: {" ".join(argv)}\n{done.stderr[-2000:]}')
    return seconds


def run_phases(kind, script_args):
    """Phase durations of one instrumented run (seconds)."""
    started = time.time()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), '--phases-of', kind,
                           '--started', repr(started), '--', *script_args],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f'failed phases run of {kind}:\n{done.stderr[-2000:]}')
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    steps = (('start+import', 'spawn', 'imported'), ('load', 'imported', 'loaded'),
             ('compute', 'loaded', 'computed'), ('write', 'computed', 'written'))
    return {name: marks[b] - marks[a] for name, a, b in steps}


def main(args, rest):
    if args.phases_of is not None:
        marks = (phases_demo if args.phases_of == 'demo' else phases_test)(rest, args.started)
        print(json.dumps(marks))
        return
    results = {}
    if 'imports' in args.tasks:
        results['imports'] = imports_table(args.runs)
        if set(args.tasks) == {'imports'}:
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
            return
    work = Path(args.work).resolve()
    model, inp, config, source = prepare(args)
    plan = commands(args, model, inp, config, work)
    for task, variants in plan.items():
        times = {name: [] for name in variants}
        for run in range(args.runs):
            for name, (argv, _) in variants.items():
                times[name].append(run_whole(argv))
                print(f'{task} run {run + 1}/{args.runs} {name}: {times[name][-1]:.2f} s',
                      flush=True)
        phases = {name: run_phases(*job) for name, (_, job) in variants.items() if job}
        results[task] = {'times': times, 'phases': phases}
    import torch
    print(f'\n{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} '
          f'threads); demo input: {source}; checkpoint: {model.name}\n')
    for task, result in results.items():
        if task == 'imports':
            continue
        ours = statistics.median(result['times']['ours-fast'])
        print(f'### {task}\n')
        print('| variant | median s | range s | vs ours-fast | start+import | load | compute '
              '| write |\n|---|---|---|---|---|---|---|---|')
        for name, values in result['times'].items():
            phase = result['phases'].get(name)
            cells = (' | '.join(f'{phase[k]:.2f}' for k in ('start+import', 'load', 'compute',
                                                               'write')) if phase else
                     '- | - | - | -')
            median = statistics.median(values)
            print(f'| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | '
                  f'{median / ours:.2f}x | {cells} |')
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
    argv = sys.argv[1:]
    rest = []
    if '--' in argv:
        rest, argv = argv[argv.index('--') + 1:], argv[:argv.index('--')]
    main(parse_args(argv), rest)
