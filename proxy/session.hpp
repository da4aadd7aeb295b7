// One client connection: startup and authentication, then the relay between the client and the server linked
// to it. Two coroutines share the session: client_loop() reads the client and writes to the server (taking a
// server from the pool at the first message of a transaction), server_loop() reads the linked server and
// writes to the client, and gives the server back when the transaction gate says nothing is owed. Both run on
// the session's executor, so they interleave only at co_await points and share state without locks.
//
// Where a session is in its life is its Phase (client_info.hpp), written only by transition(). The pure
// bookkeeping lives in protocol/: the transaction gate (txn_gate.hpp), the queue of expected responses
// (response_queue.hpp), the plan for a lost server (lost_server.hpp), the SQL scanners (sql_text.hpp).
//
// The member functions are defined by topic:
//   session.cpp                life cycle: run, transition, link/unlink, cancel, drain, timers
//   session_client.cpp         the client socket: its buffer, reads, writes, errors, the stall deadline
//   session_login.cpp          startup, authentication, the welcome
//   session_tls.cpp            TLS towards the client: SSLRequest, direct TLS, what [client_tls] requires
//   session_checkout.cpp       a server from the pool, connect retries, the client's settings on it
//   session_statements.cpp     prepared statements: per-client names on shared servers
//   session_statements_sql.cpp the statement names in SQL text (PREPARE, EXECUTE, DEALLOCATE)
//   session_relay_client.cpp   client -> server: client_loop, one client message at a time
//   session_relay_server.cpp   server -> client: server_loop, the gate, the response queue
//   session_faults.cpp         what the client is told when its server dies under it
//   session_state.cpp          session state (SET, temporary tables, LISTEN...) that follows the client or
//   pins it
//   session_console.cpp        the admin console database (console.hpp): its login and its simple queries
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "config/config.hpp"
#include "protocol/codec.hpp"
#include "protocol/error_text.hpp"
#include "protocol/lost_server.hpp"
#include "protocol/response_queue.hpp"
#include "protocol/sql_text.hpp"
#include "protocol/txn_gate.hpp"
#include "proxy/client_stream.hpp"
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
  // End of a drain: FATAL 57P01 to the client, then close. Call on the session's executor.
  void terminate();
  // A CancelRequest with this client's key, on the session's executor: sent to the linked server, which is
  // then held until PostgreSQL has taken the cancel, so that it can only ever stop this client's work.
  void forward_cancel();

 private:
  enum class LoginResult { ok, closed, cancel_request, console };
  using Lost = protocol::LostPlan::Lost;
  // Undo information for the few requests that carry it (a Parse, an injected message, a stand-in for an
  // error); applied when the request fails or the server skips it after an earlier error.
  struct Notes {
    std::string error_code;  // On::error: the SQLSTATE and message the client gets instead of the server's
    std::string error;
    std::string client_name;  // a named Parse registered optimistically for this client
    StatementPtr stmt;
    std::string server_added;    // a statement recorded as present on the server
    std::string server_removed;  // a statement evicted by this Close
    // A Query whose text pgward rewrote: the names it replaced (to put the client's back into an error) and
    // the statements its PREPAREs registered (forgotten again if it fails).
    std::vector<protocol::NameSwap> swaps;
    std::vector<std::pair<std::string, StatementPtr>> prepared;
    std::vector<std::string> evicted;  // server statements to close once the query has run
    // DEALLOCATE / DISCARD ALL: the client's names they drop, forgotten only once the query succeeded.
    std::vector<std::string> forget;
    bool forget_all = false;
    bool uses_missing = false;   // the text names kMissingStatement (a name the client does not have)
    bool unnamed_parse = false;  // the client's own unnamed Parse
    StatementPtr prev_unnamed;
    bool prev_unnamed_on_server = false;
  };
  using Expected = protocol::Expected<Notes>;
  // Marks (Expected::mark): undo information that needs no Notes, for what comes once per transaction.
  static constexpr std::uint8_t kUnnamedAgain = 1;     // an unnamed Parse of the text unnamed_ holds already
  static constexpr std::uint8_t kWasOnServer = 2;      // (with kUnnamedAgain) the server held it before
  static constexpr std::uint8_t kInjectedUnnamed = 4;  // pgward's Parse of unnamed_ on a server lacking it
  // What became of one rewritable message: it goes to the server as the client wrote it (after whatever
  // was appended to wire_ first), a rewritten copy of it went into wire_, or it is malformed.
  enum class Rewrite : std::uint8_t { as_is, rewritten, malformed };
  struct QueueHooks;  // what the response queue asks of the session (session_statements.cpp)
  using Answer = protocol::ResponseQueue<Notes>::Answer;
  // A span of a receive buffer: [span, pos) is taken and goes out in one write; pos is where reading stands.
  struct Cursor {
    std::size_t pos = 0;
    std::size_t span = 0;
  };
  // What one client message asks of client_loop: go on, read more first, end the session, or wait for
  // something (take_client_message_slowly).
  enum class Step : std::uint8_t { next, need_more, stop, wait };
  // One client message, as take_client_message() found it.
  struct ClientMessage {
    char type = 0;
    std::size_t total = 0;          // its size, header included
    std::string_view message;       // what of it is in the buffer
    bool whole = false;             // all of it is
    bool too_big = false;           // over max_buffer_per_client, and pgward must see it whole: refused
    bool over_budget = false;       // max_buffer_total has no room for it: refused
    bool lost_query = false;        // a Query after a lost transaction: pgward may answer it
    bool violation = false;         // malformed, or a type no client may send, while unlinked: 08P01
    std::string_view header_error;  // read_header()'s (static) text for a malformed header
  };
  // What server_loop makes of a ReadyForQuery or ParameterStatus.
  enum class Seen : std::uint8_t { ok, bad, violation, release };
  // What server_loop found in a batch of server bytes.
  struct ServerScan {
    bool release = false;              // a ReadyForQuery made let_go_due() true
    bool statement_violation = false;  // statement mode: a transaction block was opened
    bool bad = false;                  // a malformed message
  };

  // ---- life cycle (session.cpp) ----
  asio::awaitable<void> run();
  // The only writer of phase_: also moves the gauges and /api/clients, and the cancel slot.
  void transition(Phase next);
  asio::awaitable<bool> link(bool fatal);
  // Makes `lease` the linked server (from the pool, or back after settle_state()) and starts server_loop.
  void attach(pool::Lease lease, char tx_status);
  // Gives the linked server back (reusable or closed); the phase becomes `next`.
  void unlink(bool reusable, Phase next);
  // Takes the linked server off the session without giving it back: the caller finishes with it, then
  // calls give_back() (a lease dropped on the way closes the server).
  pool::Lease detach(Phase next);
  // Returns a server to the pool (closed unless `reusable`, and never reused after an unconfirmed cancel).
  void give_back(pool::Lease lease, bool reusable);
  // The phase after the server goes: idle, or closing once the client side has ended.
  Phase unlinked_phase() const { return client_gone_ ? Phase::closing : Phase::idle; }
  // Nothing of anyone is in flight on the linked server (as far as the protocol and the bytes go).
  bool quiet() const;
  // quiet(), and nothing holds the server to this client: it may go back to the pool.
  bool releasable() const;
  // server_loop has the link to end: releasable() (the server goes back) or settle_due() (the session state
  // is learnt first; see settle_state()).
  bool let_go_due() const { return releasable() || settle_due(); }
  // Ends server_loop's hold on the link when let_go_due(): gives the server back, or settles (after which a
  // pinned client's server has a server_loop of its own again).
  asio::awaitable<void> let_go(ServerConn& s);
  // Asks server_loop, parked on the server's socket, to give the server back now that a reason to hold it
  // (half a client message forwarded, a cancel on its way) is gone.
  void request_release();
  void cancel_done(ServerConn& server, CancelDelivery delivery);
  void arm_idle_transaction_timer();
  void idle_transaction_expired();

  // ---- login (session_login.cpp) ----
  asio::awaitable<LoginResult> startup();
  asio::awaitable<LoginResult> accept_startup(protocol::StartupPacket& sp);
  asio::awaitable<bool> authenticate();
  // `verifier`: the user's SCRAM verifier, nullptr when none can be used; `secret`: the stored secret, for
  // telling why a login failed.
  asio::awaitable<bool> authenticate_scram(std::string& out, const std::string& failed,
                                           const protocol::auth::ScramVerifier* verifier,
                                           const std::string* secret);
  asio::awaitable<bool> finish_login();

  // ---- the admin console (session_console.cpp) ----
  // After authentication as `user_` for the console database: a console user goes on (LoginResult::console),
  // anyone else gets FATAL 28000.
  asio::awaitable<LoginResult> accept_console();
  // The welcome, then one simple Query at a time, each answered by proxy_.console() on the main io_context.
  asio::awaitable<void> serve_console();
  // One client message of a console session; false when the session ends.
  asio::awaitable<bool> console_message(const protocol::Message& msg);
  asio::awaitable<bool> console_send(std::string bytes);
  // ---- TLS towards the client (session_tls.cpp) ----
  // PostgreSQL 17 direct TLS: a client whose first byte opens a TLS handshake instead of a startup packet.
  // Runs the handshake when it does; false when the connection is to end.
  asio::awaitable<bool> detect_direct_tls();
  // The answer to an SSLRequest: 'S' and the handshake when [client_tls] allows TLS, else 'N'.
  asio::awaitable<bool> answer_ssl_request();
  asio::awaitable<bool> accept_tls(bool direct);
  // What [client_tls] mode asks of a client that sent its startup packet: TLS (require), a verified
  // certificate (verify-ca), one that names the user (verify-full). Sends the FATAL and returns false when
  // the client falls short.
  asio::awaitable<bool> check_client_tls();

  // ---- checkout (session_checkout.cpp) ----
  // Takes a server from the pool (connecting one if a slot is free) and brings its session state in line with
  // this client's. Sends the client an ErrorResponse (non-fatal unless `fatal`) and returns an empty lease
  // when that fails.
  asio::awaitable<pool::Lease> acquire(bool fatal);
  // A server (a ServerConn) from the pool by `deadline`: an idle one, or a new one (failed connects are
  // retried with backoff). An empty lease with `error` set when none could be had.
  asio::awaitable<pool::Lease> checkout(pool::Clock::time_point deadline, std::optional<ProxyError>& error);
  // Opens a server on `slot`, reserved by the checkout.
  asio::awaitable<pool::Lease> connect(pool::ConnectSlot slot, pool::Clock::time_point deadline,
                                       std::optional<ProxyError>& error);
  // Whether the server was last found to match settings equal to this client's: one comparison, checked
  // before restore_params() so that the common case makes no coroutine frame.
  bool params_in_line(const ServerConn& server);
  asio::awaitable<std::optional<ProxyError>> restore_params(ServerConn& server);

  // ---- the client socket (session_client.cpp) ----
  asio::awaitable<bool> fill_client();
  asio::awaitable<bool> fill_client_tls_idle();
  asio::awaitable<std::optional<protocol::Message>> read_client_message(std::uint32_t max_length);
  asio::awaitable<bool> send_client(std::string_view bytes);
  asio::awaitable<void> send_error(std::string_view sqlstate, std::string_view message, bool fatal,
                                   std::string_view detail = {});
  asio::awaitable<void> send_ready_for_query(char status = protocol::kTxIdle);
  // Appends an ErrorResponse (ERROR) and counts it.
  void append_error(std::string& out, std::string_view sqlstate, std::string_view message,
                    std::string_view detail = {});
  std::string_view client_unread() const;
  void consume_client(std::size_t n);
  // client_message_timeout: armed while a client message is unfinished, disarmed at a message boundary.
  void watch_stall(bool mid_message);
  void stall_expired(std::uint64_t generation);
  void arm_stall_timer(std::chrono::steady_clock::time_point at);
  // Back to the usual client buffer once the large message that needed more is handled.
  void shrink_client_buffer();

  // ---- the relay (session_relay_client.cpp, session_relay_server.cpp) ----
  asio::awaitable<void> client_loop();
  // Takes the client message at c.pos without waiting for anything: forwarded or rewritten bytes
  // accumulate between c.span and c.pos. Step::wait leaves it to take_client_message_slowly().
  Step take_client_message(Cursor& c, ClientMessage& m);
  // A message that needs pgward to wait: an error to send, the end of a discarded batch, or no server linked
  // (pgward answers it, or links a server for it).
  asio::awaitable<Step> take_client_message_slowly(const ClientMessage& m, Cursor& c);
  // A client message to the linked server: counted, noted, rewritten where needed, queued for the write.
  void forward_client_message(const ClientMessage& m, Cursor& c);
  // Whether a message larger than the usual buffer can be taken whole: reserves from max_buffer_total.
  bool reserve_for(std::size_t total, std::size_t available);
  asio::awaitable<void> client_finished();
  asio::awaitable<void> server_loop(std::shared_ptr<ServerConn> server);
  ServerScan scan_server(ServerConn& s, Cursor& c);
  Seen inspect_server_message(char type, std::string_view body, ServerConn& s);
  asio::awaitable<void> end_statement_violation(ServerConn& s);
  asio::awaitable<void> server_finished(ServerConn& s);
  // Refuses one client message by having the server fail a stand-in for it, appended to `wire`, with
  // `sqlstate` and `message` as the error the client gets.
  void refuse_message(std::string& wire, char type, std::string_view sqlstate, std::string message);

  // ---- prepared statements (session_statements.cpp), transaction and statement modes ----
  Expected& expect(char request, protocol::On on = protocol::On::forward);
  // Rewrites one whole extended-protocol message (Parse, Bind, Describe, Close) at c.pos, queueing the
  // responses to expect. What must go to the server other than the message as written goes into wire_,
  // through wire_for(c). `parse_again`: the message is a Parse for which unnamed_again() holds.
  Rewrite rewrite_message(char type, std::string_view message, Cursor& c, bool parse_again);
  Rewrite rewrite_parse(std::string_view body, Cursor& c, bool again);
  Rewrite rewrite_bind_describe(char type, std::string_view message, Cursor& c);
  // wire_, once what precedes c.pos in the buffer ([span, pos)) is in it: where pgward writes in the
  // client's place.
  std::string& wire_for(Cursor& c);
  // The body of a Parse of the unnamed statement with the very text unnamed_ holds, which named no statement.
  bool unnamed_again(std::string_view parse_body) const;
  bool unnamed_touches_session() const { return !unnamed_ || unnamed_->touches_session; }
  void ensure_on_server(const StatementPtr& stmt, std::string& wire);
  // A simple Query: ends the unnamed statement, and every prepared-statement name in its text is put in
  // this client's namespace. True when it rewrote the query (appending [span, pos) and the new message to
  // wire_ and advancing both).
  bool note_simple_query(std::string_view message, Cursor& c);
  // The SQL text with each statement name it holds (PREPARE, EXECUTE, DEALLOCATE...) replaced by the server's
  // name of this client's statement, or by a name no statement has when the client has none of that name.
  // What must reach the server first (a statement re-created on this server) is appended to `wire`.
  // `simple_query`: the text is a Query's, so a statement made by SQL PREPARE can be re-created before it.
  std::string rewrite_statement_names(std::string_view sql, const protocol::sql::Scan& scan,
                                      std::string& wire, bool simple_query, Notes& notes);
  // The server name one statement reference of the text becomes; "" when the text must be refused (`notes`
  // then holds the error).
  std::string server_name_for(const protocol::sql::StatementRef& ref, std::string& wire, bool simple_query,
                              Notes& notes);
  // Makes sure the linked server holds `stmt` under its server name; false when that cannot be done here (a
  // statement made by SQL PREPARE, inside an extended-protocol batch).
  bool make_present(const StatementPtr& stmt, std::string& wire, bool simple_query);
  // Room for one more statement on the linked server (LRU eviction with Close); true when it closed any.
  bool evict_for_one(std::string& wire);
  // Statements this server holds that another client made with SQL PREPARE: closed before this client's
  // first message, so that no client ever reaches another's.
  void drop_foreign_sql_statements(std::string& wire);
  // Closes, before the client's next batch, what an earlier query's PREPAREs evicted; and what
  // drop_foreign_sql_statements() closes. One Close per name and one Sync.
  void close_on_server(std::string& wire, const std::vector<std::string>& names);
  // A Sync of pgward's own, its ReadyForQuery swallowed.
  void inject_sync(std::string& wire);
  // The client state a successful query's DEALLOCATE / DISCARD ALL drops.
  void forget_on_success(const Notes& x);
  // Closes kMissingStatement on the server before a stand-in uses it: whatever a client may have created
  // under that name by means pgward cannot see (dynamic SQL), the stand-in then fails as it must.
  void close_missing(std::string& wire, bool simple_query);
  // How PostgreSQL reads this client's SQL text now (standard_conforming_strings, client_encoding).
  protocol::sql::Dialect dialect() const;
  void forget_server_statements();
  void undo(const Notes& x, ServerConn& server, bool failed);
  void undo_mark(std::uint8_t mark, bool failed);
  // What to do with one server message, given the requests outstanding (see ResponseQueue::answer).
  Answer answer(char type, std::string_view body, ServerConn& server);
  // The server is gone: undoes what was assumed of every request still queued.
  void abandon_expected(ServerConn& server);

  // ---- session state (session_state.cpp) ----
  // What one statement text the client sends may do to its session (protocol::sql::session_effects): a
  // setting to learn once the transaction ends, a pin. Returns the 0A000 message when session_state =
  // "error" refuses it. `whole` false: the text could not be seen, so it is learnt afterwards.
  std::optional<std::string> note_session_text(std::string_view sql, bool whole);
  // The link is quiet and the client's session state may have changed since it was last learnt.
  bool settle_due() const;
  // Asks the server, taken off the session meanwhile (phase resolving), what session state the client now
  // has (settings, temporary objects, LISTEN, advisory locks, WITH HOLD cursors), puts its reset connection
  // values back, and then gives the server back or keeps the client pinned to it (see let_go()).
  asio::awaitable<void> settle_state(ServerConn& s);
  // The query settle_state() runs (never empty when settle_due(): a snapshot in transaction and statement
  // modes, the startup values to put back in session mode).
  std::string probe_sql(const ServerConn& s, bool snapshot) const;
  // The probe's rows: the client's settings and the server's are now what they list; the pin they imply.
  PinReason apply_probe(ServerConn& s, const std::vector<std::pair<std::string, std::string>>& rows);
  void set_pin(PinReason reason);
  // A server a client leaves with state that cannot follow it: DISCARD ALL (and pgward forgets what the
  // server held). True when the server may be reused.
  asio::awaitable<bool> reset_server(ServerConn& s);

  // ---- faults (session_faults.cpp) ----
  // Notes whether the client message about to go to the server leaves the outcome of committed work unknown
  // should the server be lost before its answer: a statement outside a transaction block, or a COMMIT.
  void note_in_flight(char type, std::string_view message, bool whole);
  // The linked server died under the client: tells the client what became of its work (one ErrorResponse,
  // or the verified outcome of its COMMIT) and keeps the session going where the protocol allows.
  asio::awaitable<void> server_lost(ServerConn& server);
  // The ERROR (or a verified COMMIT's answers) that stands in for what the client waited for.
  asio::awaitable<std::string> lost_answer(const protocol::LostPlan& plan,
                                           const std::optional<std::string>& committed,
                                           const std::optional<std::string>& txid, const std::string& said);
  // commit_resolution = "verify": what became of transaction `txid`, asked on another server connection.
  enum class Outcome { committed, aborted, unknown };
  asio::awaitable<Outcome> resolve_commit(const std::string& txid);
  // The first client message after its server died while it sat idle in a transaction block: answered by
  // pgward as PostgreSQL would answer in a failed transaction.
  asio::awaitable<void> answer_lost_transaction(char type, std::string_view message);
  asio::awaitable<void> wait_resolved();

  Proxy& proxy_;
  ClientStream client_;
  std::shared_ptr<const TlsContexts> tls_;  // the contexts in force when the client connected
  const std::uint64_t id_;
  // The data path's trace and debug lines, known once: the log level is set at start and never changes
  // (app/main.cpp), and asking spdlog costs a registry lookup per message.
  const bool log_trace_;
  const bool log_debug_;
  std::string peer_;
  Phase phase_ = Phase::login;

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
  // After a failed checkout in the extended protocol, or a lost server mid-batch: client messages are
  // dropped up to the next Sync, as the server would do, which is answered with this status.
  bool discard_until_sync_ = false;
  char discard_status_ = protocol::kTxIdle;
  // The client side of the relay has ended (client_loop is done, a write to the client failed, a FATAL went
  // out). While a server is still linked, server_loop then cleans it up and unlinks it.
  bool client_gone_ = false;
  bool client_write_failed_ = false;  // server_loop's write to the client broke off

  // Login results.
  std::shared_ptr<const config::Config> config_;
  std::optional<config::Database> resolved_database_;  // what database_ points at
  // The keys this client's SCRAM proof revealed, from authentication until the login hands them to the pool
  // (SCRAM pass-through); then wiped.
  std::optional<protocol::auth::ScramKeys> scram_keys_;
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

  // Session state (session_state.cpp). track_state_: SET and friends are followed and pins are kept
  // (session_state "track" or "error"; in session mode only RESET needs pgward).
  bool track_state_ = false;
  Params connection_;          // the client's startup settings: what RESET returns to
  bool state_dirty_ = false;   // a statement may have changed session state since it was last learnt
  bool state_resets_ = false;  // ... and may have reset a setting to the server's value
  PinReason text_pin_ =
      PinReason::none;  // seen in the text and invisible to the probe (LOAD, PREPARE TRANSACTION)
  PinReason pin_ = PinReason::none;  // held on the linked server until this clears or the client ends
  // Custom settings ("app.tenant") the client's text named: PostgreSQL lists none of them in pg_settings, so
  // the probe asks for each by name. Bounded by kMaxCustomSettings (beyond it the client is pinned).
  std::vector<std::string> custom_names_;

  // Link state, valid while linked.
  std::shared_ptr<ServerConn> server_;
  // server_'s place in the pool: unlink() gives it back; a session that ends still linked closes the server.
  pool::Lease lease_;
  protocol::TxnGate gate_;
  std::size_t server_pass_ = 0;     // bytes of the current server message still to forward unexamined
  std::size_t server_drop_ = 0;     // bytes of the current server message still to discard
  bool server_write_busy_ = false;  // client_loop is writing to the linked server
  bool release_wanted_ = false;     // see request_release()
  bool cancel_unsure_ = false;      // one may still arrive: the server is closed, never reused
  bool in_doubt_ = false;           // see note_in_flight(); cleared when the client waits for nothing
  bool unnamed_may_commit_ = true;  // the client's last unnamed Parse could be a COMMIT
  // commit_resolution = "verify": the transaction id learnt just before the COMMIT in flight ("" when the
  // transaction wrote nothing and so has none); nullopt when not learnt.
  std::optional<std::string> commit_txid_;

  // After the server died under a client inside a transaction block, pgward answers for the lost transaction
  // until the client ends it (see LostPlan::Lost).
  Lost lost_ = Lost::none;
  std::string lost_detail_;   // what PostgreSQL said as it closed the lost server, for the client's error
  std::string server_fatal_;  // the linked server's FATAL message, held back from the client
  std::unique_ptr<asio::steady_timer> resolved_;                // wakes client_loop when resolving ends
  std::unique_ptr<asio::steady_timer> idle_transaction_timer_;  // idle_in_transaction_timeout, once used

  bool rewrite_ = false;  // prepared-statement namespacing on (transaction/statement mode, cache size > 0)
  std::unordered_map<std::string, StatementPtr> statements_;  // this client's named statements
  std::uint64_t sql_prepares_ = 0;  // SQL PREPAREs so far: each gets a server name of its own
  StatementPtr unnamed_;            // this client's unnamed statement, until its next unnamed Parse or Query
  bool unnamed_on_server_ = false;  // the linked server holds it (sent during this link)
  bool parse_touches_session_ = true;  // what note_session_text() found of the last text: may_touch_session()
  protocol::ResponseQueue<Notes> expects_;
  std::string wire_;         // client_loop's scratch: a rewritten batch for the server
  std::string server_wire_;  // server_loop's scratch: a filtered batch for the client

  // A console session (no pool, no server): console_busy_ while a command runs and its answer goes out, so
  // that a drain's 57P01 waits for it (console_terminate_) instead of interleaving with it.
  bool console_busy_ = false;
  bool console_terminate_ = false;
  bool console_discard_ = false;  // after a refused extended-protocol message: dropped up to the Sync

  ClientTracker track_;  // gauges, counters and the admin views' copy of the phase
};

}  // namespace pgward::proxy
