"""scripts/gpu_check.py's own logic (the GPU run itself needs a GPU): the report, the
time budget, the configs it writes."""
from helpers import load_script

gpu_check = load_script('scripts/gpu_check.py')


def test_a_spent_budget_skips_stages_and_says_so(tmp_path):
    report = gpu_check.Report(tmp_path, budget=0)
    code, output = report.stage('Benchmark', ['false'])
    assert code is None and output == ''
    text = (tmp_path / 'gpu-report.md').read_text()
    assert '## Benchmark\n\nnot run: the time budget (0 s) was spent' in text


def test_a_stage_logs_its_output_and_exit_status(tmp_path):
    report = gpu_check.Report(tmp_path, budget=60)
    code, output = report.stage('Echo stage', ['sh', '-c', 'echo result: 1; echo bar >&2; exit 3'])
    assert code == 3 and 'result: 1' in output
    assert 'exit 3' in (tmp_path / 'gpu-report.md').read_text()
    log = (tmp_path / 'echo_stage.log').read_text()
    assert 'result: 1' in log and 'bar' in log


def test_the_paper_recipe_is_the_papers():
    cfg = gpu_check.recipe('train', paper=True, workers=8, repeat=200)
    wrapper = cfg['train_dataset']['wrapper']['args']
    assert (cfg['train_dataset']['batch_size'], wrapper['inp_size'], wrapper['sample_q'],
            wrapper['scale_max']) == (16, 48, 2304, 4)
    assert cfg['model']['args']['imnet_spec']['args']['hidden_list'] == [256] * 4
    # 22 generated images x repeat 200 / batch 16 = 275 iterations >= 200 + 1 warm-up
    assert 22 * cfg['train_dataset']['dataset']['args']['repeat'] // 16 >= 201
