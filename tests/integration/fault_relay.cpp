// FaultRelay: a TCP relay between pgward and PostgreSQL that breaks connections on purpose.
//
// Each relayed pair has its own thread that polls both sockets and an eventfd (the way kill_all() reaches it)
// and keeps at most kBufferCap bytes in each direction. Both byte streams are cut into protocol messages as
// they pass (Scanner), which is how a COMMIT is recognised and how its reply is told from the replies to what
// came before it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "harness.hpp"

namespace pgward::it {
namespace {

constexpr std::size_t kBufferCap = 256 * 1024;  // bytes waiting to be written, per direction
constexpr std::size_t kHeadBytes = 256;         // how much of each message body the scanner keeps
constexpr std::uint32_t kCancelRequest = 80877102;
constexpr std::uint32_t kSslRequest = 80877103;
constexpr std::uint32_t kGssEncRequest = 80877104;

// Cuts a protocol byte stream into messages, one chunk at a time.
class Scanner {
 public:
  enum class Mode {
    untyped,      // the client's first messages: SSLRequest, GSSENCRequest, CancelRequest, the startup packet
    typed,        // one type byte, then the length
    single_byte,  // the server's one-byte answer to SSLRequest or GSSENCRequest
    opaque,       // encrypted: nothing more to recognise
  };
  struct Piece {
    char type = 0;        // 0 for an untyped message; the byte itself for a one-byte answer
    std::size_t end = 0;  // offset in the chunk just past the message
    std::string head;     // the first kHeadBytes bytes of the body
    bool answer = false;  // the one-byte answer to SSLRequest or GSSENCRequest
  };

  explicit Scanner(Mode mode) : mode_(mode) {}
  void set_mode(Mode mode) { mode_ = mode; }

  // Every message that ends inside this chunk; a message that does not end in it is carried over.
  std::vector<Piece> feed(std::string_view chunk) {
    std::vector<Piece> pieces;
    std::size_t at = 0;
    while (at < chunk.size() && mode_ != Mode::opaque) {
      if (mode_ == Mode::single_byte) {
        pieces.push_back({chunk[at], at + 1, "", true});
        ++at;
        mode_ = Mode::typed;
        continue;
      }
      const std::size_t header_size = mode_ == Mode::typed ? 5 : 4;
      if (!body_left_) {
        const std::size_t take = std::min(header_size - header_.size(), chunk.size() - at);
        header_.append(chunk.substr(at, take));
        at += take;
        if (header_.size() < header_size) break;
        const std::uint32_t length = read_u32(header_, header_size - 4);
        if (length < 4) {
          mode_ = Mode::opaque;  // not the protocol: stop looking
          break;
        }
        body_left_ = length - 4;
      }
      const std::size_t take = std::min(*body_left_, chunk.size() - at);
      if (head_.size() < kHeadBytes)
        head_.append(chunk.substr(at, std::min(take, kHeadBytes - head_.size())));
      at += take;
      *body_left_ -= take;
      if (*body_left_ > 0) break;
      const char type = mode_ == Mode::typed ? header_[0] : 0;
      pieces.push_back({type, at, std::move(head_)});
      if (type == 0) {
        const std::uint32_t code = pieces.back().head.size() >= 4 ? read_u32(pieces.back().head, 0) : 0;
        if (code != kSslRequest && code != kGssEncRequest && code != kCancelRequest) mode_ = Mode::typed;
      }
      header_.clear();
      head_.clear();
      body_left_.reset();
    }
    return pieces;
  }

 private:
  Mode mode_;
  std::string header_;
  std::string head_;
  std::optional<std::size_t> body_left_;  // set once the header is complete
};

// Whether the text of a simple Query or a Parse (NUL-terminated) has a COMMIT among its statements ("COMMIT",
// "commit work;", "SELECT txid_current_if_assigned(); COMMIT"), not merely the word.
bool is_commit(std::string_view body) {
  std::string text(body.substr(0, body.find('\0')));
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::size_t from = 0;
  while (from <= text.size()) {
    const std::size_t end = std::min(text.find(';', from), text.size());
    std::string_view statement(text.data() + from, end - from);
    const std::size_t first = statement.find_first_not_of(" \t\r\n");
    if (first != std::string_view::npos) {
      statement.remove_prefix(first);
      if (statement.starts_with("commit") &&
          (statement.size() == 6 || std::isspace(static_cast<unsigned char>(statement[6]))))
        return true;
    }
    from = end + 1;
  }
  return false;
}

// The statement text of a Parse body (name, NUL, text, NUL, ...); empty when the head is cut before it.
std::string_view parse_statement(std::string_view body) {
  const std::size_t nul = body.find('\0');
  return nul == std::string_view::npos ? std::string_view() : body.substr(nul + 1);
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Closes with a reset instead of a FIN: unsent data is dropped and the peer reads ECONNRESET.
void close_with_reset(int fd) {
  const linger abort{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  close(fd);
}

void signal_eventfd(int fd) {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd, &one, sizeof one);
}

}  // namespace

struct FaultRelay::State {
  struct Pair {
    int client = -1;
    int server = -1;
    int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    std::atomic<bool> kill{false};
    bool done = false;  // under State::mutex
    std::thread thread;
    ~Pair() { close(wake); }
  };

  int target = 0;
  int listener = -1;
  int port = 0;
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::atomic<bool> stopping{false};
  std::thread acceptor;

  mutable std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::shared_ptr<Pair>> pairs;  // joined when done (at the next accept) or at destruction
  std::optional<Cut> armed;
  bool fired = false;

  void accept_loop() {
    for (;;) {
      pollfd p[2] = {{listener, POLLIN, 0}, {wake, POLLIN, 0}};
      if (poll(p, 2, -1) < 0 && errno != EINTR) return;
      if (stopping) return;
      if (!(p[0].revents & POLLIN)) continue;
      const int client = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      const int server = connect_loopback(target, 5s);
      if (server < 0) {
        close_with_reset(client);  // as PostgreSQL itself would look when it is down: refused at once
        continue;
      }
      set_nonblocking(client);
      set_nonblocking(server);
      auto pair = std::make_shared<Pair>();
      pair->client = client;
      pair->server = server;
      std::lock_guard lock(mutex);
      std::erase_if(pairs, [](const std::shared_ptr<Pair>& q) {
        if (!q->done) return false;
        q->thread.join();
        return true;
      });
      pairs.push_back(pair);
      pair->thread = std::thread([this, pair] { relay(*pair); });
    }
  }

  std::optional<Cut> take_armed() {
    std::lock_guard lock(mutex);
    return std::exchange(armed, std::nullopt);
  }

  // Moves bytes both ways until one side goes, kill_all() or a cut ends the pair.
  void relay(Pair& pair) {
    Scanner from_client(Scanner::Mode::untyped);
    Scanner from_server(Scanner::Mode::typed);
    std::string to_server;
    std::string to_client;
    int outstanding = 0;  // requests sent whose ReadyForQuery has not come back (startup, Query, Sync)
    bool client_eof = false;
    bool server_eof = false;
    bool reset = false;
    // Once a COMMIT is cut: how many ReadyForQuery still belong to what the client sent before it.
    std::optional<Cut> cut;
    int replies_to_pass = 0;
    bool commit_reply_swallowed = false;

    auto on_client_bytes = [&](std::string_view chunk) {
      std::size_t forward = chunk.size();
      std::size_t start = 0;      // where the current message starts in this chunk
      bool through_sync = false;  // a Parse of COMMIT cut after_reply: its batch goes through up to its Sync
      for (const auto& piece : from_client.feed(chunk)) {
        if (through_sync) {
          if (piece.type == 'S') {
            forward = piece.end;
            break;
          }
          continue;
        }
        if (piece.type == 0) {
          const std::uint32_t code = piece.head.size() >= 4 ? read_u32(piece.head, 0) : 0;
          if (code == kSslRequest || code == kGssEncRequest) {
            from_server.set_mode(Scanner::Mode::single_byte);
          } else if (code != kCancelRequest) {
            ++outstanding;  // the startup packet: login ends in ReadyForQuery
          }
        } else if (((piece.type == 'Q' && is_commit(piece.head)) ||
                    (piece.type == 'P' && is_commit(parse_statement(piece.head)))) &&
                   (cut = take_armed())) {
          replies_to_pass = outstanding;
          if (piece.type == 'P' && *cut == Cut::after_reply) {
            through_sync = true;
            continue;
          }
          forward = *cut == Cut::after_reply ? piece.end : start;
          break;
        } else if (piece.type == 'Q' || piece.type == 'S') {
          ++outstanding;
        }
        start = piece.end;
      }
      to_server.append(chunk.substr(0, forward));
    };

    auto on_server_bytes = [&](std::string_view chunk) {
      std::size_t start = 0;
      auto pass = [&](std::size_t end) {
        // The bytes of one message all go the same way: the state only changes where a message ends.
        if (!cut || replies_to_pass > 0) to_client.append(chunk.substr(start, end - start));
        start = end;
      };
      for (const auto& piece : from_server.feed(chunk)) {
        if (piece.answer && (piece.type == 'S' || piece.type == 'G')) {
          from_client.set_mode(Scanner::Mode::opaque);
          from_server.set_mode(Scanner::Mode::opaque);
        }
        pass(piece.end);
        if (piece.type != 'Z') continue;
        outstanding = std::max(0, outstanding - 1);
        if (!cut) continue;
        if (replies_to_pass > 0) {
          --replies_to_pass;
        } else {
          commit_reply_swallowed = true;
        }
      }
      pass(chunk.size());
    };

    // Reads what one side has; false when it is gone (EOF sets *eof, an error sets reset).
    char buffer[64 * 1024];
    auto receive = [&](int fd, std::size_t room, bool& eof) -> std::optional<std::string_view> {
      const ssize_t n = recv(fd, buffer, std::min(room, sizeof buffer), 0);
      if (n > 0) return std::string_view(buffer, static_cast<std::size_t>(n));
      if (n == 0) {
        eof = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        reset = true;
      }
      return std::nullopt;
    };
    auto transmit = [&](int fd, std::string& pending) {
      const ssize_t n = send(fd, pending.data(), pending.size(), MSG_NOSIGNAL);
      if (n > 0) {
        pending.erase(0, static_cast<std::size_t>(n));
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        reset = true;
      }
    };

    bool cut_done = false;
    while (!pair.kill && !reset) {
      const bool cut_complete =
          cut && (*cut == Cut::before_send ? replies_to_pass == 0 : commit_reply_swallowed);
      if (cut_complete && to_server.empty() && to_client.empty()) {
        cut_done = true;
        break;
      }
      if ((client_eof && to_server.empty()) || (server_eof && to_client.empty())) break;
      const bool read_client = !client_eof && !cut && to_server.size() < kBufferCap;
      const bool read_server = !server_eof && to_client.size() < kBufferCap;
      pollfd p[3] = {
          {pair.client, static_cast<short>((read_client ? POLLIN : 0) | (to_client.empty() ? 0 : POLLOUT)),
           0},
          {pair.server, static_cast<short>((read_server ? POLLIN : 0) | (to_server.empty() ? 0 : POLLOUT)),
           0},
          {pair.wake, POLLIN, 0},
      };
      if (poll(p, 3, -1) < 0) {
        if (errno == EINTR) continue;
        reset = true;
        break;
      }
      if ((p[0].revents | p[1].revents) & (POLLERR | POLLNVAL)) reset = true;
      if (p[0].revents & (POLLIN | POLLHUP) && read_client) {
        if (auto chunk = receive(pair.client, kBufferCap - to_server.size(), client_eof))
          on_client_bytes(*chunk);
      }
      if (p[1].revents & (POLLIN | POLLHUP) && read_server) {
        if (auto chunk = receive(pair.server, kBufferCap - to_client.size(), server_eof))
          on_server_bytes(*chunk);
      }
      if (p[0].revents & POLLOUT) transmit(pair.client, to_client);
      if (p[1].revents & POLLOUT) transmit(pair.server, to_server);
      if (cut && server_eof) break;  // nothing more will come back for the cut
      // A side that hung up while there is nothing to read from it or write to it: the pair is over.
      if ((p[0].revents & POLLHUP && !read_client) || (p[1].revents & POLLHUP && !read_server)) break;
    }

    if (cut_done) {
      std::lock_guard lock(mutex);  // before the close: whoever sees the close sees fired()
      fired = true;
    }
    if (pair.kill || reset) {
      close_with_reset(pair.client);
      close_with_reset(pair.server);
    } else {
      close(pair.client);
      close(pair.server);
    }
    std::lock_guard lock(mutex);
    pair.done = true;
    cv.notify_all();
  }
};

FaultRelay::FaultRelay(int target_port) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.target = target_port;
  s.port = free_port();
  s.listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(s.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(s.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (s.listener < 0 || bind(s.listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(s.listener, 128) != 0) {
    const std::string why = strerror(errno);
    if (s.listener >= 0) close(s.listener);
    throw std::runtime_error("FaultRelay cannot listen on 127.0.0.1:" + std::to_string(s.port) + ": " + why);
  }
  s.acceptor = std::thread([&s] { s.accept_loop(); });
}

FaultRelay::~FaultRelay() {
  State& s = *state_;
  s.stopping = true;
  signal_eventfd(s.wake);
  s.acceptor.join();
  kill_all();
  for (auto& pair : s.pairs) pair->thread.join();
  close(s.listener);
  close(s.wake);
}

int FaultRelay::port() const { return state_->port; }

std::size_t FaultRelay::connections() const {
  std::lock_guard lock(state_->mutex);
  return static_cast<std::size_t>(
      std::count_if(state_->pairs.begin(), state_->pairs.end(), [](const auto& p) { return !p->done; }));
}

void FaultRelay::kill_all() {
  State& s = *state_;
  std::unique_lock lock(s.mutex);
  std::vector<std::shared_ptr<State::Pair>> killed;
  for (const auto& pair : s.pairs) {
    if (pair->done) continue;
    pair->kill = true;
    signal_eventfd(pair->wake);
    killed.push_back(pair);
  }
  const bool all_closed = s.cv.wait_for(lock, 10s, [&] {
    return std::all_of(killed.begin(), killed.end(), [](const auto& p) { return p->done; });
  });
  if (!all_closed) ADD_FAILURE() << "FaultRelay::kill_all: a relayed connection did not close within 10 s";
}

void FaultRelay::cut_on_commit(Cut mode) {
  std::lock_guard lock(state_->mutex);
  state_->armed = mode;
  state_->fired = false;
}

bool FaultRelay::fired() const {
  std::lock_guard lock(state_->mutex);
  return state_->fired;
}

}  // namespace pgward::it
