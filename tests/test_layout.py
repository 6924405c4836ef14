"""The package layout: imports run one way, ``utils <- datasets, models <- engine <-
apps <- scripts`` (train_liif.py, test.py, demo.py, viewer.py, scripts/), checked on every
module's source.

A package may import the ones to its left and itself, never one to its right; no module
imports a script (scripts share code through the packages, not through each other).
The one exception: models may use ``datasets``' image functions (``datasets.image_io``,
``datasets.resize``; the bicubic baseline resizes images), not its registry or wrappers.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ('utils', 'datasets', 'models', 'engine', 'apps')
SCRIPTS = {'train_liif', 'test', 'demo', 'viewer', 'scripts'}
# package -> the project packages it may import
ALLOWED = {'utils': {'utils'}, 'datasets': {'utils', 'datasets'},
           'models': {'utils', 'models'}, 'engine': {'utils', 'datasets', 'models', 'engine'},
           'apps': {'utils', 'datasets', 'models', 'engine', 'apps'}}
MODELS_MAY_USE = {'datasets.image_io', 'datasets.resize'}
PROJECT = set(PACKAGES) | SCRIPTS


def imported_modules(path):
    """Absolute module names ``path`` imports, anywhere in the file (functions too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f'{path}: relative import'
            names += [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
    return names


def backward_imports(path, package):
    """The imports of ``path`` (in ``package``) that break the layout."""
    wrong = []
    for name in imported_modules(path):
        top = name.split('.')[0]
        if top not in PROJECT:
            continue                          # standard library or third party
        if top in SCRIPTS:
            wrong.append(name)
        elif package in ALLOWED and top not in ALLOWED[package]:
            if not (package == 'models' and any(name == m or name.startswith(m + '.')
                                                for m in MODELS_MAY_USE)):
                wrong.append(name)
    return wrong


SOURCES = sorted(p for pkg in (*PACKAGES, 'scripts') for p in (REPO / pkg).rglob('*.py')) + \
    [REPO / f'{name}.py' for name in ('train_liif', 'test', 'demo', 'viewer')]


@pytest.mark.parametrize('path', SOURCES, ids=[str(p.relative_to(REPO)) for p in SOURCES])
def test_imports_run_one_way(path):
    package = path.relative_to(REPO).parts[0] if path.parent != REPO else None
    assert backward_imports(path, package) == []


def test_the_checker_catches_a_backward_import(tmp_path):
    cases = {'utils': 'import engine.render\n', 'datasets': 'from models import make\n',
             'models': 'import datasets\n', 'engine': 'from apps.viewer import server\n',
             'apps': 'import viewer\n'}
    for package, source in cases.items():
        path = tmp_path / f'{package}.py'
        path.write_text(f'import os\n\n\ndef f():\n    {source}')   # inside a function too
        assert backward_imports(path, package), (package, source)
    path = tmp_path / 'ok.py'
    path.write_text('import torch\nfrom datasets.resize import resize_bicubic\nimport utils.coords\n')
    assert backward_imports(path, 'models') == []


def test_every_package_is_checked():
    found = {p.name for p in REPO.iterdir() if (p / '__init__.py').is_file()}
    assert found <= set(PACKAGES) | {'tests', 'scripts'}, found


# Optional parts keep their dependencies to themselves: only the app that needs them
# imports them (anywhere in a file), so the core installs and runs without them.
OPTIONAL = {'starlette': 'apps/viewer', 'uvicorn': 'apps/viewer'}


@pytest.mark.parametrize('path', SOURCES, ids=[str(p.relative_to(REPO)) for p in SOURCES])
def test_optional_dependencies_stay_in_their_app(path):
    where = str(path.relative_to(REPO))
    for name in imported_modules(path):
        home = OPTIONAL.get(name.split('.')[0])
        assert home is None or where.startswith(home + '/'), f'{where} imports {name}'
