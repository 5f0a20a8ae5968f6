"""The documentation matches the tool: docs/CLI.md is generated from the current --help,
and every command the README and the user guide name exists (and every command is documented).

No network; only the README's Python example needs a database (it runs against the demo).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
USER_GUIDE = DOCS / "USER_GUIDE.md"
CLI_MD = DOCS / "CLI.md"

# `pggit-export <word>` where the word could be a command: options (`--help`), `pggit-export:`
# (error messages) and prose (only code is searched) are not commands.
COMMAND_USE = re.compile(r"\bpggit-export[ \t]+([a-z][a-z0-9_-]*)")
FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("generate_cli", DOCS / "generate_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator():  # type: ignore[no-untyped-def]
    return _generator()


@pytest.fixture(scope="module")
def commands(generator) -> list[str]:  # type: ignore[no-untyped-def]
    names = generator.command_names()
    assert "export" in names and "demo" in names
    return names


def code_of(markdown: str) -> str:
    """The fenced code blocks and inline code spans of a Markdown text."""
    blocks = [m.group(2) for m in FENCE.finditer(markdown)]
    prose = FENCE.sub("", markdown)
    return "\n".join(blocks + INLINE_CODE.findall(prose))


def commands_used(path: Path) -> set[str]:
    return set(COMMAND_USE.findall(code_of(path.read_text("utf-8"))))


def test_cli_md_is_up_to_date(generator, capsys) -> None:  # type: ignore[no-untyped-def]
    status = generator.main(["--check"])
    assert status == 0, (
        "docs/CLI.md is stale: run `python docs/generate_cli.py`\n" + capsys.readouterr().err
    )


def test_cli_md_is_generated_text(generator) -> None:  # type: ignore[no-untyped-def]
    text = CLI_MD.read_text("utf-8")
    assert "\x1b[" not in text, "no ANSI colours in docs/CLI.md"
    assert all(len(line) <= 100 for line in text.splitlines() if not line.startswith("- ["))


@pytest.mark.parametrize("doc", [CLI_MD, USER_GUIDE], ids=lambda p: p.name)
def test_every_command_is_documented(doc: Path, commands: list[str]) -> None:
    used = commands_used(doc)
    missing = [name for name in commands if name not in used]
    assert not missing, f"{doc.name} never shows `pggit-export {' / '.join(missing)}`"


def test_cli_md_has_a_section_per_command(commands: list[str]) -> None:
    headings = re.findall(r"^## (.+)$", CLI_MD.read_text("utf-8"), re.MULTILINE)
    assert headings == ["pggit-export"] + [f"pggit-export {name}" for name in commands]


@pytest.mark.parametrize("doc", [README, USER_GUIDE], ids=lambda p: p.name)
def test_documented_commands_exist(doc: Path, commands: list[str]) -> None:
    used = commands_used(doc)
    assert used, f"{doc.name} shows no pggit-export command at all"
    unknown = sorted(used - set(commands))
    assert not unknown, f"{doc.name} uses commands the tool does not have: {unknown}"


def test_command_finder_ignores_prose_and_options() -> None:
    text = (
        "pggit-export replays history.\n\n"
        "```sh\npggit-export export \"\" ./repo\npggit-export --help\n"
        "pggit-export: error: no such thing\n```\n"
        "Run `pggit-export check SOURCE` first.\n"
    )
    assert set(COMMAND_USE.findall(code_of(text))) == {"export", "check"}


# The README's Python example names a made-up source and repository; the test runs it against
# the demo history and a temporary directory. Each placeholder must appear exactly once, so a
# changed example fails here instead of silently running something else.
README_SOURCE = '"postgresql://me@db.example.com/app"'
README_REPOSITORY = '"app-schema"'


def test_readme_python_example_runs(
    pg_admin_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import load_demo_database
    from history import git

    examples = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.DOTALL)
    assert len(examples) == 1, "the README has one Python example"
    code = examples[0]
    assert code.count(README_SOURCE) == 1 and code.count(README_REPOSITORY) == 1
    source = load_demo_database(pg_admin_dsn, "readme_example_source")
    repository = tmp_path / "app-schema"
    code = code.replace(README_SOURCE, repr(source)).replace(README_REPOSITORY, repr(str(repository)))

    exec(compile(code, "README.md", "exec"), {})

    commits_written, head = capsys.readouterr().out.splitlines()[0].split()
    assert git(repository, "rev-parse", "main").strip() == head
    assert int(git(repository, "rev-list", "--count", "main")) == int(commits_written) > 1
