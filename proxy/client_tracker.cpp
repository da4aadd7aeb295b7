#include "proxy/client_tracker.hpp"

#include "protocol/codec.hpp"
#include "protocol/sqlstate.hpp"
#include "proxy/proxy.hpp"

namespace pgward::proxy {

const char* to_string(ClientState s) {
  switch (s) {
    case ClientState::login: return "login";
    case ClientState::idle: return "idle";
    case ClientState::waiting: return "waiting";
    case ClientState::active: return "active";
    case ClientState::closing: return "closing";
  }
  return "unknown";
}

const char* to_string(Phase p) {
  switch (p) {
    case Phase::login: return "login";
    case Phase::idle: return "idle";
    case Phase::waiting: return "waiting";
    case Phase::linked: return "linked";
    case Phase::resolving: return "resolving";
    case Phase::closing: return "closing";
  }
  return "unknown";
}

const char* to_string(PinReason r) {
  switch (r) {
    case PinReason::none: return "none";
    case PinReason::temp: return "temp";
    case PinReason::listen: return "listen";
    case PinReason::advisory_lock: return "advisory_lock";
    case PinReason::cursor: return "cursor";
    case PinReason::load: return "load";
    case PinReason::prepared_transaction: return "prepared_transaction";
    case PinReason::unknown: return "unknown";
  }
  return "unknown";
}

ClientState client_state(Phase p) {
  switch (p) {
    case Phase::login: return ClientState::login;
    case Phase::idle: return ClientState::idle;
    case Phase::waiting: return ClientState::waiting;
    case Phase::linked:
    case Phase::resolving: return ClientState::active;
    case Phase::closing: return ClientState::closing;
  }
  return ClientState::closing;
}

namespace {

// The 'C' (SQLSTATE) field of an ErrorResponse body ("Error and Notice Message Fields"), empty when absent or
// malformed. Scans in place: no allocation.
std::string_view find_sqlstate(std::string_view body) {
  std::size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    const char code = body[pos++];
    const std::size_t end = body.find('\0', pos);
    if (end == std::string_view::npos) return {};
    if (code == 'C') return body.substr(pos, end - pos);
    pos = end + 1;
  }
  return {};
}

}  // namespace

ClientTracker::~ClientTracker() {
  if (stats_) {
    if (auto* g = gauge(*stats_, state_)) g->fetch_sub(1, std::memory_order_relaxed);
  }
  set_pin(PinReason::none);
  if (proxy_ && info_) proxy_->unregister_session(info_->id);
}

stats::Gauge* ClientTracker::gauge(stats::PoolStats& s, ClientState state) {
  switch (state) {
    case ClientState::idle: return &s.clients_idle;
    case ClientState::waiting: return &s.clients_waiting;
    case ClientState::active: return &s.clients_active;
    case ClientState::login:
    case ClientState::closing: return nullptr;
  }
  return nullptr;
}

void ClientTracker::start(Proxy& proxy, std::shared_ptr<Session> session, std::uint64_t id, std::string peer,
                          boost::asio::any_io_executor exec) {
  proxy_ = &proxy;
  info_ = std::make_shared<ClientInfo>(id, std::move(peer), session, exec);
  proxy.register_session(info_);
}

void ClientTracker::set_pool(PoolEntry* pool) {
  // Called while the client is in login, which no gauge counts: nothing to move.
  pool_ = pool;
  stats_ = &pool->stats;
}

void ClientTracker::logged_in(std::string_view database, std::string_view user) {
  if (!info_) return;
  info_->set_identity({std::string(database), std::string(user), pool_ ? pool_->pool.user() : std::string()});
}

void ClientTracker::set_phase(Phase phase) {
  const ClientState state = client_state(phase);
  if (state != state_ && stats_) {
    if (auto* g = gauge(*stats_, state_)) g->fetch_sub(1, std::memory_order_relaxed);
    if (auto* g = gauge(*stats_, state)) g->fetch_add(1, std::memory_order_relaxed);
  }
  state_ = state;
  if (info_) info_->phase.store(phase, std::memory_order_relaxed);
}

void ClientTracker::set_pin(PinReason reason) {
  if (reason == pin_) return;
  if (stats_) {
    if (pin_ != PinReason::none)
      stats_->clients_pinned[static_cast<std::size_t>(pin_)].fetch_sub(1, std::memory_order_relaxed);
    if (reason != PinReason::none) {
      stats_->clients_pinned[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
      stats::add(stats_->pins[static_cast<std::size_t>(reason)]);
    }
  }
  pin_ = reason;
  if (info_) info_->pin.store(reason, std::memory_order_relaxed);
}

void ClientTracker::set_server(std::uint64_t server_id, const std::shared_ptr<const std::string>& tls) {
  if (!info_ || server_id == server_id_) return;
  server_id_ = server_id;
  // The description first: a reader that sees the id finds its description (or, briefly, none). Published
  // only when it is another one: a plain link never takes the lock, a TLS server's text is published once
  // per change of server. (The ClientInfo keeps the published text alive, so its address names it.)
  if (server_id && tls.get() != published_tls_) {
    info_->set_server_tls(server_id, tls);
    published_tls_ = tls.get();
  }
  info_->server_id.store(server_id, std::memory_order_relaxed);
}

void ClientTracker::waited(Clock::duration d) {
  if (stats_) stats_->wait.observe(d);
}

void ClientTracker::query_sent(std::int64_t pending) {
  if (pending > 0) return;  // pipelined behind one already timed
  const auto now = Clock::now();
  query_start_ = now;
  if (!in_tx_) {
    tx_start_ = now;
    in_tx_ = true;
  }
}

void ClientTracker::ready_for_query(char tx_status, std::int64_t pending) {
  if (!stats_) return;
  const auto now = Clock::now();
  stats::add(stats_->queries);
  stats_->query.observe(now - query_start_);
  if (pending > 0) query_start_ = now;  // the next one in a pipeline
  if (tx_status == protocol::kTxIdle && in_tx_) {
    stats::add(stats_->transactions);
    stats_->transaction.observe(now - tx_start_);
    in_tx_ = pending > 0;
    tx_start_ = now;
  }
}

void ClientTracker::server_error(std::string_view body) {
  count_error(find_sqlstate(body), stats::ErrorOrigin::server);
}

void ClientTracker::proxy_error(std::string_view sqlstate) {
  count_error(sqlstate, stats::ErrorOrigin::proxy);
}

void ClientTracker::count_error(std::string_view sqlstate, stats::ErrorOrigin origin) {
  if (!proxy_) return;
  auto& g = proxy_->stats();
  if (sqlstate == protocol::sqlstate::kTransactionResolutionUnknown) stats::add(g.commit_unknown);
  ClientInfo::Identity id;
  if (info_) id = info_->identity();
  g.errors.add(id.database, id.server_user, sqlstate.empty() ? "unknown" : sqlstate, origin);
}

}  // namespace pgward::proxy
