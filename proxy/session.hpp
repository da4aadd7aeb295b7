// One client connection: startup and authentication, then the relay between the client and the server linked
// to it. Two coroutines share the session: client_loop() reads the client and writes to the server (taking a
// server from the pool at the first message of a transaction), server_loop() reads the linked server and
// writes to the client, and gives the server back when ReadyForQuery says idle with nothing outstanding. Both
// run on the session's executor, so they interleave only at co_await points and share state without locks.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "config/config.hpp"
#include "protocol/codec.hpp"
#include "protocol/sql_text.hpp"
#include "proxy/client_tracker.hpp"
#include "proxy/prepared.hpp"
#include "proxy/proxy.hpp"
#include "proxy/server_conn.hpp"

namespace pgward::proxy {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Proxy& proxy, tcp::socket socket, std::uint64_t id);
  ~Session();
  void start();
  // End of a drain: FATAL 57P01 to the client, then close. Call on the session's executor
  // (session_admin.cpp).
  void terminate();
  // A CancelRequest with this client's key, on the session's executor: sent to the linked server, which is
  // then held until PostgreSQL has taken the cancel, so that it can only ever stop this client's work.
  void forward_cancel();

 private:
  enum class LoginResult { ok, closed, cancel_request };

  asio::awaitable<void> run();
  asio::awaitable<LoginResult> startup();
  asio::awaitable<bool> authenticate();
  asio::awaitable<bool> finish_login();
  asio::awaitable<void> client_loop();
  asio::awaitable<void> server_loop(std::shared_ptr<ServerConn> server);

  // Takes a server from the pool (connecting one if a slot is free) and brings its session state in line with
  // this client's. Sends the client an ErrorResponse (non-fatal) and returns an empty lease when that fails.
  asio::awaitable<pool::Lease> acquire(bool fatal);
  // A server (a ServerConn) from the pool by `deadline`: an idle one, or a new one (failed connects are
  // retried with backoff). An empty lease with `error` set when none could be had.
  asio::awaitable<pool::Lease> checkout(pool::Clock::time_point deadline, std::optional<ProxyError>& error);
  asio::awaitable<bool> link(bool fatal);
  void unlink(bool reusable);
  asio::awaitable<std::optional<ProxyError>> restore_params(ServerConn& server);

  // Client I/O.
  asio::awaitable<bool> fill_client();
  asio::awaitable<std::optional<protocol::Message>> read_client_message(std::uint32_t max_length);
  asio::awaitable<bool> send_client(std::string_view bytes);
  asio::awaitable<void> send_error(std::string_view sqlstate, std::string_view message, bool fatal,
                                   std::string_view detail = {});
  asio::awaitable<void> send_ready_for_query(char status = protocol::kTxIdle);
  std::string_view client_unread() const;
  void consume_client(std::size_t n);

  void track_frontend(char type);
  // Nothing of anyone is in flight on the linked server: it may go back to the pool.
  bool releasable() const;
  // Asks server_loop, parked on the server's socket, to give the server back now that a reason to hold it
  // (half a client message forwarded, a cancel on its way) is gone.
  void request_release();
  void cancel_done(ServerConn& server, CancelDelivery delivery);
  // client_message_timeout: armed while a client message is unfinished, disarmed at a message boundary.
  void watch_stall(bool mid_message);
  void stall_expired(std::uint64_t generation);
  void arm_stall_timer(std::chrono::steady_clock::time_point at);
  // Back to the usual client buffer once the large message that needed more is handled.
  void shrink_client_buffer();

  // ---- faults ----
  // Notes whether the client message about to go to the server leaves the outcome of committed work unknown
  // should the server be lost before its answer: a statement outside a transaction block, or a COMMIT.
  void note_in_flight(char type, std::string_view message, bool whole);
  // The linked server died under the client: tells the client what became of its work (one ErrorResponse,
  // or the verified outcome of its COMMIT) and keeps the session going where the protocol allows.
  asio::awaitable<void> server_lost(ServerConn& server);
  // Appends an ErrorResponse (ERROR) and counts it.
  void append_error(std::string& out, std::string_view sqlstate, std::string_view message,
                    std::string_view detail = {});
  // commit_resolution = "verify": what became of transaction `txid`, asked on another server connection.
  enum class Outcome { committed, aborted, unknown };
  asio::awaitable<Outcome> resolve_commit(const std::string& txid);
  // The answers a verified COMMIT still owes the client, made from the queue of expected answers
  // (ParseComplete, BindComplete, CommandComplete COMMIT...; the ReadyForQuery aside); nullopt unless the
  // queue holds exactly one COMMIT and nothing pgward cannot answer for.
  std::optional<std::string> committed_reply() const;
  // The first client message after its server died while it sat idle in a transaction block: answered by
  // pgward as PostgreSQL would answer in a failed transaction.
  asio::awaitable<void> answer_lost_transaction(char type, std::string_view message);
  asio::awaitable<void> wait_resolved();
  void arm_idle_transaction_timer();
  void idle_transaction_expired();

  // ---- prepared statements (transaction and statement modes) ----
  // What pgward does with the response to one message it sent the server. Responses come in the order the
  // messages were sent, so a queue of these tells, for each server message, which request it answers.
  struct Expect {
    enum class On : std::uint8_t {
      forward,         // pass the response through
      swallow,         // a message pgward injected: drop its success response (an error still goes through)
      parse_complete,  // a no-op Close standing in for a Parse pgward answers: send ParseComplete instead
      error,  // a request sent so that the server fails it: send `error` instead of the server's text
      txid,   // pgward's own `SELECT txid_current_if_assigned()` before a COMMIT: keep the value, drop the
              // rest
    };
    // Error text and undo information, for the few requests that carry them (a Parse, an injected message, a
    // stand-in for an error); applied when the request fails or the server skips it after an earlier error.
    struct Extra {
      std::string error_code;  // On::error: the SQLSTATE and message the client gets instead of the server's
      std::string error;
      std::string client_name;  // a named Parse registered optimistically for this client
      StatementPtr stmt;
      std::string server_added;    // a statement recorded as present on the server
      std::string server_removed;  // a statement evicted by this Close
      // A Query whose text pgward rewrote: the names it replaced (to put the client's back into an error) and
      // the statements its PREPAREs registered (forgotten again if it fails).
      std::vector<NameSwap> swaps;
      std::vector<std::pair<std::string, StatementPtr>> prepared;
      std::vector<std::string> evicted;  // server statements to close once the query has run
      // DEALLOCATE / DISCARD ALL: the client's names they drop, forgotten only once the query succeeded.
      std::vector<std::string> forget;
      bool forget_all = false;
      bool uses_missing = false;   // the text names kMissingStatement (a name the client does not have)
      bool unnamed_parse = false;  // the client's own unnamed Parse
      bool injected_unnamed = false;
      StatementPtr prev_unnamed;
      bool prev_unnamed_on_server = false;
    };
    char request = 0;  // the frontend message type sent
    On on = On::forward;
    std::unique_ptr<Extra> extra;  // absent for plain requests: queueing one then allocates nothing
    Extra& more() {
      if (!extra) extra = std::make_unique<Extra>();
      return *extra;
    }
  };
  // Rewrites one whole extended-protocol message (Parse, Bind, Describe, Close), appending what goes to the
  // server to `wire` and queueing the responses to expect. False when the message is malformed.
  bool rewrite_message(char type, std::string_view message, std::string& wire);
  void ensure_on_server(const StatementPtr& stmt, std::string& wire);
  // A simple Query: ends the unnamed statement, and every prepared-statement name in its text is put in
  // this client's namespace. True when it rewrote the query (appending [span, pos) and the new message to
  // `wire` and advancing both).
  bool note_simple_query(std::string_view message, std::string& wire, std::size_t& span, std::size_t& pos);
  // The SQL text with each statement name it holds (PREPARE, EXECUTE, DEALLOCATE...) replaced by the server's
  // name of this client's statement, or by a name no statement has when the client has none of that name.
  // What must reach the server first (a statement re-created on this server) is appended to `wire`.
  // `simple_query`: the text is a Query's, so a statement made by SQL PREPARE can be re-created before it.
  std::string rewrite_statement_names(std::string_view sql, const protocol::sql::Scan& scan,
                                      std::string& wire, bool simple_query, Expect::Extra& notes);
  // Makes sure the linked server holds `stmt` under its server name; false when that cannot be done here (a
  // statement made by SQL PREPARE, inside an extended-protocol batch).
  bool make_present(const StatementPtr& stmt, std::string& wire, bool simple_query);
  // Room for one more statement on the linked server (LRU eviction with Close), before a simple query.
  void evict_for_one(std::string& wire);
  // Statements this server holds that another client made with SQL PREPARE: closed before this client's
  // first message, so that no client ever reaches another's.
  void drop_foreign_sql_statements(std::string& wire);
  // Closes, before the client's next batch, what an earlier query's PREPAREs evicted; and what
  // drop_foreign_sql_statements() closes. One Close per name and one Sync.
  void close_on_server(std::string& wire, const std::vector<std::string>& names);
  // The client state a successful query's DEALLOCATE / DISCARD ALL drops.
  void forget_on_success(const Expect::Extra& x);
  // Closes kMissingStatement on the server before a stand-in uses it: whatever a client may have created
  // under that name by means pgward cannot see (dynamic SQL), the stand-in then fails as it must.
  void close_missing(std::string& wire, bool simple_query);
  // How PostgreSQL reads this client's SQL text now (standard_conforming_strings, client_encoding).
  protocol::sql::Dialect dialect() const;
  void forget_server_statements();
  // Refuses one client message by having the server fail a stand-in for it, appended to `wire`, with
  // `sqlstate` and `message` as the error the client gets.
  void refuse_message(std::string& wire, char type, std::string_view sqlstate, std::string message);
  void expect(char request, Expect::On on = Expect::On::forward);
  void undo(const Expect& e, ServerConn& server, bool failed);
  enum class Disposition { forward, drop, replace };
  // What to do with one server message, given the requests outstanding; pops the request it completes.
  // `body` is the whole message body for ReadyForQuery, ParameterStatus and ErrorResponse.
  Disposition answer(char type, std::string_view body, ServerConn& server, std::string_view& replacement);

  Proxy& proxy_;
  tcp::socket client_;
  const std::uint64_t id_;
  std::string peer_;

  // Client receive buffer: bytes [cpos_, cend_) are unread. Freed while the client is idle.
  std::string cbuf_;
  std::size_t cpos_ = 0;
  std::size_t cend_ = 0;
  std::size_t client_pass_ = 0;      // bytes of the current client message still to forward unexamined
  std::size_t client_drop_ = 0;      // bytes of the current client message still to discard
  std::size_t client_want_ = 0;      // size of a message that must be read whole before it is handled
  std::size_t buffer_reserved_ = 0;  // taken from max_buffer_total for it
  bool relaying_ = false;            // client_loop runs (login has its own timeout)
  bool stalled_ = false;             // client_message_timeout fired
  bool stall_armed_ = false;
  bool reading_client_ = false;       // fill_client waits for the client's bytes
  std::uint64_t messages_seen_ = 0;   // client message headers read so far
  std::uint64_t stall_messages_ = 0;  // messages_seen_ when the unfinished message was first seen
  std::chrono::steady_clock::time_point stall_since_{};
  std::uint64_t stall_generation_ = 0;
  std::unique_ptr<asio::steady_timer> stall_timer_;
  // An ErrorResponse for the client that ends the session; said by whichever side writes to the client
  // (server_loop while a server is linked).
  std::string farewell_;
  bool discard_until_sync_ =
      false;  // after a failed checkout in the extended protocol, as the server would do
  char discard_status_ = protocol::kTxIdle;  // the ReadyForQuery status that ends the discarding

  // Login results.
  std::shared_ptr<const config::Config> config_;
  std::optional<config::Database> resolved_database_;  // what database_ points at
  const config::Database* database_ = nullptr;
  PoolEntry* pool_ = nullptr;
  std::string user_;
  Params client_params_;  // what this client has in force, whatever server it lands on
  // params_fingerprint(client_params_), recomputed only after client_params_ changed (login, a SET reported
  // back).
  ParamsFingerprint client_fingerprint_{};
  bool client_params_changed_ = true;
  protocol::CancelRequest key_{};
  bool registered_ = false;
  bool counted_ = false;

  // Link state, valid while server_ is set.
  std::shared_ptr<ServerConn> server_;
  // server_'s place in the pool: unlink() gives it back; a session that ends still linked closes the server.
  pool::Lease lease_;
  std::int64_t pending_ = 0;  // Sync, Query and FunctionCall messages without their ReadyForQuery yet
  bool ext_open_ = false;  // extended-protocol messages sent since the last Sync (Flush-ed portals and such)
  char tx_status_ = protocol::kTxIdle;
  std::size_t server_pass_ = 0;  // bytes of the current server message still to forward unexamined
  std::size_t server_drop_ = 0;  // bytes of the current server message still to discard
  bool client_gone_ = false;
  bool server_write_busy_ = false;    // client_loop is writing to the linked server
  bool client_write_failed_ = false;  // server_loop's write to the client broke off
  bool release_wanted_ = false;       // see request_release()
  bool cancel_unsure_ = false;        // one may still arrive: the server is closed, never reused
  std::int64_t client_waits_ = 0;     // the client's own Sync, Query and FunctionCall messages among pending_
  bool in_doubt_ = false;             // see note_in_flight(); cleared when the server is idle again
  bool unnamed_may_commit_ = true;    // the client's last unnamed Parse could be a COMMIT
  // commit_resolution = "verify": the transaction id learnt just before the COMMIT in flight ("" when the
  // transaction wrote nothing and so has none); nullopt when not learnt.
  std::optional<std::string> commit_txid_;

  // After the server died under a client inside a transaction block, pgward answers for the lost transaction
  // until the client ends it: `unreported` while the client has not heard of the loss yet, `aborted` once it
  // has (the next server is then put in a failed transaction, so that PostgreSQL answers the rest).
  enum class Lost : std::uint8_t { none, unreported, aborted };
  Lost lost_ = Lost::none;
  std::string lost_detail_;   // what PostgreSQL said as it closed the lost server, for the client's error
  std::string server_fatal_;  // the linked server's FATAL message, held back from the client
  bool resolving_ = false;    // server_lost() is answering the client: client_loop waits for it
  std::unique_ptr<asio::steady_timer> resolved_;                // wakes client_loop when resolving_ ends
  std::unique_ptr<asio::steady_timer> idle_transaction_timer_;  // idle_in_transaction_timeout, once used

  bool rewrite_ = false;  // prepared-statement namespacing on (transaction/statement mode, cache size > 0)
  std::unordered_map<std::string, StatementPtr> statements_;  // this client's named statements
  std::uint64_t sql_prepares_ = 0;  // SQL PREPAREs so far: each gets a server name of its own
  StatementPtr unnamed_;            // this client's unnamed statement, until its next unnamed Parse or Query
  bool unnamed_on_server_ = false;  // the linked server holds it (sent during this link)
  std::deque<Expect> expects_;
  std::string wire_;         // client_loop's scratch: a rewritten batch for the server
  std::string server_wire_;  // server_loop's scratch: a filtered batch for the client
  std::string replacement_;  // the error text answer() hands back

  ClientTracker track_;  // client state and counters for /metrics and the admin views
};

}  // namespace pgward::proxy
