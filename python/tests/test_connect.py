"""Connecting the way Chancy (psycopg, that is libpq) connects: the same
DSN resolves to the same server, TLS modes work in a real Chancy worker
against a throwaway TLS cluster, PgBouncer in transaction mode, and no
password ever shows in an error."""

import asyncio
import functools
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid

import psycopg
import pytest
from chancy import Chancy, Queue, Worker
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

import jobs
import ringmetrics
from ringmetrics import Aggregator, StorageError
from ringmetrics.chancy import Metrics

pytestmark = pytest.mark.timeout(180)

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXECUTOR = "chancy.executors.asyncex.AsyncExecutor"
PW = "pw with spaces:@/?"  # rm_scram's password (scripts/pg-tls.sh)


@pytest.fixture(scope="module")
def tls():
    """A throwaway cluster with TLS on: (port, directory with ca.crt)."""
    d = tempfile.mkdtemp(prefix="ringmetrics-pytest-tls-")
    os.chmod(d, 0o777)
    port = int(subprocess.check_output([str(ROOT / "scripts/pg-tls.sh"), "start", d], text=True).strip())
    try:
        yield port, pathlib.Path(d)
    finally:
        subprocess.run([str(ROOT / "scripts/pgbouncer.sh"), "stop", f"{d}/bouncer"], check=False)
        subprocess.run([str(ROOT / "scripts/pg-tls.sh"), "stop", d], check=False)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(tls):
    port, d = tls
    out = subprocess.check_output(
        [str(ROOT / "scripts/pgbouncer.sh"), "start", f"{d}/bouncer", "127.0.0.1", str(port)], text=True
    )
    return int(out.strip())


def resolver():
    """The syncer's own DSN resolution, as a program (syncer/examples/resolve_dsn.rs)."""
    if path := os.environ.get("RINGMETRICS_RESOLVE_DSN"):
        return path
    path = ROOT / "target/release/examples/resolve_dsn"
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "ringmetrics-postgres", "--example", "resolve_dsn"],
        cwd=ROOT,
        check=True,
    )
    return str(path)


def ours(dsn, env):
    out = subprocess.run([resolver(), dsn], env=env, capture_output=True, text=True)
    return json.loads(out.stdout)


def libpqs(dsn, env, monkeypatch):
    """libpq's own resolution (environment, service file, password file,
    defaults) of the first host, from an unfinished PQconnectStart."""
    with monkeypatch.context() as m:
        for k in list(os.environ):
            if k.startswith("PG") or k == "HOME":
                m.delenv(k)
        for k, v in env.items():
            if k.startswith("PG") or k == "HOME":
                m.setenv(k, v)
        conn = pq.PGconn.connect_start(dsn.encode())
        try:
            if conn.status == pq.ConnStatus.BAD and not conn.host:
                return {"error": conn.error_message.decode()}
            return {
                "host": conn.host.decode(),
                "port": int(conn.port.decode()),
                "user": conn.user.decode(),
                "dbname": conn.db.decode(),
                "password": conn.password.decode() or None,
            }
        finally:
            conn.finish()


def test_dsn_resolution_matches_libpq(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pgpass").write_text(
        "# comment\n127.0.0.1:5999:*:alice:from\\:pgpass\nlocalhost:5432:sockdb:*:socketpw\n*:*:*:bob:bobpw\n"
    )
    (home / ".pgpass").chmod(0o600)
    other = tmp_path / "other.pgpass"
    other.write_text("*:*:*:*:other-file\n")
    other.chmod(0o600)
    (home / ".pg_service.conf").write_text("[svc]\nhost=10.0.0.7\nport=6001\ndbname=svcdb\nuser=svcuser\n")
    sysconf = tmp_path / "sysconf"
    sysconf.mkdir()
    (sysconf / "pg_service.conf").write_text("[syssvc]\nhost=10.0.0.8\nport=6002\n")
    base = {"HOME": str(home), "PGSYSCONFDIR": str(sysconf)}
    cases = [
        ("host=127.0.0.1 port=5999 user=alice dbname=d", {}),
        ("host = 127.0.0.1  port = 5999 user = 'alice' dbname='my db'", {}),
        ("host=127.0.0.1 port=5999 user=alice password='quoted pw\\'s'", {}),
        ("postgresql://alice@127.0.0.1:5999/d", {}),
        ("postgresql://alice:p%40ss%20w@127.0.0.1:5999/d%20b?connect_timeout=3", {}),
        ("postgres://127.0.0.1:5999?user=alice&dbname=x&sslmode=require", {}),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql:5432/sockdb", {}),
        ("postgresql:///sockdb?host=/var/run/postgresql", {}),
        ("postgresql://[::1]:5433/d?user=bob", {}),
        ("postgresql://127.0.0.1:5999,127.0.0.2:1/d", {"PGUSER": "alice"}),
        ("", {"PGHOST": "127.0.0.1", "PGPORT": "5999", "PGUSER": "alice", "PGDATABASE": "envdb"}),
        ("dbname=sockdb", {"PGUSER": "carol"}),
        ("", {}),
        ("user=bob", {"PGHOST": "127.0.0.2"}),
        ("host=127.0.0.1 port=5999 user=alice", {"PGPASSWORD": "env-pw"}),
        ("host=127.0.0.1 port=5999 user=alice password=dsn-pw", {"PGPASSWORD": "env-pw"}),
        ("host=127.0.0.1 user=zed", {"PGPASSFILE": str(other)}),
        (f"host=127.0.0.1 user=zed passfile={other}", {}),
        ("service=svc", {}),
        ("service=svc port=7000 user=override", {}),
        ("", {"PGSERVICE": "svc"}),
        ("service=syssvc user=bob", {}),
        ("hostaddr=127.0.0.1 port=5999 user=alice", {}),
        ("host=localhost hostaddr=127.0.0.1 port=5999 user=alice", {}),
        ("host=127.0.0.1 port=5999 user=alice keepalives=1 keepalives_idle=5 keepalives_interval=2 "
         "keepalives_count=2 tcp_user_timeout=9000 connect_timeout=4 application_name=x "
         "fallback_application_name=y sslmode=verify-full sslrootcert=system target_session_attrs=read-write "
         "load_balance_hosts=disable channel_binding=prefer gssencmode=disable sslsni=1 sslcompression=0 "
         "client_encoding=UTF8 options='-c x=1' ssl_min_protocol_version=TLSv1.2 "
         "ssl_max_protocol_version=TLSv1.3 sslnegotiation=postgres krbsrvname=postgres", {}),
    ]
    for dsn, extra in cases:
        env = {**base, **extra, "PATH": os.environ.get("PATH", "")}
        want = libpqs(dsn, env, monkeypatch)
        got = ours(dsn, env)
        assert "error" not in want, (dsn, want)
        assert "error" not in got, (dsn, got)
        first = got["hosts"][0]
        assert {k: first[k] for k in ("host", "port", "user", "dbname", "password")} == want, (dsn, extra)
        # And psycopg's own parser agrees on what the string itself says.
        parsed = psycopg.conninfo.conninfo_to_dict(dsn) if dsn else {}
        for k, v in parsed.items():
            if k in got["options"]:
                assert got["options"][k] == str(v), (dsn, k)


def test_unsupported_keywords_are_named_and_values_never_shown():
    agg = Aggregator(4)
    for dsn, keyword in [
        ("host=x password=hunter2 requirepeer=hunter3", "requirepeer"),
        ("host=x password=hunter2 replication=database", "replication"),
        ("host=x password=hunter2 require_auth=scram-sha-256", "require_auth"),
        ("host=x password='hunter2' no_such_keyword=hunter3", "no_such_keyword"),
        ("host=x no_such_keyword=hunter3 password=hunter2", "no_such_keyword"),
        ("postgresql://u:hunter2@x/db?no_such_keyword=hunter3", "no_such_keyword"),
    ]:
        with pytest.raises(ValueError) as err:
            agg.start_syncer(dsn)
        assert f'"{keyword}"' in str(err.value) and "hunter" not in str(err.value), str(err.value)
    # After an unquoted password the next word may be a piece of it: not named.
    with pytest.raises(ValueError, match="unquoted password") as err:
        agg.start_syncer("host=x password=hunter2 s3cret=x")
    assert "s3cret" not in str(err.value)


def check_clean(text):
    for piece in ("hunter2", "s3cret", "hunter2%20s3cret"):
        assert piece not in text, text


def test_no_error_path_shows_a_password(tls, caplog):
    port, d = tls
    ca = d / "ca.crt"
    caplog.set_level("DEBUG")
    forms = [
        "host=127.0.0.1 port={port} user=rm_scram dbname=postgres password=hunter2 {extra}",
        "host=127.0.0.1 port={port} user=rm_scram dbname=postgres password = 'hunter2 s3cret' {extra}",
        "host=127.0.0.1 port={port} user=rm_scram dbname=postgres password=hunter2\\ s3cret {extra}",
        "postgresql://rm_scram:hunter2%20s3cret@127.0.0.1:{port}/postgres?{uextra}",
        "postgresql://rm_scram@127.0.0.1:{port}/postgres?password=hunter2%20s3cret&{uextra}",
    ]
    paths = [
        (port, "sslmode=disable"),  # authentication fails
        (1, "connect_timeout=2"),  # refused
        (port, f"sslmode=verify-full sslrootcert={ca}"),  # TLS: wrong host name
    ]
    for p, extra in paths:
        for form in forms:
            dsn = form.format(port=p, extra=extra, uextra=extra.replace(" ", "&"))
            agg = Aggregator(4)
            agg.increment_counter("c", 1)
            syncer = agg.start_syncer(dsn, prefix="never_", interval=3600)
            with pytest.raises(StorageError) as err:
                syncer.flush(timeout=30)
            check_clean(str(err.value))
            check_clean(repr(err.value))
            check_clean(syncer.status()["last_error"])
            check_clean(repr(syncer))
            with pytest.raises(StorageError) as err:
                ringmetrics._native.cleanup(dsn, prefix="never_", retention_seconds=[60, 60, 60, 60])
            check_clean(str(err.value))
            with pytest.raises(StorageError) as err:
                ringmetrics._native.read_metrics(dsn, prefix="never_", resolution="1min", start=0, end=60)
            check_clean(str(err.value))
            with pytest.raises(StorageError) as err:
                syncer.stop()  # the final flush fails the same way
            check_clean(str(err.value))
    for dsn in [
        "host=x password=hunter2 bogus=1",
        "host=x password=hunter2 s3cret",
        "host=x password='hunter2 s3cret",
        "postgresql://u:hunter2%zz@h/db",
        "postgresql://u:hunter2@h/db?bogus=s3cret",
        "hunter2 s3cret",
    ]:
        with pytest.raises(ValueError) as err:
            Aggregator(4).start_syncer(dsn)
        check_clean(str(err.value))
        with pytest.raises(ValueError) as err:
            ringmetrics._native.cleanup(dsn, prefix="never_", retention_seconds=[60, 60, 60, 60])
        check_clean(str(err.value))
    for record in caplog.records:
        check_clean(record.getMessage())


def test_verify_full_refuses_another_host_name(tls):
    port, d = tls
    agg = Aggregator(4)
    agg.increment_counter("c", 1)
    syncer = agg.start_syncer(
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={d / 'ca.crt'}",
        interval=3600,
    )
    with pytest.raises(StorageError, match="not valid for name"):
        syncer.flush(timeout=30)
    with pytest.raises(StorageError, match="not valid for name"):
        syncer.stop()


async def run_worker(dsn, prefix, worker_id, *, check_ssl=None):
    plugin = Metrics(sync_interval=3600)
    async with Chancy(dsn, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
        await chancy.migrate()
        await chancy.declare(Queue("tlsq", concurrency=3, executor=EXECUTOR, polling_interval=1))
        w = Worker(
            chancy,
            worker_id=worker_id,
            register_signal_handlers=False,
            heartbeat_poll_interval=1,
            queue_change_poll_interval=1,
        )
        await w.start()
        refs = [ref async for refs in chancy.push_many([jobs.quick.job.with_queue("tlsq").with_kwargs(n=i) for i in range(4)]) for ref in refs]
        await asyncio.wait_for(chancy.wait_for_jobs(refs, interval=0.2), 60)
        await plugin.flush(chancy)
        if check_ssl is not None:
            # The syncer holds a connection only while it writes: hold a
            # flush on a table lock and look at its connection meanwhile.
            admin = check_ssl.admin
            async with await psycopg.AsyncConnection.connect(admin) as locker:
                await locker.execute(f'LOCK TABLE "{prefix}metrics" IN ACCESS EXCLUSIVE MODE')
                await w.increment_counter("tls:probe", 1)
                flushing = asyncio.ensure_future(plugin.flush(chancy))
                async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
                    for _ in range(200):
                        cur = await conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ringmetrics-syncer'"
                        )
                        if (await cur.fetchone())[0]:
                            break
                        await asyncio.sleep(0.05)
                await check_ssl()
                await locker.rollback()
            await flushing
        await w.stop()
        result = await plugin.get_metrics(chancy, "job:jobs.quick", resolution="1min", range_seconds=3600)
        return result["series"]["job:jobs.quick:succeeded"].summary


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full", "prefer"])
async def test_plugin_in_a_real_worker_over_tls(tls, mode):
    port, d = tls
    host = "localhost" if mode == "verify-full" else "127.0.0.1"
    extra = "" if mode == "prefer" else f"sslmode={mode}"
    if mode.startswith("verify"):
        extra += f" sslrootcert={d / 'ca.crt'}"
    dsn = f"host={host} port={port} user=postgres dbname=postgres {extra}"
    prefix = f"tls_{uuid.uuid4().hex[:8]}_"
    # The test's own plaintext connections (the checker, the table locker)
    # carry a name that the check leaves out.
    admin = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable application_name=rm-test-admin"

    async def check_ssl():
        # Every connection Chancy and the syncer hold is encrypted, the
        # syncer's included.
        async with await psycopg.AsyncConnection.connect(admin) as conn:
            rows = await (
                await conn.execute(
                    "SELECT a.application_name, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                    "WHERE a.backend_type = 'client backend' AND a.application_name <> 'rm-test-admin'"
                )
            ).fetchall()
        syncers = [ssl for app, ssl in rows if app == "ringmetrics-syncer"]
        assert syncers and all(syncers), rows
        assert all(ssl for _, ssl in rows), rows

    check_ssl.admin = admin

    assert await run_worker(dsn, prefix, f"w-{mode}", check_ssl=check_ssl) == 4


async def test_plugin_saves_through_pgbouncer_transaction_mode(tls, bouncer):
    # Chancy itself keeps session state (LISTEN, prepared statements), so
    # its app talks to the server; the plugin's syncer goes through
    # PgBouncer, as a pooled deployment's workers would.
    port, _ = tls
    direct = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    pooled = f"host=127.0.0.1 port={bouncer} user=postgres dbname=postgres"
    prefix = f"pgb_{uuid.uuid4().hex[:8]}_"
    with psycopg.connect(direct, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # Four syncers through the pooler, each flushing repeatedly.
    aggs = [Aggregator(64) for _ in range(4)]
    syncers = [a.start_syncer(pooled, prefix=prefix, worker_id=f"w{i}", interval=3600) for i, a in enumerate(aggs)]
    for round_ in range(5):
        for a, s in zip(aggs, syncers):
            a.increment_counter("pooled:hits", 1)
            s.flush(timeout=30)
    for s in syncers:
        s.stop()
    plugin = Metrics()
    async with Chancy(direct, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
        await chancy.migrate()
        result = await plugin.get_metrics(chancy, "pooled", resolution="1day", range_seconds=86400 * 2)
        assert result["series"]["pooled:hits"].summary == 20
        # Reads and cleanup through the pooler too.
        rows = ringmetrics._native.read_metrics(
            pooled, prefix=prefix, metric_prefix="", worker_id="", resolution="1day",
            start=(int(__import__("time").time()) // 86400 - 1) * 86400,
            end=(int(__import__("time").time()) // 86400 + 1) * 86400,
        )
        assert sum(p[5] for key, _, _, points in rows if key == "pooled:hits" for p in points) == 20
        ringmetrics._native.cleanup(pooled, prefix=prefix, retention_seconds=[60, 300, 3600, 86400])


class PooledChancy(Chancy):
    """Chancy as a PgBouncer (transaction mode) deployment configures it:
    psycopg's automatic prepared statements off (``prepare_threshold=None``,
    psycopg's advice for transaction pooling)."""

    @functools.cached_property
    def pool(self):
        return AsyncConnectionPool(
            self.dsn,
            min_size=self.min_connection_pool_size,
            max_size=self.max_connection_pool_size,
            reconnect_timeout=self.poll_reconnect_timeout,
            kwargs={"prepare_threshold": None},
            open=False,
        )


async def test_plugin_in_a_worker_through_pgbouncer(tls, bouncer):
    port, _ = tls
    pooled = f"host=127.0.0.1 port={bouncer} user=postgres dbname=postgres"
    prefix = f"pgbw_{uuid.uuid4().hex[:8]}_"
    plugin = Metrics(sync_interval=3600)
    async with PooledChancy(pooled, prefix=prefix, plugins=[plugin], notifications=False) as chancy:
        await chancy.migrate()
        await chancy.declare(Queue("pooled", concurrency=3, executor=EXECUTOR, polling_interval=1))
        w = Worker(
            chancy,
            worker_id="w-pooled",
            register_signal_handlers=False,
            heartbeat_poll_interval=1,
            queue_change_poll_interval=1,
        )
        await w.start()
        for round_ in range(3):
            batch = [jobs.quick.job.with_queue("pooled").with_kwargs(n=i) for i in range(3)]
            refs = [ref async for refs in chancy.push_many(batch) for ref in refs]
            await asyncio.wait_for(chancy.wait_for_jobs(refs, interval=0.2), 60)
            await plugin.flush(chancy)
        await w.stop()
        result = await plugin.get_metrics(chancy, "job:jobs.quick", resolution="1min", range_seconds=3600)
        assert result["series"]["job:jobs.quick:succeeded"].summary == 9
