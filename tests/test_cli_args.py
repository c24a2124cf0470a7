"""Command-line argument handling shared by every verb: unknown options, missing policy folders, env defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent

VERBS = [
    ("abguard policy validate", []),
    ("abguard policy show", []),
    ("abguard policy compile", []),
    ("abguard policy diff", ["a.yaml", "b.yaml"]),
    ("abguard policy test", []),
    ("abguard policy facts", []),
    ("abguard policy schema", []),
    ("abguard replay", ["--input", "-"]),
    ("abguard serve", []),
    ("abguard evaluate", ["--input", "-"]),
    ("abguard health", []),
    ("abguard demo", []),
    ("abguard simulate", []),
    ("abguard audit verify", ["--data-dir", "x"]),
    ("abguard audit export", ["--data-dir", "x"]),
    ("abguard rollback", ["t", "--reason", "r"]),
    ("abguard rollbacks", []),
]


@pytest.mark.parametrize(("prog", "extra"), VERBS, ids=[prog for prog, _ in VERBS])
def test_unknown_option_is_reported_by_the_verbs_own_parser(
    capsys: pytest.CaptureFixture[str], prog: str, extra: list[str]
) -> None:
    """An unknown option prints the verb's own usage line and error, not the top-level usage, and exits 2."""
    with pytest.raises(SystemExit) as stopped:
        main([*prog.split()[1:], *extra, "--bogus"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {prog} "), err
    assert err.rstrip().endswith(f"{prog}: error: unrecognized arguments: --bogus"), err


def test_extra_positional_argument_is_reported_by_the_verb(capsys: pytest.CaptureFixture[str]) -> None:
    """A positional argument too many is the verb's usage error too."""
    with pytest.raises(SystemExit) as stopped:
        main(["policy", "diff", "a.yaml", "b.yaml", "c.yaml"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: abguard policy diff ")
    assert "abguard policy diff: error: unrecognized arguments: c.yaml" in err


MISSING_POLICIES = [
    ["policy", "show", "--policies"],
    ["policy", "compile", "--policies"],
    ["policy", "test", str(ROOT / "policies" / "tests"), "--policies"],
    ["replay", "--input", str(ROOT / "scenarios" / "healthy.jsonl"), "--policies"],
]


@pytest.mark.parametrize("argv", MISSING_POLICIES, ids=[" ".join(a[:2]) for a in MISSING_POLICIES])
def test_missing_policy_folder_is_one_line_and_exit_two(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    """--policies naming a folder that does not exist prints one line naming it and exits 2."""
    missing = tmp_path / "missing"
    code = main([*argv, str(missing)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert f"no such policy folder: {missing}" in err
    assert err.startswith(f"abguard {argv[0]}")


def test_serve_with_missing_policy_folder_exits_two(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """serve reports a missing policy folder on one line and exits 2, before opening anything."""
    missing = tmp_path / "missing"
    code = main(["serve", "--data-dir", str(tmp_path / "data"), "--policies", str(missing)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"abguard serve: no such policy folder: {missing}\n"


def test_load_policy_names_the_missing_folder(tmp_path: Path) -> None:
    """load_policy raises a usage error naming the folder, which main() turns into exit 2."""
    from engine.cli.common import UsageError, load_policy

    with pytest.raises(UsageError, match=r"no such policy folder: .*missing"):
        load_policy(str(tmp_path / "missing"), None, None)


def test_positive_int_accepts_whole_numbers_from_one() -> None:
    """positive_int converts '1' and '16'; 0, negatives, fractions and words are refused with the text given."""
    from engine.cli.common import positive_int

    assert positive_int("1") == 1
    assert positive_int("16") == 16
    for bad in ("abc", "0", "-3", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            positive_int(bad)
        assert str(refused.value) == f"must be a whole number >= 1, got {bad!r}"


def test_env_default_reads_abguard_variables_without_converting(monkeypatch: pytest.MonkeyPatch) -> None:
    """env_default returns ABGUARD_<NAME> as text when set, the default otherwise."""
    from engine.cli.common import env_default

    monkeypatch.delenv("ABGUARD_WORKERS", raising=False)
    assert env_default("WORKERS", "16") == "16"
    assert env_default("WORKERS", None) is None
    monkeypatch.setenv("ABGUARD_WORKERS", "abc")
    assert env_default("WORKERS", "16") == "abc"


def test_bad_env_value_is_a_usage_error_only_when_the_option_is_parsed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With type=positive_int and default=env_default(...), ABGUARD_WORKERS=abc builds fine and fails as usage."""
    from engine.cli.common import env_default, positive_int

    monkeypatch.setenv("ABGUARD_WORKERS", "abc")
    parser = argparse.ArgumentParser(prog="abguard serve")
    parser.add_argument("--workers", type=positive_int, default=env_default("WORKERS", "16"))
    assert parser.parse_args(["--workers", "4"]).workers == 4
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args([])
    assert stopped.value.code == 2
    assert "argument --workers: must be a whole number >= 1, got 'abc'" in capsys.readouterr().err
    monkeypatch.delenv("ABGUARD_WORKERS")
    fresh = argparse.ArgumentParser(prog="abguard serve")
    fresh.add_argument("--workers", type=positive_int, default=env_default("WORKERS", "16"))
    assert fresh.parse_args([]).workers == 16
