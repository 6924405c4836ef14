"""Everything a CUDA GPU machine must show, in one run of at most 8 minutes, as one
markdown report (called by ``scripts/gpu_check.sh``)::

    bash scripts/gpu_check.sh OUT_DIR                   # on a machine with one CUDA GPU
    GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh OUT  # a dry run of this script, tiny

Stages, in order (each is a subprocess; a failing stage is reported and the next runs):

1. the environment: torch, CUDA, the GPU and its capability;
2. the CUDA tests (``pytest -m cuda``);
3. ``scripts/benchmark.py`` on the GPU for EDSR-baseline-LIIF and RDN-LIIF: plain,
   fast and bf16 for render x4 / x30 and the paper-recipe training step, then the
   ``torch.compile`` column for EDSR-baseline-LIIF;
4. 200 training iterations of the paper recipe (EDSR-baseline-LIIF, batch 16, 48 px,
   sample_q 2304, 8 loader workers) on generated images (``train_liif.py --bench``),
   with the GPU's utilisation sampled by ``nvidia-smi`` meanwhile;
5. a one-process NCCL ``torchrun`` training of a tiny config, then its resume;
6. a quickstart-size training (configs/quickstart) on one GPU, evaluated at x4 beside
   bicubic.

It installs nothing (the machine may have no package registry) and runs with whatever
PyTorch is installed (it may be older than requirements.txt's pin). The stages stop
being started once ``GPU_CHECK_SECONDS`` (default 470) have passed; the report says which
did not run. Writes ``OUT_DIR/gpu-report.md`` and the logs of every stage beside it.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


class Report:
    """The markdown report, written again after every stage (a killed run keeps it)."""

    def __init__(self, out, budget):
        self.out, self.budget, self.start = Path(out), budget, time.time()
        self.sections = [f'# GPU check ({time.strftime("%Y-%m-%d %H:%M")})\n']

    def elapsed(self):
        return time.time() - self.start

    def add(self, text):
        self.sections.append(text)
        (self.out / 'gpu-report.md').write_text('\n'.join(self.sections) + '\n')

    def stage(self, name, command, env=None, timeout=300, cwd=REPO):
        """Run ``command``; log its output; returns ``(exit status or None, its stdout,
        or its stderr when it printed nothing else)`` (progress bars go to stderr)."""
        left = self.budget - self.elapsed()
        if left < 10:
            self.add(f'## {name}\n\nnot run: the time budget ({self.budget} s) was spent\n')
            return None, ''
        started = time.time()
        log = self.out / (re.sub(r'\W+', '_', name.lower()).strip('_') + '.log')
        try:
            proc = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {}),
                                                         'PYTHONUNBUFFERED': '1'},
                                  capture_output=True, text=True, timeout=min(timeout, left))
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            code = 'timeout'
            stdout, stderr = (x.decode(errors='replace') if isinstance(x, bytes) else (x or '')
                              for x in (e.stdout, e.stderr))
        log.write_text(stdout + '\n--- stderr ---\n' + stderr)
        output = stdout if stdout.strip() and code == 0 else stdout + stderr
        shown = ' '.join(str(c) for c in command)
        self.add(f'## {name}\n\n`{shown}`: exit {code} in {time.time() - started:.0f} s '
                 f'(log: {log.name})\n')
        return code, output


def tail(text, lines=15):
    return '```\n' + '\n'.join(text.strip().splitlines()[-lines:]) + '\n```\n'


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


NORM = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}


def recipe(train_dir, paper, epochs=1, workers=1, repeat=2):
    """A training config on ``train_dir``'s images: the paper's EDSR-baseline-LIIF recipe
    (batch 16 of 48 px LR crops, scale up to 4, 2304 queries, 256-wide 4-layer MLP,
    images in memory) or, ``paper=False``, a tiny one (batch 4 of 16 px, 64 queries)."""
    if paper:
        wrapper = {'inp_size': 48, 'scale_max': 4, 'augment': True, 'sample_q': 2304}
        encoder, hidden, batch = {'no_upsampling': True}, [256] * 4, 16
    else:
        wrapper = {'inp_size': 16, 'scale_max': 2, 'augment': True, 'sample_q': 64}
        encoder = {'n_resblocks': 2, 'n_feats': 16, 'no_upsampling': True}
        hidden, batch = [32], 4
    return {
        'train_dataset': {
            'dataset': {'name': 'image-folder', 'args': {'root_path': str(train_dir),
                                                         'repeat': repeat, 'cache': 'in_memory'}},
            'wrapper': {'name': 'sr-implicit-downsampled', 'args': wrapper},
            'batch_size': batch},
        'data_norm': NORM,
        'model': {'name': 'liif', 'args': {
            'encoder_spec': {'name': 'edsr-baseline', 'args': encoder},
            'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': hidden}}}},
        'optimizer': {'name': 'adam', 'args': {'lr': 1.e-4 if paper else 1.e-3}},
        'epoch_max': epochs, 'epoch_save': 1, 'num_workers': workers}


class Utilisation:
    """``nvidia-smi`` sampling the GPU's utilisation every 200 ms, in the background."""

    def __init__(self, path):
        self.path = path
        self.proc = None
        if shutil.which('nvidia-smi'):
            self.proc = subprocess.Popen(
                ['nvidia-smi', '--query-gpu=utilization.gpu', '--format=csv,noheader,nounits',
                 '-lms', '200'], stdout=open(path, 'w'), stderr=subprocess.DEVNULL)

    def stop(self):
        """Mean and maximum utilisation in percent, or ``None`` without nvidia-smi."""
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait()
        values = [int(v) for v in Path(self.path).read_text().split() if v.isdigit()]
        return (sum(values) / len(values), max(values)) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='folder for the report and the logs (made if needed)')
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = os.environ.get('GPU_CHECK_DEVICE', 'cuda')
    dry = device == 'cpu'             # the script's own logic, tiny sizes, on a CPU
    report = Report(out, int(os.environ.get('GPU_CHECK_SECONDS', 470)))
    work = out / 'work'
    work.mkdir(exist_ok=True)

    # 1. environment
    code, output = report.stage('Environment', [PYTHON, '-c', (
        'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda); '
        'print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, '
        'torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None)')])
    report.add(tail(output, 5))
    if shutil.which('nvidia-smi'):
        _, smi = report.stage('nvidia-smi', ['nvidia-smi', '--query-gpu=name,memory.total,'
                                             'driver_version', '--format=csv,noheader'])
        report.add(tail(smi, 3))

    # 2. the CUDA tests
    code, output = report.stage('CUDA tests', [PYTHON, '-m', 'pytest', 'tests', '-m', 'cuda',
                                               '-q', '-p', 'no:cacheprovider'], timeout=150)
    report.add(tail(output, 12))

    # 3. the benchmark
    bench = [PYTHON, 'scripts/benchmark.py', '--devices', device]
    if dry:
        bench += ['--quick', '--threads', '1']
    code, output = report.stage('Benchmark', bench + [
        '--models', 'edsr-baseline-liif', 'rdn-liif', '--tasks', 'render-x4', 'render-x30',
        'train', '--bf16', 'off' if dry else 'on', '--json', str(out / 'benchmark.json')],
        timeout=180)
    report.add(tail(output, 12))
    code, output = report.stage('Benchmark, torch.compile', bench + [
        '--models', 'edsr-baseline-liif', '--tasks', 'render-x4', 'train', '--bf16', 'off',
        '--compile'], timeout=150)
    report.add(tail(output, 8))

    # 4. 200 iterations of the paper recipe on generated images
    images = work / 'generated'
    report.stage('Generated images', [PYTHON, 'scripts/quickstart_data.py', '--out', str(images),
                                      '--source', 'generated'])
    iterations = 3 if dry else 200
    # 22 generated images x 200 repeats / batch 16 = 275 iterations (>= 200 + 1 warm-up)
    config = write_yaml(work / 'paper_recipe.yaml',
                        recipe(images / 'train', paper=not dry, workers=1 if dry else 8,
                               repeat=1 if dry else 200))
    meter = Utilisation(out / 'utilisation.txt')
    code, output = report.stage('Paper recipe, 200 iterations', [
        PYTHON, 'train_liif.py', '--config', str(config), '--device', f'{device}' if dry else
        'cuda', '--bench', str(iterations), '--no-progress'], timeout=200)
    usage = meter.stop()
    found = re.search(r'bench: ([0-9.]+) s/it', output)
    report.add((f'**{found.group(1)} s/iteration** over {iterations} iterations' if found
                else 'no s/it figure (see the log)')
               + (f'; GPU utilisation mean {usage[0]:.0f} %, max {usage[1]} %' if usage else
                  '; no GPU utilisation (nvidia-smi absent)') + '\n')

    # 5. torchrun with one process (NCCL on a GPU), then resume
    tiny = write_yaml(work / 'ddp.yaml', recipe(images / 'train', paper=False, epochs=1))
    torchrun = [PYTHON, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1',
                'train_liif.py', '--save-root', str(work / 'save'), '--no-progress']
    report.stage('torchrun, one process', torchrun + ['--config', str(tiny)], timeout=120)
    write_yaml(tiny, recipe(images / 'train', paper=False, epochs=2))
    code, output = report.stage('torchrun, resumed', torchrun + [
        '--config', str(tiny), '--resume', str(work / 'save' / '_ddp' / 'epoch-last.pth')],
        timeout=120)
    log = work / 'save' / '_ddp' / 'log.txt'
    report.add(tail(log.read_text(), 6) if log.is_file() else 'no run log\n')

    # 6. a quickstart-size training on one GPU
    quick = work / 'quickstart'
    report.stage('Quickstart data', [PYTHON, 'scripts/quickstart_data.py', '--out',
                                     str(REPO / 'load' / 'quickstart')])
    qs_config = yaml.safe_load((REPO / 'configs' / 'quickstart' / 'train_quickstart.yaml').read_text())
    if dry:
        qs_config.update(epoch_max=1, epoch_save=1)
        qs_config['train_dataset']['dataset']['args']['repeat'] = 1
    qs = write_yaml(work / 'quickstart.yaml', qs_config)
    started = time.time()
    code, output = report.stage('Quickstart-size training', [
        PYTHON, 'train_liif.py', '--config', str(qs), '--save-root', str(quick), '--no-progress',
        '--device', device if dry else 'cuda'], timeout=240)
    report.add(f'training took {time.time() - started:.0f} s\n' + tail(output, 4))
    checkpoint = quick / '_quickstart' / 'epoch-last.pth'
    for what, flag in (('LIIF', ['--model', str(checkpoint)]), ('bicubic', ['--baseline', 'bicubic'])):
        code, output = report.stage(f'Quickstart x4, {what}', [
            PYTHON, 'test.py', '--config', 'configs/quickstart/test-x4.yaml', *flag,
            '--device', device if dry else 'cuda', '--no-progress'], timeout=60)
        report.add(tail(output, 2))
    report.add(f'total {report.elapsed():.0f} s\n')
    print(f'report: {out / "gpu-report.md"} ({report.elapsed():.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
