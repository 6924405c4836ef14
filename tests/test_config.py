"""YAML configs: safe parsing, errors with file and line, read-only result."""
import copy

import pytest

from utils.config import check_keys, freeze, load_config, positive_int, thaw
from utils.errors import UserError


def test_load_and_freeze(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('model:\n  name: liif\n  args: {hidden_list: [1, 2]}\nepoch_max: 3\n')
    cfg = load_config(path, valid_keys={'model', 'epoch_max'})
    assert cfg['model']['args']['hidden_list'] == (1, 2)
    with pytest.raises(TypeError, match='read-only'):
        cfg['epoch_max'] = 4
    with pytest.raises(TypeError):
        cfg['model']['args'].update(x=1)
    assert copy.deepcopy(cfg) == cfg
    plain = thaw(cfg)
    assert type(plain['model']) is dict and plain['model']['args']['hidden_list'] == [1, 2]


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('a: 1\nb: [1, 2\nc: 3\n')
    with pytest.raises(UserError, match=r'bad\.yaml:\d+: invalid YAML'):
        load_config(path)


def test_unknown_key_lists_valid(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('epoch_mx: 3\n')
    with pytest.raises(UserError, match='unknown key.*epoch_mx.*valid: epoch_max'):
        load_config(path, valid_keys={'epoch_max'})


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match='config not found'):
        load_config(tmp_path / 'none.yaml')


def test_non_mapping(tmp_path):
    path = tmp_path / 'list.yaml'
    path.write_text('- 1\n- 2\n')
    with pytest.raises(UserError, match='mapping'):
        load_config(path)


def test_yaml_is_parsed_safely(tmp_path):
    path = tmp_path / 'evil.yaml'
    path.write_text('x: !!python/object/apply:os.system ["echo hi"]\n')
    with pytest.raises(UserError, match='invalid YAML'):
        load_config(path)


def test_check_keys_and_freeze_thaw_round_trip():
    check_keys({'a': 1}, {'a', 'b'}, 'here')
    with pytest.raises(UserError, match='here: unknown key'):
        check_keys({'c': 1}, {'a', 'b'}, 'here')
    data = {'a': [1, {'b': [2]}]}
    assert thaw(freeze(data)) == data


@pytest.mark.parametrize('bad', [0, -2, 1.5, True, '4', None])
def test_positive_int_names_the_value(bad):
    with pytest.raises(UserError, match=rf"^c.yaml: eval_bsize must be a positive integer, got {bad!r}$"):
        positive_int(bad, 'c.yaml: eval_bsize')


def test_positive_int_accepts_positive_ints():
    for good in (1, 30000):
        positive_int(good, 'x')


def test_shipped_configs_of_the_original_code_are_unchanged():
    """Every config of the original LIIF code is shipped at its path with the same
    content (comments aside): the parsed YAML hashes to the original's digest, recorded
    in tests/data/original_configs.json from the original repository."""
    import hashlib
    import json
    from pathlib import Path

    import yaml
    configs = Path(__file__).resolve().parents[1] / 'configs'
    record = json.loads((Path(__file__).parent / 'data' / 'original_configs.json').read_text())
    assert len(record['files']) == 47
    for name, digest in record['files'].items():
        ours = yaml.safe_load((configs / name).read_text())
        assert hashlib.sha256(json.dumps(ours, sort_keys=True).encode()).hexdigest() == digest, name


def test_shipped_configs_of_lte_are_the_references():
    """Every config the LTE code adds is shipped at its path with the same content: the
    parsed YAML hashes to the reference file's digest (tests/data/lte_configs.json). The
    one amended file differs in the recorded key only, and holds the published model."""
    import hashlib
    import json
    from pathlib import Path

    import yaml

    from models.published import PUBLISHED_SPECS
    configs = Path(__file__).resolve().parents[1] / 'configs'
    record = json.loads((Path(__file__).parent / 'data' / 'lte_configs.json').read_text())
    assert len(record['files']) == 38
    assert sorted(record['amended']) == ['train-div2k/train_swinir-liif.yaml']
    for name, digest in record['files'].items():
        ours = yaml.safe_load((configs / name).read_text())
        if name in record['amended']:
            key, reference = record['amended'][name]['key'], record['amended'][name]['reference']
            assert ours[key] != reference
            assert ours[key] == PUBLISHED_SPECS['swinir-liif']
            ours[key] = reference
        assert hashlib.sha256(json.dumps(ours, sort_keys=True).encode()).hexdigest() == digest, name



def test_shipped_configs_of_lmf_are_the_references():
    """LM-LIIF's, LM-LTE's and LM-CiaoSR's configs (train-lmf/, test-lmf/, cmsr/) are shipped at their
    paths with the reference's content: the parsed YAML hashes to the reference file's
    digest (tests/data/lmf_configs.json). Three CMSR configs differ by a stray top-level
    key of the reference (removed: our config reader rejects unknown keys), and load as
    test configs; the CMSR tables are valid tables."""
    import hashlib
    import json
    from pathlib import Path

    import yaml

    from engine.cmsr import load_table
    from engine.evaluate import load_test_config
    configs = Path(__file__).resolve().parents[1] / 'configs'
    record = json.loads((Path(__file__).parent / 'data' / 'lmf_configs.json').read_text())
    assert len(record['files']) == 24
    assert sorted(record['amended']) == [f'cmsr/init-div2k-x{s}.yaml' for s in (12, 18, 6)]
    for name, digest in record['files'].items():
        ours = yaml.safe_load((configs / name).read_text())
        if name in record['amended']:
            removed = record['amended'][name]['removed']
            assert not set(removed) & set(ours)
            ours = {**removed, **ours}
        assert hashlib.sha256(json.dumps(ours, sort_keys=True).encode()).hexdigest() == digest, name
        if name.startswith(('test-lmf/', 'cmsr/init')):
            load_test_config(configs / name)
        elif name.startswith('cmsr/result/'):
            assert load_table(configs / name)[12][4] in (0.54, 0.215)
