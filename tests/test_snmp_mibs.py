"""OID → name resolution: built-in names, instance suffixes, compiled names, bounded cache."""

from __future__ import annotations

from pathlib import Path

from appliance.mibs import INDEX_FILE, MibResolver, load_index


def test_builtin_trap_names_resolve_exactly() -> None:
    r = MibResolver()
    assert r.name("1.3.6.1.6.3.1.1.5.3") == "linkDown"
    assert r.name("1.3.6.1.6.3.1.1.5.5") == "authenticationFailure"
    assert r.name("1.3.6.1.2.1.47.2.0.1") == "entConfigChange"


def test_instance_suffix_is_kept_after_the_object_name() -> None:
    assert MibResolver().resolve("1.3.6.1.2.1.2.2.1.2.10101") == "ifDescr.10101"


def test_unknown_oid_stays_numeric() -> None:
    r = MibResolver()
    assert r.resolve("1.3.6.1.4.1.99999.1.2.3") == "1.3.6.1.4.1.99999.1.2.3"
    assert r.name("1.3.6.1.4.1.99999.0.1") is None


def test_compiled_names_extend_and_override_builtins(tmp_path: Path) -> None:
    (tmp_path / INDEX_FILE).write_text('{"1.3.6.1.4.1.99999.0.1": "acmeFanFailure"}')
    r = MibResolver(load_index(tmp_path))
    assert r.name("1.3.6.1.4.1.99999.0.1") == "acmeFanFailure"
    assert r.name("1.3.6.1.6.3.1.1.5.3") == "linkDown"


def test_missing_or_corrupt_cache_gives_builtins_only(tmp_path: Path) -> None:
    assert load_index(tmp_path) == {}
    (tmp_path / INDEX_FILE).write_text("{not json")
    assert load_index(tmp_path) == {}


def test_resolution_cache_is_bounded() -> None:
    r = MibResolver()
    r.MAX_CACHE = 100
    for i in range(1000):
        r.resolve(f"1.3.6.1.4.1.1.{i}")
    assert len(r._cache) <= 100


def test_mibs_compile_without_a_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:
    from appliance.cli import main

    cfg = tmp_path / "a.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{tmp_path}"\n[[sources.snmp]]\nlisten = "127.0.0.1:0"\n'
    )
    assert main(["mibs", "compile", "-c", str(cfg)]) == 2
    assert "no MIB folder" in capsys.readouterr().err


def test_mibs_compile_reports_a_broken_mib_as_failed(tmp_path: Path, capsys) -> None:
    from appliance.cli import main

    (tmp_path / "BROKEN-MIB.txt").write_text("BROKEN-MIB DEFINITIONS ::= BEGIN garbage")
    args = ["mibs", "compile", "--source", str(tmp_path), "--dest", str(tmp_path / "cache")]
    assert main(args) == 1
    assert "BROKEN-MIB: failed" in capsys.readouterr().out
