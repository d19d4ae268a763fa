"""README's Python API snippet runs as written, except the lines that need a user's files, which say so."""
import os.path as osp
import re

from tests._tools import ROOT


def _snippet() -> str:
    readme = open(osp.join(ROOT, 'README.md'), encoding='utf-8').read()
    return re.search(r'Python API:\n\n```python\n(.*?)```', readme, re.S).group(1)


def test_readme_python_api_snippet_runs_but_for_its_marked_placeholders(monkeypatch, capsys):
    lines = _snippet().splitlines()
    placeholders = [line.split('=')[0].strip() for line in lines if '# placeholder' in line]
    assert placeholders == ['CHECKPOINT', 'IMAGE']
    # every path the snippet names is in the repository, or is a marked placeholder
    for path in re.findall(r"'([\w./-]+\.(?:py|pth|png|jpg))'", '\n'.join(lines)):
        line = next(x for x in lines if f"'{path}'" in x)
        assert osp.exists(osp.join(ROOT, path)) or '# placeholder' in line, line
    runnable = [x for x in lines if '# placeholder' not in x and not any(re.search(rf'\b{p}\b', x)
                                                                       for p in placeholders)]
    monkeypatch.chdir(ROOT)
    exec(compile('\n'.join(runnable), 'README.md', 'exec'), {})
    printed = capsys.readouterr().out  # SC and EF per image: tensor([a, b]) tensor([c, d])
    values = [float(v) for v in re.findall(r'[-+]?\d*\.\d+', printed)]
    assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values[:2]) and all(v >= 0 for v in values[2:]), printed
