#include "app/io_backend.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "asio/backend.hpp"

#ifdef PGWARD_HAVE_LIBURING
#include <liburing.h>
#endif

namespace pgward::app {
namespace {

constexpr const char* kReexecMark = "PGWARD_IO_BACKEND_REEXEC";

// `binary` in the folder of the running one ("" when it is not there).
std::string sibling(const std::string& binary) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  auto path = self.parent_path() / binary;
  return ::access(path.c_str(), X_OK) == 0 ? path.string() : std::string();
}

}  // namespace

std::string io_uring_unavailable() {
#ifndef PGWARD_HAVE_LIBURING
  return "this pgward was built without liburing";
#else
  // As many entries as Asio's ring (io_uring_service::ring_size): a kernel or a memory lock limit that
  // refuses that size is found here rather than when the event loop starts.
  constexpr unsigned kAsioRingSize = 16384;
  io_uring ring;
  if (const int rc = ::io_uring_queue_init(kAsioRingSize, &ring, 0); rc < 0)
    return "io_uring_setup failed: " + std::string(std::strerror(-rc));
  std::string why;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    why = "socketpair failed: " + std::string(std::strerror(errno));
  } else {
    char in = 0;
    const char out = 'x';
    iovec iov{&in, 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    io_uring_sqe* sqe = ::io_uring_get_sqe(&ring);
    ::io_uring_prep_recvmsg(sqe, fds[0], &msg, 0);
    io_uring_cqe* cqe = nullptr;
    if (::write(fds[1], &out, 1) != 1) {
      why = "write to a socketpair failed";
    } else if (const int rc = ::io_uring_submit_and_wait(&ring, 1); rc < 0) {
      why = "io_uring_enter failed: " + std::string(std::strerror(-rc));
    } else if (::io_uring_peek_cqe(&ring, &cqe) != 0 || cqe == nullptr) {
      why = "a recvmsg through io_uring did not complete";
    } else {
      if (cqe->res < 0) {
        why = "a recvmsg through io_uring failed: " + std::string(std::strerror(-cqe->res));
      } else if (cqe->res != 1 || in != out) {
        why = "a recvmsg through io_uring returned " + std::to_string(cqe->res) + " bytes instead of 1";
      }
      ::io_uring_cqe_seen(&ring, cqe);
    }
    ::close(fds[0]);
    ::close(fds[1]);
  }
  ::io_uring_queue_exit(&ring);
  return why;
#endif
}

IoBackendChoice choose_io_backend(std::string_view wanted, bool reexeced) {
  IoBackendChoice choice;
  std::string target = std::string(wanted);
  if (wanted != "epoll") {
    if (const std::string why = io_uring_unavailable(); !why.empty()) {
      if (wanted == "io_uring") {
        choice.error = "[proxy] io_backend = \"io_uring\", but io_uring is not available here (" + why + ")";
        return choice;
      }
      choice.warning = "io_uring is not available here (" + why + "): running on epoll";
      target = "epoll";
    } else {
      target = "io_uring";
    }
  }
  if (target == kIoBackend) return choice;
  const std::string binary = target == "io_uring" ? "pgward-io_uring" : "pgward";
  const std::string other = sibling(binary);
  if (reexeced || other.empty()) {
    const std::string missing =
        reexeced ? "a loop of execs was stopped" : binary + " is not beside this binary";
    if (wanted == "auto" && kIoBackend == "epoll") {
      choice.warning = "io_uring is available but " + missing + ": running on epoll";
      return choice;
    }
    choice.error = "[proxy] io_backend = \"" + std::string(wanted) + "\" needs " + binary + " (" + missing +
                   "); this binary runs on " + std::string(kIoBackend);
    return choice;
  }
  choice.exec = other;
  return choice;
}

std::string exec_choice(const IoBackendChoice& choice, char** argv) {
  ::setenv(kReexecMark, "1", 1);
  // Named as what runs (ps, top, /proc/PID/cmdline), with the same arguments.
  argv[0] = const_cast<char*>(choice.exec.c_str());
  ::execv(choice.exec.c_str(), argv);
  const std::string why = "exec " + choice.exec + " failed: " + std::strerror(errno);
  ::unsetenv(kReexecMark);
  return why;
}

bool take_reexec_mark() {
  const bool marked = std::getenv(kReexecMark) != nullptr;
  if (marked) ::unsetenv(kReexecMark);
  return marked;
}

}  // namespace pgward::app
