"""utils.files: atomic writes leave the target untouched or complete."""
import os

import pytest

from utils.files import atomic_path, write_text_atomic


def test_write_text_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / 'a.txt'
    write_text_atomic(path, 'one\n')
    write_text_atomic(path, 'two\n')
    assert path.read_text() == 'two\n'
    assert os.listdir(tmp_path) == ['a.txt']


def test_failure_keeps_previous_file_and_removes_temp(tmp_path):
    path = tmp_path / 'a.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, 'w') as f:
                f.write('half')
            raise RuntimeError('crash mid-write')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['a.txt']


def test_permissions_follow_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / 'b.bin'
        with atomic_path(path) as tmp:
            open(tmp, 'wb').close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
