"""Every documented command still runs as written, checked statically.

Reads each fenced shell block (```bash / sh / shell / console, or an untagged block whose
lines are commands) of ``README.md`` and ``docs/*.md`` and, for each ``python SCRIPT ...``,
``torchrun ... SCRIPT ...`` and ``bash scripts/...`` line: the script exists, every
``--flag`` it passes is one the script's argument parser accepts (the parser is taken
from the script without running its job), and every path under ``configs/`` exists.
Commands are not run: they need data or checkpoints. A failure names the file, the line
and the bad flag or path.
"""
import argparse
import contextlib
import glob
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {'bash', 'sh', 'shell', 'console', 'zsh'}
PYTHONS = re.compile(r'^(?:\S*/)?python3?(?:\.\d+)?$')
LAUNCHERS = {'torchrun'}


def doc_files():
    return [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))


def fenced_blocks(text):
    """``(language, first line number, lines)`` of each fenced block of a Markdown text."""
    blocks, language, start, lines = [], None, 0, None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r'^\s*```(\S*)', line)
        if fence and lines is None:
            language, start, lines = fence.group(1).lower(), number + 1, []
        elif fence:
            blocks.append((language, start, lines))
            lines = None
        elif lines is not None:
            lines.append(line)
    return blocks


def shell_commands(path):
    """``(line number, command text)`` of the commands in ``path``'s shell blocks, with
    continuation lines joined, prompts (``$ ``) and comments removed."""
    commands = []
    for language, start, lines in fenced_blocks(path.read_text()):
        if language and language not in SHELL_LANGUAGES:
            continue
        pending, pending_line = '', None
        for offset, raw in enumerate(lines):
            line = re.sub(r'^\s*\$\s+', '', raw).rstrip()
            if pending_line is None:
                pending_line = start + offset
            if line.endswith('\\'):
                pending += line[:-1].strip() + ' '
                continue
            command = (pending + line.strip()).strip()
            pending, number, pending_line = '', pending_line, None
            if command and not command.startswith('#'):
                commands.append((number, command))
    return [(n, c) for n, c in commands if language_is_shell_or_command(c)]


def language_is_shell_or_command(command):
    """Untagged blocks also hold output and file listings: keep lines that are commands."""
    words = split(command)
    return bool(words) and (PYTHONS.match(words[0]) or words[0] in LAUNCHERS
                            or words[0] in ('bash', 'sh') or '=' in words[0])


def split(command):
    """Shell words of ``command`` up to a comment, pipe or command separator."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=';&|')
        lexer.whitespace_split = True
        lexer.commenters = '#'
        words = list(lexer)
    except ValueError:
        return command.split()
    for i, word in enumerate(words):
        if word and set(word) <= set(';&|'):
            return words[:i]
    return words


def invocation(words):
    """``(script, arguments)`` of a documented command, or ``None`` when it runs no
    script of ours (pip, pytest, cd, ...). Leading ``VAR=value`` assignments, ``python``
    options and launcher options (``torchrun --nproc_per_node=2``) are skipped."""
    while words and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', words[0]):
        words = words[1:]
    if not words:
        return None
    head, rest = words[0], words[1:]
    if PYTHONS.match(head) or head in LAUNCHERS or head in ('bash', 'sh'):
        for i, word in enumerate(rest):
            if word == '-m' or word == '-c':
                return None          # python -m pytest, python -c ...: not a script of ours
            if not word.startswith('-'):
                return word, rest[i + 1:]
    return None


class _Captured(Exception):
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


_PARSERS = {}


def script_parser(script):
    """The ``ArgumentParser`` that ``script`` builds, taken at its first ``parse_args``
    call (the script runs as ``__main__`` up to that point, so its job never starts)."""
    if script in _PARSERS:
        return _PARSERS[script]

    def capture(self, *args, **kwargs):
        raise _Captured(self)
    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    argv, path = sys.argv, list(sys.path)
    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = capture
    sys.argv = [str(REPO / script)]
    parser = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(REPO / script), run_name='__main__')
    except _Captured as captured:
        parser = captured.parser
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = saved
        sys.argv, sys.path[:] = argv, path
    _PARSERS[script] = parser
    return parser


def subparsers(parser):
    """``{name: parser}`` of ``parser``'s sub-commands (empty without)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def flag_problems(parser, args):
    """The ``--flags`` in ``args`` that ``parser`` (or the sub-command named first) does
    not accept, as messages."""
    commands = subparsers(parser)
    positionals = [a for a in args if not a.startswith('-')]
    if commands and positionals and positionals[0] in commands:
        parser = commands[positionals[0]]
    known = set(parser._option_string_actions)
    problems = []
    for arg in args:
        if arg == '--':
            break
        if arg.startswith('-') and not re.match(r'^-\d', arg):
            flag = arg.split('=', 1)[0]
            if flag not in known:
                problems.append(f'flag {flag} is not accepted (valid: '
                                f'{", ".join(sorted(f for f in known if f.startswith("--")))})')
    return problems


def config_problems(words):
    """Paths under ``configs/`` in ``words`` that do not exist (globs and brace lists must
    match at least one file; placeholders like ``<name>`` or ``CFG`` are not paths)."""
    problems = []
    for word in words:
        for found in re.findall(r'(?:\./)?configs/[^\s\'"]+', word.split('=', 1)[-1]):
            if re.search(r'[<>$]', found):
                continue
            found = found.lstrip('./') if found.startswith('./') else found
            for path in expand_braces(found):
                if not (glob.glob(str(REPO / path)) if re.search(r'[*?\[]', path)
                        else (REPO / path).exists()):
                    problems.append(f'path {path} does not exist')
    return problems


def expand_braces(text):
    """``a{1,2}b`` -> ``['a1b', 'a2b']`` (nested braces expanded left to right)."""
    match = re.search(r'\{([^{}]*,[^{}]*)\}', text)
    if not match:
        return [text]
    return [expanded for part in match.group(1).split(',')
            for expanded in expand_braces(text[:match.start()] + part + text[match.end():])]


def command_problems(words):
    """Everything wrong with one documented command (script, flags, config paths)."""
    found = invocation(words)
    problems = config_problems(words)
    if found is None:
        return problems
    script, args = found
    if script.startswith('./'):
        script = script[2:]
    if not script.endswith(('.py', '.sh')) and script != '.ci/run':
        return problems
    if not (REPO / script).is_file():
        return problems + [f'script {script} does not exist']
    if script.endswith('.py'):
        parser = script_parser(script)
        if parser is None:
            return problems + [f'{script} builds no argument parser before it works']
        problems += flag_problems(parser, args)
    return problems


def documented_commands():
    return [(f'{path.relative_to(REPO)}:{number}', command)
            for path in doc_files() for number, command in shell_commands(path)]


def test_the_docs_have_commands():
    """The check below looks at something: the README's own two commands are found."""
    commands = [c for _, c in documented_commands()]
    assert any('scripts/quickstart.sh' in c for c in commands)
    assert any('scripts/run_tests.sh' in c for c in commands)
    assert sum(c.split()[0].startswith('python') for c in commands) >= 10


def test_every_documented_command_is_valid():
    bad = []
    for where, command in documented_commands():
        for problem in command_problems(split(command)):
            bad.append(f'{where}: {problem}\n    {command}')
    assert not bad, 'documented commands that would fail:\n' + '\n'.join(bad)


# --- the checker itself, on commands with known faults --------------------------------------

@pytest.mark.parametrize('command, expected', [
    ('python test.py --config configs/test/test-set5-4.yaml --model m.pth', []),
    ('python test.py --config configs/test/test-set5-4.yaml --modle m.pth',
     ['flag --modle is not accepted']),
    ('python test.py --config configs/test/no-such.yaml --model m.pth',
     ['path configs/test/no-such.yaml does not exist']),
    ('python demo.py --input a.png --model m.pth --scale=4 --output b.png', []),
    ('python no_such_script.py --x', ['script no_such_script.py does not exist']),
    ('torchrun --nproc_per_node=2 train_liif.py --config CFG --resume x.pth', []),
    ('torchrun --nproc_per_node=2 train_liif.py --config CFG --resum x.pth',
     ['flag --resum is not accepted']),
    ('CI=true bash .ci/run', []),
    ('bash scripts/no-such.sh', ['script scripts/no-such.sh does not exist']),
    ('python -m pytest -q tests', []),
    ('python scripts/quickstart_report.py report --data d --run r --started 0', []),
    ('python test.py --config configs/test/test-set5-{2,3,4}.yaml --baseline bicubic', []),
    ('python test.py --config configs/test/test-set5-{2,9}.yaml --baseline bicubic',
     ['path configs/test/test-set5-9.yaml does not exist']),
])
def test_checker_finds_what_is_wrong(command, expected):
    problems = command_problems(split(command))
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected):
        assert problem.startswith(start)


def test_shell_commands_join_continuations_and_skip_comments(tmp_path):
    doc = tmp_path / 'doc.md'
    doc.write_text('text\n```bash\n# a comment\npython demo.py --input a \\\n'
                   '  --output b   # trailing\n$ bash scripts/run_tests.sh\n```\n'
                   '```yaml\npython: not a command\n```\n')
    assert shell_commands(doc) == [(4, 'python demo.py --input a --output b   # trailing'),
                                   (6, 'bash scripts/run_tests.sh')]


# --- links and anchors ---------------------------------------------------------------------

LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)')


def heading_anchor(heading):
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to
    hyphens (``"LTE, LTE+ and SwinIR"`` -> ``"lte-lte-and-swinir"``)."""
    text = re.sub(r'`', '', heading.strip().lower())
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path):
    text, in_fence = [], False
    for line in path.read_text().splitlines():
        if re.match(r'^\s*```', line):
            in_fence = not in_fence
        elif not in_fence:
            text.append(line)
    return {heading_anchor(m.group(1)) for line in text
            for m in [re.match(r'^#{1,6}\s+(.*)$', line)] if m}


def link_problems(path, root=REPO):
    """Relative links of a Markdown file whose target file or ``#anchor`` is missing."""
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r'^[a-z]+:', target):
                continue
            file_part, _, anchor = target.partition('#')
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f'{path.relative_to(root)}:{number}: {target} does not exist')
            elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
                problems.append(f'{path.relative_to(root)}:{number}: no heading #{anchor} '
                                f'in {dest.relative_to(root)}')
    return problems


def test_heading_anchors_hand_computed():
    assert heading_anchor('LTE, LTE+ and SwinIR') == 'lte-lte-and-swinir'
    assert heading_anchor('Real-world photos: degraded training and EMA') == \
        'real-world-photos-degraded-training-and-ema'
    assert heading_anchor('The cell enters `prepare`') == 'the-cell-enters-prepare'


def test_every_link_and_anchor_resolves():
    bad = [p for path in doc_files() + [REPO / 'load' / 'README.md'] for p in link_problems(path)]
    assert not bad, 'broken links:\n' + '\n'.join(bad)


def test_link_checker_finds_broken_links(tmp_path):
    doc = tmp_path / 'docs' / 'x.md'
    doc.parent.mkdir()
    (tmp_path / 'docs' / 'y.md').write_text('# A heading\n')
    doc.write_text('# Top\n[ok](y.md#a-heading) [self](#top) [web](https://example.org)\n'
                   '[gone](z.md) [bad anchor](y.md#nope) ![img](pic.png)\n')
    problems = link_problems(doc, root=tmp_path)
    assert [p.split(': ', 1)[1] for p in problems] == [
        'z.md does not exist', 'no heading #nope in docs/y.md', 'pic.png does not exist']


def test_the_readme_model_table_names_files_that_exist():
    """Configs (``train-.../*.yaml`` under configs/) and tests named in the README's table."""
    text = (REPO / 'README.md').read_text()
    table = [line for line in text.splitlines() if line.startswith('| ')]
    configs = {c for line in table for c in re.findall(r'`((?:train|test)[\w-]*/[\w*.-]+\.yaml)`', line)}
    tests = {t for line in table for t in re.findall(r'`(test_\w+\.py)`', line)}
    assert len(configs) >= 10 and len(tests) >= 8
    missing = [c for c in configs if not glob.glob(str(REPO / 'configs' / c))]
    missing += [t for t in tests if not (REPO / 'tests' / t).is_file()]
    assert not missing, f'README names files that do not exist: {missing}'
