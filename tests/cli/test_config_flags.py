import contextlib
import dataclasses
import functools
import io
import re

import pytest

from digitpairs.cli.parser import build_parser, config_overrides
from digitpairs.spec.config import CHOICES, GROUPS, Config

FIELDS = dataclasses.fields(Config)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache
def run_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    return out.getvalue()


def flags_in(help_text: str) -> list[str]:
    """The flags a help text describes, in order (the first name of each)."""
    return re.findall(r"^  (--[\w-]+)", help_text, re.MULTILINE)


def example(f: dataclasses.Field) -> tuple[list[str], object]:
    """Command-line words for the field's flag and the value they give it (in Config.validate's ranges)."""
    if f.name in CHOICES:
        return [flag(f.name), CHOICES[f.name][-1]], CHOICES[f.name][-1]
    if f.type is bool:
        return [flag(f.name)], True
    if f.type is int:
        return [flag(f.name), "14" if f.name == "size" else "2"], 14 if f.name == "size" else 2
    if f.type is float:
        return [flag(f.name), "0.1"], 0.1
    if f.type is str:
        return [flag(f.name), "cpu"], "cpu"
    return [flag(f.name), "8,16"], (8, 16)


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_every_config_field_is_a_flag_that_parses_to_its_type(f):
    assert flag(f.name) in flags_in(run_help())
    words, value = example(f)
    for command in (["run", "paper"], ["reproduce"]):
        overrides = config_overrides(build_parser().parse_args([*command, *words]))
        assert overrides == {f.name: value} and type(overrides[f.name]) is type(value)
        assert getattr(Config().replace(**overrides), f.name) == value


@pytest.mark.parametrize("f", [f for f in FIELDS if f.type is bool], ids=lambda f: f.name)
def test_a_bool_field_is_switched_off_by_its_no_flag(f):
    args = build_parser().parse_args(["run", "paper", "--no-" + flag(f.name)[2:]])
    assert config_overrides(args) == {f.name: False}


def test_an_absent_flag_leaves_the_study_files_value():
    assert config_overrides(build_parser().parse_args(["run", "paper"])) == {}


def test_the_help_groups_each_field_once_under_its_section():
    sections = {s.split(":\n")[0]: s for s in re.split(r"\n\n(?=\S)", run_help())}
    flags = [f for title in GROUPS for f in flags_in(sections[title])]
    assert sorted(flags) == sorted(flag(f.name) for f in FIELDS)
    for title, names in GROUPS.items():
        assert flags_in(sections[title]) == [flag(n) for n in names]


def test_each_flags_help_is_its_fields_comment_with_the_default():
    text = " ".join(run_help().split())
    assert "--channels C1,C2 conv widths, sized with hidden to the report's 72k-parameter branch (default: 16,32)" in text
    assert "30% warm-up to lr" in text and "(default: constant)" in text
    assert "--swap, --no-swap double the training set" in text and "(default: true)" in text


def test_the_flags_name_the_study_and_reach_every_variant(tmp_path, monkeypatch):
    from digitpairs.cli import main as cli
    from digitpairs.cli import run as run_command

    seen = {}
    monkeypatch.setattr(run_command, "run_study", lambda s, *a, **k: seen.setdefault("study", s))
    monkeypatch.setattr(run_command, "write_report", lambda store, name, out: out / "report.md")
    monkeypatch.chdir(tmp_path)
    args = ["--no-swap", "--channels", "8,16", "--alpha", "1", "--schedule", "onecycle", "--device", "cpu"]
    assert cli.main(["reproduce", "--quick", *args, "--store", "s.sqlite"]) == 0
    assert seen["study"].name == "paper-quick-alpha1.0-channels8x16-scheduleonecycle-swapfalse"
    assert {(v.cfg.swap, v.cfg.channels, v.cfg.schedule) for v in seen["study"].variants} == {
        (False, (8, 16), "onecycle")}


def test_a_study_name_too_long_for_a_folder_asks_for_study(tmp_path, monkeypatch, capsys):
    from digitpairs.cli import main as cli
    from digitpairs.cli import run as run_command

    def no_training(*args, **kwargs):
        raise AssertionError("a bad name reached training")

    monkeypatch.setattr(run_command, "run_study", no_training)
    monkeypatch.chdir(tmp_path)
    args = ["--label-smoothing", "0.123456789", "--dropout-p", "0.123456789", "--lr", "0.000123456789", "--seed",
            "123456789", "--head-hidden", "123"]
    assert cli.main(["reproduce", "--quick", *args, "--store", "s.sqlite"]) == 2
    err = capsys.readouterr().err
    assert "--study NAME" in err and "at most 100" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.sqlite").exists()
