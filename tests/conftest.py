"""Shared fixtures: an appliance on loopback with port-0 listeners and a temporary database."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import fcntl
import inspect
import os
import reprlib
import shutil
import socket
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.app import Appliance
from appliance.config import parse_config

CORPUS = Path(
    os.environ.get("APPLIANCE_CORPUS", Path(__file__).parents[1] / ".." / "shared" / "corpus")
).resolve()
TOKEN = "test-token-0123456789"


_handed_out: Path | None = None  # the run's record of ports given out, shared by the workers


@pytest.fixture(autouse=True, scope="session")
def _port_record(tmp_path_factory: pytest.TempPathFactory) -> None:
    global _handed_out
    base = tmp_path_factory.getbasetemp()
    run = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by workers
    _handed_out = run / "ports"
    _handed_out.mkdir(exist_ok=True)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port no socket holds now and no other test of this run was given.

    The port is free only until someone binds it, and a test may leave it unbound for a
    while on purpose (a receiver that is down). Without the run's record, another worker's
    ``free_port`` could hand out the same number meanwhile, and one test's appliance would
    deliver to another's receiver: the notify outage test saw a stranger's webhook and mail."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if _handed_out is None:
            return port
        try:
            (_handed_out / str(port)).touch(exist_ok=False)
        except FileExistsError:
            continue  # given to another test of this run: pick again
        return port
    raise RuntimeError("no port left that this test run has not handed out")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (CI installs it from Debian's packages)")
    return path


def corpus_dir(sub: str) -> Path:
    path = CORPUS / sub
    if not path.is_dir():
        pytest.skip(f"corpus {path} not present (set APPLIANCE_CORPUS)")
    return path


def syslog_corpus_lines() -> Iterator[bytes]:
    """Every non-empty line of the corpus's syslog files (``*.log``), file by file in name
    order: what the differential tests feed both backends."""
    for path in sorted(corpus_dir("syslog").glob("*.log")):
        for raw in path.read_bytes().splitlines():
            if raw:
                yield raw


def _lambda_node(predicate: Callable[..., Any]) -> ast.Lambda | None:
    """The lambda's own syntax tree, cut out of the line(s) ``inspect`` finds it on."""
    try:
        lines = textwrap.dedent(inspect.getsource(predicate)).strip()
    except (OSError, TypeError):
        return None
    # The source is the whole statement the lambda sits in, which may be a fragment
    # (``await wait_until(lambda: ...)`` or an argument list): try it as it is, then wrapped.
    for text in (lines, f"(\n{lines}\n)", f"f(\n{lines}\n)"):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        arity = predicate.__code__.co_argcount
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda) and len(node.args.args) == arity:
                return node
    return None


def _short(value: Any) -> str:
    return reprlib.repr(value)


def last_seen(predicate: Callable[..., Any], result: Any) -> str:
    """What a wait saw last: the condition, its result and the value of each operand.

    A condition like ``lambda: len(reader.backlog) == 300`` reads back as
    ``len(reader.backlog) == 300 → False; len(reader.backlog) = 187``: the operands of the
    comparisons and boolean operators are evaluated once more, in the lambda's own scope.
    """
    node = _lambda_node(predicate) if getattr(predicate, "__name__", "") == "<lambda>" else None
    if node is None:
        name = getattr(predicate, "__qualname__", repr(predicate))
        return f"{name}() → {_short(result)}"
    scope = dict(predicate.__globals__)
    for var, cell in zip(predicate.__code__.co_freevars, predicate.__closure__ or (), strict=True):
        with contextlib.suppress(ValueError):
            scope[var] = cell.cell_contents
    operands: list[ast.expr] = []
    for sub in ast.walk(node.body):
        if isinstance(sub, ast.Compare):
            operands += [sub.left, *sub.comparators]
        elif isinstance(sub, ast.BoolOp):
            operands += sub.values
    seen: list[str] = []
    for expr in operands:
        if isinstance(expr, ast.Constant | ast.Compare | ast.BoolOp):
            continue
        text = ast.unparse(expr)
        try:
            value = eval(compile(ast.Expression(expr), "<wait>", "eval"), scope)
        except Exception as exc:  # a condition that raises explains itself too
            value = exc
        if inspect.isawaitable(value):
            if hasattr(value, "close"):
                value.close()
            continue
        seen.append(f"{text} = {_short(value)}")
    return f"{ast.unparse(node.body)} → {_short(result)}" + ("; " + ", ".join(seen) if seen else "")


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` (a function or coroutine function) until it returns something true.

    A hang guard, not a timing assertion: on timeout it fails with what it last saw
    (:func:`last_seen`), so a failure in CI explains itself.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(
                f"{what or 'condition'} not met in {timeout} s: {last_seen(predicate, result)}"
            )
        await asyncio.sleep(0.02)


def wait_until_sync(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "", interval: float = 0.05
) -> Any:
    """:func:`wait_until` for tests without an event loop (processes, files, HTTP)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what or 'condition'} not met in {timeout} s: {last_seen(predicate, result)}"
            )
        time.sleep(interval)


@pytest.fixture(scope="session", autouse=True)
def _net_snmp_state_per_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """net-snmp's tools read and rewrite one state file at exit (``snmpapp.conf`` under
    ``/var/lib/snmp``: their engine ID and boots). Tools run by parallel workers then read it
    half-written ("buffer too small to read octet string") and a v3 ``snmpinform`` can time
    out, so each worker gets its own directory (``SNMP_PERSISTENT_DIR``, snmpcmd(1)); the
    tools of one worker run one after another."""
    saved = os.environ.get("SNMP_PERSISTENT_DIR")
    os.environ["SNMP_PERSISTENT_DIR"] = str(tmp_path_factory.mktemp("net-snmp"))
    try:
        yield
    finally:
        if saved is None:
            del os.environ["SNMP_PERSISTENT_DIR"]
        else:
            os.environ["SNMP_PERSISTENT_DIR"] = saved


@pytest.fixture(autouse=True)
def _alone_if_exclusive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under xdist an ``exclusive`` test runs with no other test running beside it.

    A readers-writer lock over the workers: every test holds ``run.lock`` shared; an
    exclusive one takes it exclusive, holding ``gate.lock`` while it waits so that no test
    starts in the meantime (a plain flock would let the shared holders starve it)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of one run
    exclusive = request.node.get_closest_marker("exclusive") is not None
    with (root / "gate.lock").open("a") as gate, (root / "run.lock").open("a") as run:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(run, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            if not exclusive:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist the ``slow`` tests go first, longest first (``slow(seconds=N)``), so they
    run beside the quick ones rather than alone at the end (with ``--maxschedchunk 2`` each
    worker takes two tests at a time, so the first ones spread over the workers)."""

    def cost(item: pytest.Item) -> float:
        slow = item.get_closest_marker("slow")
        return 0.0 if slow is None else float(slow.kwargs.get("seconds", 1.0))

    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=cost, reverse=True)  # stable: the order within a module is kept


BACKENDS = ("native", "python")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on each data plane: the Rust extension and the Python reference.

    Modules whose subject has both (syslog framing and headers) use it through
    ``pytestmark = pytest.mark.usefixtures("backend")``; the native run skips, with its reason,
    where the extension is not built or ``APPLIANCE_NATIVE=0`` is set.
    """
    from appliance import dataplane
    from appliance.protocols.syslog import decode

    if request.param == "native":
        if dataplane.native is None:
            pytest.skip("native data plane not loaded (not built, or APPLIANCE_NATIVE=0)")
        if decode._native is None:
            monkeypatch.setattr(decode, "_native", decode._native_header())
    else:
        monkeypatch.setattr(dataplane, "native", None)
        monkeypatch.setattr(decode, "_native", None)
    return str(request.param)


def make_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A config dict on loopback port 0 with a temporary data dir; ``sections`` override."""
    data: dict[str, Any] = {
        "appliance": {"data_dir": str(tmp_path / "data"), "sensor_id": "test-01"},
        "api": {"listen": "127.0.0.1:0", "token": TOKEN},
        "pipeline": {"flush_interval": 0.05},
        "sources": {"syslog": [{"protocol": "udp", "listen": "127.0.0.1:0"}]},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


class Running:
    """A started appliance plus helpers to talk to it."""

    def __init__(self, app: Appliance, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.session = session

    @property
    def api(self) -> str:
        assert self.app.api is not None
        return f"{self.app.api.scheme}://127.0.0.1:{self.app.api.port}"

    def source(self, name: str | None = None) -> Any:
        for src in self.app.sources:
            if name is None or src.name == name:
                return src
        raise KeyError(name)

    async def get_json(self, path: str, token: str | None = TOKEN, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(self.api + path, params=params, headers=headers) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def metrics(self) -> str:
        async with self.session.get(self.api + "/metrics") as resp:
            return await resp.text()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if loop.time() > deadline:
                raise AssertionError(
                    f"condition not met in {timeout} s (last result {result!r}); {self.books()}"
                    f"; {last_seen(predicate, result)}"
                )
            await asyncio.sleep(0.02)

    def books(self) -> str:
        """The counters a failed wait most often needs to explain itself."""
        p = self.app.pipeline
        dropped = {"/".join(k): v for k, v in p.dropped.values.items() if v}
        return (
            f"received={p.received.total():.0f} stored={p.stored.total():.0f} "
            f"queue={len(p)} dropped={dropped} sources={[s.name for s in self.app.sources]}"
        )

    async def wait_stored(self, n: int, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: self.app.pipeline.stored.total() >= n, timeout)


try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
    uvloop = None  # type: ignore[assignment]

# Event loops a test can ask for by name (``@pytest.mark.parametrize("loop", LOOPS)``):
# production runs uvloop, pytest-asyncio runs asyncio, and they differ at the socket edge.
LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="no uvloop")),
]


def run_on_loop(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` to completion on a fresh event loop of the named kind."""
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


@contextlib.asynccontextmanager
async def running_appliance(tmp_path: Path, **sections: Any) -> AsyncIterator[Running]:
    """An appliance on whatever loop is running (``start_appliance`` is tied to asyncio's)."""
    cfg = parse_config(make_config(tmp_path, **sections), base_dir=tmp_path)
    app = Appliance(cfg)
    await app.start()
    run = Running(app, aiohttp.ClientSession())
    try:
        yield run
    finally:
        await run.session.close()
        if app.running:
            await app.stop()


@pytest.fixture
async def start_appliance(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_appliance(**sections)`` → :class:`Running`; stopped at teardown.

    ``incident_hooks`` and ``route_setups`` are added to the appliance's own lists before it
    starts (a hook that sees the first incident, a route only a test serves)."""
    started: list[Running] = []

    async def _start(
        *,
        incident_hooks: list[Any] | None = None,
        route_setups: list[Any] | None = None,
        **sections: Any,
    ) -> Running:
        cfg = parse_config(make_config(tmp_path, **sections), base_dir=tmp_path)
        app = Appliance(cfg)
        app.incident_hooks.extend(incident_hooks or ())
        app.route_setups.extend(route_setups or ())
        await app.start()
        run = Running(app, aiohttp.ClientSession())
        started.append(run)
        return run

    yield _start
    for run in started:
        await run.session.close()
        if run.app.running:
            await run.app.stop()


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Any]:
    """A real HTTPS receiver requiring client certificates (``rx.pki`` holds the PKI)."""
    from tests.forwarding import Receiver, make_pki

    pki = make_pki(tmp_path)
    rx = Receiver(pki.server, pki.ca)
    await rx.start()
    rx.pki = pki  # type: ignore[attr-defined]
    yield rx
    await rx.stop()
