"""``appliance vuln import | list | remove``: files validated, kept in data_dir, and in force
for an appliance started afterwards (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.cli import main
from tests.test_analysis_incidents import analysis, corpus_line, incident_for

DATA = Path(__file__).parent / "data" / "analysis"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(f'[appliance]\ndata_dir = "{tmp_path / "data"}"\nallow_empty = true\n')
    return path


def imported(tmp_path: Path) -> list[str]:
    folder = tmp_path / "data" / "analysis" / "imported"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_import_reports_counts_and_copies_into_data_dir(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(DATA / "vulnerable.nessus"), str(DATA / "kev.json")]
    assert main(["vuln", "import", *files, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "vulnerable.nessus: nessus: 1 assets, 3 findings, 3 cves ->" in out
    assert "kev.json: kev: 2 cves, 2 kev ->" in out
    assert imported(tmp_path) == ["kev.json", "vulnerable.nessus"]
    assert (tmp_path / "data/analysis/imported/kev.json").read_bytes() == (
        DATA / "kev.json"
    ).read_bytes()


def test_one_bad_file_imports_nothing(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "truncated.nessus"
    bad.write_bytes((DATA / "vulnerable.nessus").read_bytes()[:300])
    code = main(["vuln", "import", str(DATA / "kev.json"), str(bad), "--config", str(config)])
    assert code == 2
    err = capsys.readouterr().err
    assert "truncated.nessus: not well-formed XML" in err and "nothing imported" in err
    assert imported(tmp_path) == []


def test_dry_run_validates_without_copying(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["vuln", "import", "--dry-run", str(DATA / "local.rules"), "-c", str(config)]) == 0
    assert "ids_rules: 5 signatures, 4 signatures with cve, 1 skipped" in capsys.readouterr().out
    assert imported(tmp_path) == []


def test_list_and_remove(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["vuln", "import", str(DATA / "patched.nessus"), "-c", str(config)])
    capsys.readouterr()
    assert main(["vuln", "list", "-c", str(config)]) == 0
    assert capsys.readouterr().out == "patched.nessus: nessus: 1 assets, 1 findings, 1 cves\n"
    assert main(["vuln", "remove", "../appliance.toml", "-c", str(config)]) == 2
    assert main(["vuln", "remove", "patched.nessus", "-c", str(config)]) == 0
    assert imported(tmp_path) == []


async def test_imported_scan_is_in_force_after_a_restart(
    start_appliance: Any, config: Path, tmp_path: Path
) -> None:
    assert main(["vuln", "import", str(DATA / "vulnerable.nessus"), "-c", str(config)]) == 0
    run = await start_appliance(analysis=analysis())  # no scan in the config itself
    inc = await incident_for(run, corpus_line())
    assert inc["severity"] == "high"
    assert inc["risk"]["inputs"]["matched_cves"] == ["CVE-2020-1350"]
