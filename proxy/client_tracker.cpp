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
  }
  return "unknown";
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
  if (proxy_ && info_) proxy_->unregister_session(info_->id);
}

stats::Gauge* ClientTracker::gauge(stats::PoolStats& s, ClientState state) {
  switch (state) {
    case ClientState::idle: return &s.clients_idle;
    case ClientState::waiting: return &s.clients_waiting;
    case ClientState::active: return &s.clients_active;
    case ClientState::login: return nullptr;
  }
  return nullptr;
}

void ClientTracker::start(Proxy& proxy, std::shared_ptr<Session> session, std::uint64_t id, std::string peer,
                          boost::asio::any_io_executor exec) {
  proxy_ = &proxy;
  info_ = std::make_shared<ClientInfo>(id, std::move(peer), session, exec);
  proxy.register_session(info_);
}

void ClientTracker::logged_in(PoolEntry* pool, std::string_view database, std::string_view user,
                              bool linked) {
  if (info_)
    info_->set_identity({std::string(database), std::string(user), pool ? pool->pool.user() : std::string()});
  set(pool, linked ? ClientState::active : ClientState::idle);
}

void ClientTracker::set(PoolEntry* pool, ClientState state) {
  stats::PoolStats* next = pool ? &pool->stats : stats_;
  if (next == stats_ && state == state_) return;
  if (stats_) {
    if (auto* g = gauge(*stats_, state_)) g->fetch_sub(1, std::memory_order_relaxed);
  }
  if (next) {
    if (auto* g = gauge(*next, state)) g->fetch_add(1, std::memory_order_relaxed);
  }
  if (pool) pool_ = pool;
  stats_ = next;
  state_ = state;
  if (info_) info_->state.store(state, std::memory_order_relaxed);
}

ClientTracker::Clock::time_point ClientTracker::begin_wait(PoolEntry* pool) {
  // A checkout during login leaves the client in `login` for the views, but the wait still counts.
  if (state_ != ClientState::login) set(pool, ClientState::waiting);
  if (pool) {
    pool_ = pool;
    stats_ = stats_ ? stats_ : &pool->stats;
  }
  return Clock::now();
}

void ClientTracker::end_wait(Clock::time_point since) {
  if (stats_) stats_->wait.observe(Clock::now() - since);
  if (state_ == ClientState::waiting) set(pool_, ClientState::idle);
}

void ClientTracker::linked(std::uint64_t server_id) {
  if (state_ != ClientState::login) set(pool_, ClientState::active);
  if (info_) info_->server_id.store(server_id, std::memory_order_relaxed);
}

void ClientTracker::unlinked() {
  if (state_ != ClientState::login) set(pool_, ClientState::idle);
  if (info_) info_->server_id.store(0, std::memory_order_relaxed);
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
