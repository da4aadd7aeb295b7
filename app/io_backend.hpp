// Which event loop pgward runs on: `[proxy] io_backend` (auto | epoll | io_uring), what the kernel allows and
// which builds are installed. pgward (epoll) and pgward-io_uring sit side by side (cmake/io_uring.cmake); the
// one started execs the other when the choice is the other's, before it opens any socket or thread.
#pragma once

#include <string>
#include <string_view>

namespace pgward::app {

struct IoBackendChoice {
  std::string exec;     // when not empty: the binary to exec, with the same arguments
  std::string error;    // when not empty: pgward cannot run as configured; this says why
  std::string warning;  // when not empty: logged once the logger is up (a fallback to epoll, say)
};

// Why io_uring cannot be used here (a seccomp profile that forbids io_uring_setup, io_uring disabled by
// sysctl, a build without liburing), or "" when a ring as large as Asio's is set up and a recvmsg completes
// through it.
std::string io_uring_unavailable();

// The choice for `wanted` ("auto", "epoll" or "io_uring") in this program, whose own event loop is
// kIoBackend. `reexeced` is true in a process that an earlier choice exec'd: it never execs again.
IoBackendChoice choose_io_backend(std::string_view wanted, bool reexeced);

// Exec's the choice's binary with argv, marking the environment so that the new process does not choose
// again; returns only when the exec failed, with the reason.
std::string exec_choice(const IoBackendChoice& choice, char** argv);

// True in a process exec'd by exec_choice (the mark is removed from the environment).
bool take_reexec_mark();

}  // namespace pgward::app
