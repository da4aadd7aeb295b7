#include "proxy/proxy.hpp"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <csignal>

#include "asio/socket_close.hpp"
#include "protocol/auth.hpp"
#include "proxy/session.hpp"

namespace pgward::proxy {

using asio::as_tuple;
using asio::use_awaitable;

namespace {

// How many clients must have left since the peak before the upkeep gives free heap memory back to the system.
constexpr std::size_t kTrimAfterClientsLeft = 1000;

// Opens one server towards a pool's min_size on a slot maintain() reserved, for the idle list. A failure is
// reported on the slot, which then goes to the next waiter.
asio::awaitable<void> warm_up(Proxy& proxy, PoolEntry* e, pool::ConnectSlot slot) {
  auto server = std::make_shared<ServerConn>(co_await asio::this_coro::executor);
  const ServerTarget target = e->target();
  auto err = co_await server->login(target);
  if (auto tls = server->tls_handshake()) proxy.count_tls_handshake(TlsSide::server, *tls);
  if (err) {
    spdlog::warn("warming pool {}/{}: {}", e->pool.database(), e->pool.user(), err->message);
    slot.failed(err->sqlstate, err->message);
    co_return;
  }
  e->pool.set_server_params(server->params);
  slot.add_idle(std::move(server));
}

asio::ip::tcp::endpoint resolve_listen(const config::Endpoint& ep) {
  boost::system::error_code ec;
  if (ep.host == "*") return {asio::ip::address_v6::any(), ep.port};
  if (ep.host == "localhost") return {asio::ip::address_v4::loopback(), ep.port};
  auto addr = asio::ip::make_address(ep.host, ec);
  if (ec) throw std::runtime_error("bad listen address " + ep.host);
  return {addr, ep.port};
}

}  // namespace

Proxy::Proxy(std::shared_ptr<const config::Config> config, std::string config_path)
    : config_path_(std::move(config_path)),
      config_(std::move(config)),
      tls_(std::make_shared<const TlsContexts>(*config_)) {
  for (std::uint32_t i = 1; i < config_->workers; ++i)
    workers_.push_back(std::make_unique<asio::io_context>(1));
  if (!workers_.empty()) workers_.insert(workers_.begin(), nullptr);  // slot 0 is main_
  stats_.start_time =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Proxy::~Proxy() = default;

std::shared_ptr<const config::Config> Proxy::config() const {
  std::lock_guard lock(config_mu_);
  return config_;
}

std::shared_ptr<const TlsContexts> Proxy::tls() const {
  std::lock_guard lock(config_mu_);
  return tls_;
}

asio::io_context& Proxy::next_worker() {
  if (workers_.empty()) return main_;
  const std::size_t i = next_worker_++ % workers_.size();
  return i == 0 ? main_ : *workers_[i];
}

protocol::CancelRequest Proxy::register_client(std::shared_ptr<CancelSlot> slot) {
  std::lock_guard lock(cancel_mu_);
  for (;;) {
    protocol::CancelRequest key;
    protocol::auth::random_bytes(&key.process_id, sizeof key.process_id);
    protocol::auth::random_bytes(&key.secret_key, sizeof key.secret_key);
    key.process_id &= 0x7fffffff;  // clients print it as a pid: keep it positive
    if (key.process_id == 0) continue;
    if (cancel_slots_.emplace(std::pair{key.process_id, key.secret_key}, slot).second) return key;
  }
}

void Proxy::unregister_client(const protocol::CancelRequest& key) {
  std::lock_guard lock(cancel_mu_);
  cancel_slots_.erase({key.process_id, key.secret_key});
}

void Proxy::cancel(const protocol::CancelRequest& key) {
  std::shared_ptr<CancelSlot> slot;
  {
    std::lock_guard lock(cancel_mu_);
    auto it = cancel_slots_.find({key.process_id, key.secret_key});
    if (it != cancel_slots_.end()) slot = it->second;
  }
  if (!slot) {
    stats::add(stats_.cancel_ignored);
    spdlog::info("cancel request with an unknown key: ignored");
    return;
  }
  asio::post(slot->executor, [session = slot->session] {
    if (auto s = session.lock()) s->forward_cancel();
  });
}

bool Proxy::reserve_buffer(std::size_t n) {
  const auto limit = static_cast<std::int64_t>(config()->max_buffer_total);
  const auto want = static_cast<std::int64_t>(n);
  std::int64_t now = stats_.client_buffer_bytes.load(std::memory_order_relaxed);
  do {
    if (now + want > limit) {
      stats::add(stats_.client_buffer_refusals);
      return false;
    }
  } while (!stats_.client_buffer_bytes.compare_exchange_weak(now, now + want, std::memory_order_relaxed));
  return true;
}

void Proxy::release_buffer(std::size_t n) {
  stats_.client_buffer_bytes.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
}

bool Proxy::client_arrived() {
  const auto limit = config()->max_client_conn;
  if (clients_.fetch_add(1) >= limit) {
    --clients_;
    stats::add(stats_.clients_refused_max_conn);
    return false;
  }
  return true;
}

void Proxy::client_left() { --clients_; }

void Proxy::start_accept(asio::ip::tcp::acceptor& acceptor) {
  asio::co_spawn(
      main_,
      [this, &acceptor]() -> asio::awaitable<void> {
        for (;;) {
          auto& ctx = next_worker();
          auto [ec, sock] = co_await acceptor.async_accept(ctx, as_tuple(use_awaitable));
          if (ec) {
            if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
            spdlog::warn("accept failed: {}", ec.message());
            // Out of file descriptors and the like: back off instead of spinning.
            asio::steady_timer t(main_, std::chrono::milliseconds(100));
            co_await t.async_wait(as_tuple(use_awaitable));
            continue;
          }
          stats::add(stats_.clients_accepted);
          auto session = std::make_shared<Session>(*this, std::move(sock), next_client_id_++);
          session->start();
        }
      },
      asio::detached);
}

void Proxy::start_upkeep() {
  asio::co_spawn(
      main_,
      [this]() -> asio::awaitable<void> {
        asio::steady_timer timer(main_);
        std::size_t crowd = 0;  // the most clients logged in since memory was last given back
        for (;;) {
          timer.expires_after(std::chrono::seconds(1));
          auto [ec] = co_await timer.async_wait(as_tuple(use_awaitable));
          if (ec) co_return;
          // glibc keeps the heap that a crowd of clients grew and returns little of it once they leave (the
          // free chunks sit below live ones): hand the free pages back when many have gone. malloc_trim walks
          // the whole heap, so only then, not every second.
          const std::size_t logged_in = logged_in_clients();
          crowd = std::max(crowd, logged_in);
          if (crowd - logged_in >= kTrimAfterClientsLeft) {
            ::malloc_trim(0);
            crowd = logged_in;
          }
          std::vector<PoolEntry*> entries;
          {
            std::lock_guard lock(pools_mu_);
            for (auto& [k, e] : pools_) entries.push_back(e.get());
          }
          const auto now = pool::Clock::now();
          for (PoolEntry* e : entries) {
            if (draining_) break;
            for (pool::ConnectSlot& slot : e->pool.maintain(now))
              asio::co_spawn(next_worker(), warm_up(*this, e, std::move(slot)), asio::detached);
          }
        }
      },
      asio::detached);
}

ReloadResult Proxy::reload() {
  std::shared_ptr<const config::Config> fresh;
  std::shared_ptr<const TlsContexts> fresh_tls;
  try {
    fresh = std::make_shared<const config::Config>(config::load_config(config_path_, config().get()));
    // Certificates and keys are read again on every reload; a file that cannot be used keeps the old ones.
    fresh_tls = std::make_shared<const TlsContexts>(*fresh);
  } catch (const std::exception& e) {
    stats::add(stats_.reloads_failed);
    spdlog::error("reload failed, keeping the running configuration: {}", e.what());
    return {false, e.what()};
  }
  {
    std::lock_guard lock(config_mu_);
    if (fresh->listen != config_->listen) spdlog::warn("reload: [proxy] listen changes need a restart");
    if (fresh->workers != config_->workers) spdlog::warn("reload: [proxy] workers changes need a restart");
    if (fresh->io_backend != config_->io_backend)
      spdlog::warn("reload: [proxy] io_backend changes need a restart");
    if (fresh->admin_listen != config_->admin_listen)
      spdlog::warn("reload: [admin] listen changes need a restart");
    config_ = fresh;
    tls_ = fresh_tls;
  }
  {
    std::lock_guard lock(pools_mu_);
    for (auto& [key, entry] : pools_) {
      if (const auto db = fresh->resolve_database(key.first)) {
        entry->removed = false;
        entry->pool.update_settings(db->pool);
        entry->set_target(server_target_for(*fresh, *fresh_tls, *db, key.second));
      } else if (!entry->removed.exchange(true)) {
        // Gone from the file: clients already in keep their server pool until they leave, but nothing stays
        // warm and idle servers close at the next upkeep.
        auto settings = entry->pool.settings();
        settings.min_size = 0;
        settings.server_idle_timeout = config::Duration(0);
        entry->pool.update_settings(settings);
        entry->pool.close_idle();
        spdlog::info("reload: database {} removed; its pool for user {} drains", key.first, key.second);
      }
    }
  }
  auth_lookup_.clear();
  {
    std::lock_guard lock(pools_mu_);
    for (auto& [user, limit] : user_limits_) limit->set_max(fresh->pool.max_user_connections);
    for (auto& [name, limit] : db_limits_)
      if (const auto db = fresh->resolve_database(name)) limit->set_max(db->pool.max_db_connections);
  }
  // New databases with a fixed server user get their pool now, so that min_size warms it.
  for (const auto& db : fresh->databases)
    if (db.user && db.name != config::kFallbackDatabase) pool_for(db, *db.user);
  stats::add(stats_.reloads_ok);
  stats_.last_reload_success_time =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  spdlog::info("configuration reloaded from {}", config_path_);
  return {true, {}};
}

std::vector<std::shared_ptr<ClientInfo>> Proxy::clients() {
  std::lock_guard lock(sessions_mu_);
  std::vector<std::shared_ptr<ClientInfo>> out;
  out.reserve(sessions_.size());
  for (auto& [id, info] : sessions_) out.push_back(info);
  return out;
}

void Proxy::register_session(std::shared_ptr<ClientInfo> info) {
  std::lock_guard lock(sessions_mu_);
  const auto id = info->id;
  sessions_.emplace(id, std::move(info));
}

void Proxy::unregister_session(std::uint64_t id) {
  std::lock_guard lock(sessions_mu_);
  sessions_.erase(id);
}

bool Proxy::is_paused_locked(const std::string& database) const {
  return paused_all_ || std::ranges::find(paused_dbs_, database) != paused_dbs_.end();
}

bool Proxy::pause(const std::string& database) {
  if (!database.empty() && !config()->resolve_database(database)) return false;
  std::lock_guard lock(pools_mu_);
  std::lock_guard pause_lock(pause_mu_);
  if (database.empty()) {
    paused_all_ = true;
  } else if (!is_paused_locked(database)) {
    paused_dbs_.push_back(database);
  }
  for (auto& [key, entry] : pools_)
    if (database.empty() || key.first == database) entry->pool.pause();
  spdlog::info("paused {}", database.empty() ? std::string("all databases") : "database " + database);
  return true;
}

bool Proxy::resume(const std::string& database) {
  const bool known = database.empty() || config()->resolve_database(database);
  std::lock_guard lock(pools_mu_);
  std::lock_guard pause_lock(pause_mu_);
  if (!known && std::ranges::find(paused_dbs_, database) == paused_dbs_.end()) return false;
  if (database.empty()) {
    paused_all_ = false;
    paused_dbs_.clear();
  } else {
    std::erase(paused_dbs_, database);
  }
  for (auto& [key, entry] : pools_)
    if (!is_paused_locked(key.first)) entry->pool.resume();
  spdlog::info("resumed {}", database.empty() ? std::string("all databases") : "database " + database);
  return true;
}

std::vector<std::string> Proxy::paused() const {
  std::lock_guard lock(pause_mu_);
  if (paused_all_) return {"*"};
  return paused_dbs_;
}

void Proxy::terminate_clients() {
  for (auto& info : clients()) {
    asio::post(info->executor, [weak = info->session] {
      if (auto session = weak.lock()) session->terminate();
    });
  }
}

void Proxy::drain() {
  if (draining_.exchange(true)) return;
  spdlog::info("draining: no new clients; waiting up to {} ms for transactions in flight",
               config()->shutdown_timeout.count());
  for (auto& a : acceptors_) close_socket(*a);
  asio::co_spawn(
      main_,
      [this]() -> asio::awaitable<void> {
        const auto deadline = std::chrono::steady_clock::now() + config()->shutdown_timeout;
        asio::steady_timer t(main_);
        while (linked_ > 0 && std::chrono::steady_clock::now() < deadline) {
          t.expires_after(std::chrono::milliseconds(50));
          co_await t.async_wait(as_tuple(use_awaitable));
        }
        if (linked_ > 0)
          spdlog::warn("shutdown_timeout reached with {} transactions in flight", linked_.load());
        // Whoever is left hears why before the connection goes: FATAL 57P01, as PostgreSQL's smart shutdown.
        terminate_clients();
        const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (!clients().empty() && std::chrono::steady_clock::now() < grace) {
          t.expires_after(std::chrono::milliseconds(20));
          co_await t.async_wait(as_tuple(use_awaitable));
        }
        stop();
      },
      asio::detached);
}

void Proxy::stop() {
  spdlog::info("stopping");
  for (auto& a : acceptors_) close_socket(*a);
  {
    std::lock_guard lock(pools_mu_);
    for (auto& [k, e] : pools_) e->pool.close_idle();
  }
  for (auto& s : services_) s->stop();
  main_.stop();
  for (auto& w : workers_)
    if (w) w->stop();
}

int Proxy::run() {
  auto cfg = config();
  for (const auto& ep : cfg->listen) {
    auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(main_);
    const auto endpoint = resolve_listen(ep);
    acceptor->open(endpoint.protocol());
    acceptor->set_option(asio::socket_base::reuse_address(true));
    if (endpoint.address().is_v6()) acceptor->set_option(asio::ip::v6_only(false));
    acceptor->bind(endpoint);
    acceptor->listen(asio::socket_base::max_listen_connections);
    spdlog::info("listening on {}:{}", acceptor->local_endpoint().address().to_string(),
                 acceptor->local_endpoint().port());
    acceptors_.push_back(std::move(acceptor));
  }
  for (auto& a : acceptors_) start_accept(*a);
  for (auto& s : services_) s->start();

  // Pools with a fixed server user exist from the start, so that min_size warms them before the first client.
  for (const auto& db : cfg->databases)
    if (db.user && db.name != config::kFallbackDatabase) pool_for(db, *db.user);
  start_upkeep();

  asio::signal_set signals(main_, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          (void)reload();
        } else if (sig == SIGTERM) {
          drain();
        } else {
          stop();
          return;
        }
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);
  std::signal(SIGPIPE, SIG_IGN);

  std::vector<std::thread> threads;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (auto& w : workers_) {
    if (!w) continue;
    guards.emplace_back(w->get_executor());
    threads.emplace_back([ctx = w.get()] { ctx->run(); });
  }
  main_.run();
  for (auto& g : guards) g.reset();
  for (auto& w : workers_)
    if (w) w->stop();
  for (auto& t : threads) t.join();
  spdlog::info("stopped");
  return 0;
}

}  // namespace pgward::proxy
