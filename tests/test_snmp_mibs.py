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
