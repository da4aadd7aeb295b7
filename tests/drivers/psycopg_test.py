#!/usr/bin/python3
"""psycopg 3 with its default settings, many threads at once, through pgward in transaction mode.

Usage: psycopg_test.py PORT USER DBNAME [HOST]

Every connection keeps psycopg's defaults: autocommit off and prepare_threshold=5, so after five runs of the
same query psycopg prepares it server-side under names like _pg3_0, _pg3_1, ... Each connection numbers its
statements from 0, so the same names stand for different SQL in different threads, and the transactions of
one connection run on whichever server the pool hands out. Checked here:
  * every result of parameterised queries (one with SQL that differs per thread) run many times;
  * pipeline mode: several statements per sync, and a failing statement with the error reported and the
    statements after it aborted, then the connection still usable;
  * transactions: rows inserted in `with conn.transaction()` blocks are read back, rolled back ones are not.
Any wrong result or unexpected error (42P05 "already exists" or 26000 "does not exist" above all) makes the
program exit non-zero. On success it prints "OK <number of checks>".
"""

import logging
import os
import sys
import threading
import time
import traceback

try:
    import psycopg
    from psycopg import errors
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"FAIL psycopg 3 is not importable by {sys.executable}: {e} (Debian package python3-psycopg)")
    sys.exit(2)

THREADS = 20
ROUNDS = 25
PIPELINE_ROUNDS = 8
TX_ROUNDS = 6


class Checker:
    def __init__(self):
        self.lock = threading.Lock()
        self.checks = 0
        self.failures = []

    def ok(self, n=1):
        with self.lock:
            self.checks += n

    def fail(self, message):
        with self.lock:
            self.failures.append(message)
            if len(self.failures) <= 50:
                print(f"FAIL {message}", flush=True)

    def expect(self, what, got, want):
        if got == want:
            self.ok()
            return True
        self.fail(f"{what}: got {got!r}, want {want!r}")
        return False


def describe(exc):
    state = getattr(getattr(exc, "diag", None), "sqlstate", None)
    return f"{type(exc).__name__} [{state}]: {exc}".strip()


def connect(dsn):
    conn = psycopg.connect(dsn, connect_timeout=20)
    # Defaults are the point of the exercise: make sure nobody changed them.
    assert conn.prepare_threshold == 5, conn.prepare_threshold
    assert not conn.autocommit
    return conn


def queries(conn, tid, check):
    """Parameterised queries run often enough to be prepared, one of them with SQL unique to this thread."""
    for i in range(ROUNDS):
        with conn.cursor() as cur:
            cur.execute(f"SELECT %s::int + {tid}", (i,))
            check.expect(f"thread {tid} round {i} add", cur.fetchone(), (i + tid,))
            cur.execute("SELECT %s::text || '-' || %s::text", (f"t{tid}", i))
            check.expect(f"thread {tid} round {i} concat", cur.fetchone(), (f"t{tid}-{i}",))
            cur.execute(f"SELECT %s::int * {tid + 1}, %s::text AS tag", (i, f"x{tid}"))
            check.expect(f"thread {tid} round {i} mul", cur.fetchone(), (i * (tid + 1), f"x{tid}"))
            cur.execute("SELECT count(*) FROM generate_series(1, %s)", (i + 1,))
            check.expect(f"thread {tid} round {i} series", cur.fetchone(), (i + 1,))
        # End the implicit transaction: the next round may run on the other server.
        conn.commit()
        if i % 7 == tid % 7:
            time.sleep(0.001)


def pipeline(conn, tid, check):
    for k in range(PIPELINE_ROUNDS):
        # Several statements in one sync, run often enough to be prepared inside the pipeline.
        with conn.pipeline() as p:
            c1 = conn.execute(f"SELECT %s::int * 3 + {tid}", (k,))
            c2 = conn.execute("SELECT %s::text || '/' || %s::text", (tid, k))
            c3 = conn.execute("SELECT x FROM generate_series(1, %s) AS x ORDER BY x", (3,))
            p.sync()
            check.expect(f"thread {tid} pipeline {k} c1", c1.fetchone(), (3 * k + tid,))
            check.expect(f"thread {tid} pipeline {k} c2", c2.fetchone(), (f"{tid}/{k}",))
            check.expect(f"thread {tid} pipeline {k} c3", c3.fetchall(), [(1,), (2,), (3,)])
        conn.commit()

        # A failing statement: the one before it (separate sync) succeeds, the error is division_by_zero, and
        # the statement queued after it is aborted rather than run.
        good = bad = after = None
        raised = None
        try:
            with conn.pipeline() as p:
                good = conn.execute(f"SELECT %s::int + 1000 + {tid}", (k,))
                p.sync()
                check.expect(f"thread {tid} pipeline {k} before error", good.fetchone(), (k + 1000 + tid,))
                bad = conn.execute("SELECT 1 / %s::int", (0,))
                after = conn.execute("SELECT %s::int", (7,))
                p.sync()
        except errors.DivisionByZero as e:
            raised = e
        except Exception as e:  # noqa: BLE001 - any other error is a failure
            check.fail(f"thread {tid} pipeline {k}: unexpected {describe(e)}")
            conn.rollback()
            continue
        if raised is None:
            check.fail(f"thread {tid} pipeline {k}: SELECT 1/0 did not raise")
        else:
            check.expect(f"thread {tid} pipeline {k} error sqlstate", raised.diag.sqlstate, "22012")
            if after is not None:
                try:
                    after.fetchone()
                    check.fail(f"thread {tid} pipeline {k}: statement after the error was not aborted")
                except (psycopg.errors.PipelineAborted, psycopg.InterfaceError, psycopg.ProgrammingError):
                    check.ok()
        conn.rollback()
        # The connection is usable again.
        check.expect(f"thread {tid} pipeline {k} after rollback",
                     conn.execute(f"SELECT %s::int - {tid}", (k,)).fetchone(), (k - tid,))
        conn.commit()


def transactions(conn, tid, table, check):
    conn.commit()
    for r in range(TX_ROUNDS):
        with conn.transaction():
            for j in range(3):
                conn.execute(f"INSERT INTO {table} (tid, round, v) VALUES (%s, %s, %s)", (tid, r, f"v{j}"))
            rows = conn.execute(f"SELECT v FROM {table} WHERE tid = %s AND round = %s ORDER BY v",
                                (tid, r)).fetchall()
            check.expect(f"thread {tid} tx {r} rows inside", rows, [("v0",), ("v1",), ("v2",)])
        # A rolled back transaction leaves nothing behind.
        with conn.transaction() as tx:
            conn.execute(f"INSERT INTO {table} (tid, round, v) VALUES (%s, %s, %s)", (tid, r, "gone"))
            raise psycopg.Rollback(tx)
    conn.commit()
    rows = conn.execute(f"SELECT round, count(*) FROM {table} WHERE tid = %s GROUP BY round ORDER BY round",
                        (tid,)).fetchall()
    check.expect(f"thread {tid} tx committed rows", rows, [(r, 3) for r in range(TX_ROUNDS)])
    gone = conn.execute(f"SELECT count(*) FROM {table} WHERE tid = %s AND v = 'gone'", (tid,)).fetchone()
    check.expect(f"thread {tid} tx rolled back rows", gone, (0,))
    conn.commit()


def worker(dsn, tid, table, check, barrier):
    conn = None
    try:
        conn = connect(dsn)
        barrier.wait(timeout=60)
        queries(conn, tid, check)
        pipeline(conn, tid, check)
        transactions(conn, tid, table, check)
        # Still right after everything above, on whatever server comes next.
        queries(conn, tid, check)
    except threading.BrokenBarrierError:
        check.fail(f"thread {tid}: not every thread connected")
    except Exception as e:  # noqa: BLE001
        check.fail(f"thread {tid}: unexpected {describe(e)}\n{traceback.format_exc()}")
        barrier.abort()
    finally:
        if conn is not None:
            conn.close()


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    port, user, dbname = sys.argv[1], sys.argv[2], sys.argv[3]
    host = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
    # Leaving a pipeline whose transaction failed makes psycopg log "error ignored terminating ...: pipeline
    # aborted" on top of the error it raises; that error is what the checks look at.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    dsn = psycopg.conninfo.make_conninfo(host=host, port=port, user=user, dbname=dbname)
    print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), {THREADS} threads", flush=True)

    table = f"drv_psycopg_{os.getpid()}_{int(time.time() * 1000) % 1000000}"
    check = Checker()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=20) as admin:
        admin.execute(f"CREATE TABLE {table} (tid int NOT NULL, round int NOT NULL, v text NOT NULL)")
    try:
        barrier = threading.Barrier(THREADS)
        threads = [threading.Thread(target=worker, args=(dsn, t, table, check, barrier)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with psycopg.connect(dsn, autocommit=True, connect_timeout=20) as admin:
            total = admin.execute(f"SELECT count(*) FROM {table}").fetchone()
            check.expect("total rows", total, (THREADS * TX_ROUNDS * 3,))
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=20) as admin:
            admin.execute(f"DROP TABLE IF EXISTS {table}")

    if check.failures:
        print(f"FAILED {len(check.failures)} of {check.checks + len(check.failures)} checks")
        return 1
    print(f"OK {check.checks} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
