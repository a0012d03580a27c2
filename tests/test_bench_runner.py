"""`make bench` (benchmarks/run.py): which scripts it runs, and that a run never overwrites BENCHMARKS.md."""

import pytest

from benchmarks import run


def test_the_default_run_is_the_first_reports_scripts_the_export_and_group_commit():
    names = [name for name, _ in run.scripts(None)]

    assert names == [*run.ORDER, "exports", "group_commit"]
    assert {"holds", "limits", "repricing", "clickhouse"}.isdisjoint(names)


def test_one_issues_benchmarks_run_by_name_or_with_all():
    assert [name for name, _ in run.scripts({"holds", "query"})] == ["query", "holds"]
    every = {name for name, _ in run.scripts(None, every=True)}
    assert {*run.DEFAULT, "group_commit", "holds", "limits", "repricing"} <= every


def test_an_unknown_name_is_refused_by_name():
    with pytest.raises(SystemExit, match="no benchmark named nope"):
        run.scripts({"nope", "query"})


def test_the_report_goes_to_var_not_over_the_curated_file(monkeypatch, tmp_path):
    written = {}
    monkeypatch.setattr(run, "scripts", lambda only, every=False: [])
    monkeypatch.setattr(run, "machine", lambda: "test machine")
    monkeypatch.setattr(run.Path, "write_text", lambda self, text: written.setdefault(str(self), text))
    monkeypatch.setattr("sys.argv", ["run.py", "--rows", "10"])

    run.main()

    assert list(written) == [str(run.ROOT / "var" / "benchmarks.md")]
