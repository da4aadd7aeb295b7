// pgjdbc with its default settings, several connections at once, through pgward in transaction mode.
//
// Usage: java -cp postgresql.jar:DIR JdbcTest PORT USER DBNAME [HOST]
//
// With the default prepareThreshold (5), pgjdbc switches a PreparedStatement to a named server-side statement
// (S_1, S_2, ... numbered per connection) from its fifth execution on, and then only binds and executes that
// name. Every connection here gets the same generated names for SQL that differs per connection, and its
// transactions run on whichever server the pool hands out. Checked here:
//   * every result of PreparedStatements run many times by concurrent threads, one connection each, with SQL
//     that differs per thread, the same SQL in every thread, and several rows per result;
//   * a failing execution (division by zero) and the statement still working afterwards;
//   * batch inserts (addBatch / executeBatch) in transactions (setAutoCommit(false) ... commit()), read back
//     inside and after the transaction, and a rolled back batch leaving nothing.
// Any wrong result or unexpected error (42P05 "already exists" or 26000 "does not exist" above all) makes the
// program exit non-zero. On success it prints "OK <number of checks>".

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

public class JdbcTest {
  static final int THREADS = 10;
  static final int ROUNDS = 25;
  static final int BATCH_ROUNDS = 8;
  static final int BATCH_SIZE = 10;

  static final AtomicInteger checks = new AtomicInteger();
  static final List<String> failures = new ArrayList<>();
  static final ConcurrentHashMap<Integer, String> progress = new ConcurrentHashMap<>();

  static void fail(String message) {
    synchronized (failures) {
      failures.add(message);
      if (failures.size() <= 50) System.out.println("FAIL " + message);
    }
  }

  static void expect(String what, Object got, Object want) {
    if (Objects.equals(got, want)) {
      checks.incrementAndGet();
    } else {
      fail(what + ": got " + got + ", want " + want);
    }
  }

  static String describe(SQLException e) {
    return "[" + e.getSQLState() + "] " + e.getMessage();
  }

  static List<String> rows(ResultSet rs) throws SQLException {
    List<String> out = new ArrayList<>();
    int columns = rs.getMetaData().getColumnCount();
    while (rs.next()) {
      StringBuilder row = new StringBuilder();
      for (int c = 1; c <= columns; c++) {
        if (c > 1) row.append('|');
        row.append(rs.getString(c));
      }
      out.add(row.toString());
    }
    rs.close();
    return out;
  }

  static String url;
  static Properties props;

  static Connection connect() throws SQLException {
    // Nothing but what is needed to connect: every other setting keeps pgjdbc's default.
    return DriverManager.getConnection(url, props);
  }

  static void queries(Connection conn, int tid) throws SQLException {
    try (PreparedStatement add = conn.prepareStatement("SELECT ?::int + " + tid);
        PreparedStatement concat = conn.prepareStatement("SELECT ?::text || '-' || ?::text");
        PreparedStatement series =
            conn.prepareStatement("SELECT x, x * " + (tid + 1) + " FROM generate_series(1, ?) AS x ORDER BY x");
        PreparedStatement div = conn.prepareStatement("SELECT 10 / ?::int")) {
      for (int i = 0; i < ROUNDS; i++) {
        progress.put(tid, "queries round " + i);
        add.setInt(1, i);
        expect("thread " + tid + " round " + i + " add", rows(add.executeQuery()), List.of(String.valueOf(i + tid)));
        concat.setString(1, "t" + tid);
        concat.setInt(2, i);
        expect("thread " + tid + " round " + i + " concat", rows(concat.executeQuery()), List.of("t" + tid + "-" + i));
        int n = i % 3 + 1;
        series.setInt(1, n);
        List<String> want = new ArrayList<>();
        for (int k = 1; k <= n; k++) want.add(k + "|" + k * (tid + 1));
        expect("thread " + tid + " round " + i + " series", rows(series.executeQuery()), want);
        if (i % 4 == 0) {
          div.setInt(1, 0);
          try {
            rows(div.executeQuery());
            fail("thread " + tid + " round " + i + ": division by zero did not fail");
          } catch (SQLException e) {
            expect("thread " + tid + " round " + i + " div sqlstate", e.getSQLState(), "22012");
          }
        }
        div.setInt(1, i % 5 + 1);
        expect("thread " + tid + " round " + i + " div", rows(div.executeQuery()), List.of(String.valueOf(10 / (i % 5 + 1))));
      }
    }
  }

  static void batches(Connection conn, int tid, String table) throws SQLException {
    conn.setAutoCommit(false);
    try (PreparedStatement insert = conn.prepareStatement("INSERT INTO " + table + " (tid, round, v) VALUES (?, ?, ?)");
        PreparedStatement select =
            conn.prepareStatement("SELECT count(*), sum(v) FROM " + table + " WHERE tid = ? AND round = ?")) {
      for (int r = 0; r < BATCH_ROUNDS; r++) {
        progress.put(tid, "batch round " + r);
        for (int k = 0; k < BATCH_SIZE; k++) {
          insert.setInt(1, tid);
          insert.setInt(2, r);
          insert.setInt(3, k);
          insert.addBatch();
        }
        int[] counts = insert.executeBatch();
        int inserted = 0;
        for (int c : counts) inserted += c == Statement.SUCCESS_NO_INFO ? 1 : c;
        expect("thread " + tid + " batch " + r + " update counts", inserted, BATCH_SIZE);
        select.setInt(1, tid);
        select.setInt(2, r);
        String sum = String.valueOf(BATCH_SIZE * (BATCH_SIZE - 1) / 2);
        expect("thread " + tid + " batch " + r + " in transaction", rows(select.executeQuery()),
            List.of(BATCH_SIZE + "|" + sum));
        conn.commit();

        // A rolled back batch leaves nothing behind.
        for (int k = 0; k < 3; k++) {
          insert.setInt(1, tid);
          insert.setInt(2, r);
          insert.setInt(3, 1000);
          insert.addBatch();
        }
        insert.executeBatch();
        conn.rollback();
        expect("thread " + tid + " batch " + r + " after commit and rollback", rows(select.executeQuery()),
            List.of(BATCH_SIZE + "|" + sum));
        conn.commit();
      }
    } finally {
      conn.setAutoCommit(true);
    }
  }

  static void worker(int tid, String table, CyclicBarrier barrier) {
    progress.put(tid, "connecting");
    try (Connection conn = connect()) {
      barrier.await(60, TimeUnit.SECONDS);
      queries(conn, tid);
      batches(conn, tid, table);
      // Still right afterwards, with new statements (S_n further on) on whatever server comes next.
      queries(conn, tid);
      try (PreparedStatement count = conn.prepareStatement("SELECT count(*) FROM " + table + " WHERE tid = ?")) {
        count.setInt(1, tid);
        expect("thread " + tid + " committed rows", rows(count.executeQuery()),
            List.of(String.valueOf(BATCH_ROUNDS * BATCH_SIZE)));
      }
      progress.remove(tid);
    } catch (SQLException e) {
      fail("thread " + tid + " (" + progress.get(tid) + "): unexpected " + describe(e));
      e.printStackTrace(System.out);
      progress.remove(tid);
      barrier.reset();
    } catch (Exception e) {
      fail("thread " + tid + " (" + progress.get(tid) + "): unexpected " + e);
      progress.remove(tid);
      barrier.reset();
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 3) {
      System.out.println("usage: java JdbcTest PORT USER DBNAME [HOST]");
      System.exit(2);
    }
    String host = args.length > 3 ? args[3] : "127.0.0.1";
    url = "jdbc:postgresql://" + host + ":" + args[0] + "/" + args[2];
    props = new Properties();
    props.setProperty("user", args[1]);
    // TLS as libpq's environment asks (the integration tests set it for the run over TLS).
    String rootCert = System.getenv("PGSSLROOTCERT");
    if (rootCert != null) {
      props.setProperty("sslmode", System.getenv().getOrDefault("PGSSLMODE", "verify-full"));
      props.setProperty("sslrootcert", rootCert);
    }
    try {
      Class.forName("org.postgresql.Driver");
    } catch (ClassNotFoundException e) {
      System.out.println("FAIL pgjdbc is not on the class path (Debian package libpostgresql-jdbc-java): " + e);
      System.exit(2);
    }
    System.out.println("java " + System.getProperty("java.version") + ", pgjdbc "
        + org.postgresql.util.DriverInfo.DRIVER_VERSION + ", " + THREADS + " threads");

    String table = "drv_jdbc_" + ProcessHandle.current().pid() + "_" + System.currentTimeMillis() % 1000000;
    try (Connection admin = connect(); Statement st = admin.createStatement()) {
      st.execute("CREATE TABLE " + table + " (tid int NOT NULL, round int NOT NULL, v int NOT NULL)");
      try {
        CyclicBarrier barrier = new CyclicBarrier(THREADS);
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < THREADS; t++) {
          final int tid = t;
          Thread thread = new Thread(() -> worker(tid, table, barrier), "worker-" + t);
          thread.start();
          threads.add(thread);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(70);
        for (Thread thread : threads) {
          thread.join(Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())));
        }
        if (!progress.isEmpty()) {
          System.out.println("FAIL timed out; threads not finished: " + progress);
          System.out.flush();
          Runtime.getRuntime().halt(3);
        }
        expect("total rows", rows(st.executeQuery("SELECT count(*) FROM " + table)),
            List.of(String.valueOf(THREADS * BATCH_ROUNDS * BATCH_SIZE)));
      } finally {
        st.execute("DROP TABLE IF EXISTS " + table);
      }
    }

    synchronized (failures) {
      if (!failures.isEmpty()) {
        System.out.println("FAILED " + failures.size() + " of " + (checks.get() + failures.size()) + " checks");
        System.exit(1);
      }
    }
    System.out.println("OK " + checks.get() + " checks");
  }
}
