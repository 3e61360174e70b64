"""The ``state`` table through Store.state: typed slots, atomic with the caller's writes, and
the values the hand-written accessors of earlier versions stored still read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance.store import Store
from appliance.store.state import FLOAT, INT, JSON, json_codec


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "db.sqlite", clock=lambda: 1234.5)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def put_raw(store: Store, component: str, key: str, value: Any) -> None:
    """A row as the accessors before Store.state wrote it (their own SQL, their encoding)."""
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT OR REPLACE INTO state (component, key, value, updated) VALUES (?,?,?,?)",
            (component, key, value, 1.0),
        )


async def test_a_slot_reads_back_what_it_saved(store: Store) -> None:
    slot = store.state("netflow", "nf1", JSON)
    await slot.save({"templates": [[1, 256, [[8, 4]]]]})
    assert await slot.load() == {"templates": [[1, 256, [[8, 4]]]]}


async def test_a_missing_row_loads_as_none(store: Store) -> None:
    assert await store.state("correlate", "engine", JSON).load() is None


async def test_saving_again_replaces_the_value_and_stamps_the_store_clock(store: Store) -> None:
    slot = store.state("forward", "up.last_success", FLOAT)
    await slot.save(10.0)
    await slot.save(20.5)
    assert await slot.load() == 20.5
    assert store.reader is not None
    async with store.reader.execute("SELECT count(*), max(updated) FROM state") as cur:
        assert tuple(await cur.fetchone() or ()) == (1, 1234.5)


async def test_a_write_inside_a_transaction_is_rolled_back_with_it(store: Store) -> None:
    slot = store.state("snmp", "trap:engine_boots", INT)
    await slot.save(3)
    with pytest.raises(RuntimeError):
        async with store.transaction() as conn:
            assert await slot.read(conn) == 3
            await slot.write(conn, 4)
            raise RuntimeError("the component's other write failed")
    assert await slot.load() == 3


async def test_netflow_templates_stored_as_json_text_still_load(store: Store) -> None:
    await put_raw(store, "netflow", "nf1", '{"templates":[]}')
    assert await store.state("netflow", "nf1", JSON).load() == {"templates": []}


async def test_correlation_windows_stored_as_json_bytes_still_load(store: Store) -> None:
    await put_raw(store, "correlate", "engine", b'{"correlations":{"r":1}}')
    slot = store.state("correlate", "engine", json_codec(default=str))
    assert await slot.load() == {"correlations": {"r": 1}}


async def test_snmp_engine_boots_stored_as_a_decimal_string_still_load(store: Store) -> None:
    await put_raw(store, "snmp", "trap:engine_boots", "41")
    assert await store.state("snmp", "trap:engine_boots", INT).load() == 41


async def test_a_last_success_stored_as_str_of_a_float_still_loads(store: Store) -> None:
    await put_raw(store, "forward", "up.last_success", str(1795940000.25))
    assert await store.state("forward", "up.last_success", FLOAT).load() == 1795940000.25


async def test_a_value_of_the_wrong_type_is_an_error_not_a_wrong_value(store: Store) -> None:
    await put_raw(store, "snmp", "trap:engine_boots", '"forty"')
    with pytest.raises(ValueError):
        await store.state("snmp", "trap:engine_boots", INT).load()
    await put_raw(store, "forward", "up.last_success", "not a number")
    with pytest.raises(ValueError):
        await store.state("forward", "up.last_success", FLOAT).load()


async def test_the_correlation_codec_keeps_values_json_has_no_type_for_as_text(
    store: Store,
) -> None:
    slot = store.state("correlate", "engine", json_codec(default=str))
    await slot.save({"since": Path("/x")})
    assert await slot.load() == {"since": "/x"}
