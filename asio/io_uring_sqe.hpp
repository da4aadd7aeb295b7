// Submission slots handed to Asio's io_uring backend with their user data cleared. Included by
// asio/asio_impl.cpp before Asio's compiled parts, the only place where Asio takes a slot; a no-op on epoll.
//
// Asio 1.81 (Boost 1.81, Debian 12) prepares its cancellations (io_uring_prep_cancel) and the removal of
// its wait timeout (io_uring_prep_timeout_remove) without setting the slot's user data, counting on
// io_uring_get_sqe() to hand out a cleared slot. liburing 2.3 (Debian 12) does not clear it, and its prep
// helpers no longer do either. So such a request carries the user data of the request that used the slot one
// ring's length earlier: a pointer to some other socket's operation queue. When the request completes, Asio
// takes its result (0, or -ENOENT) for that queue's pending operation: an idle read elsewhere ends with an
// EOF that nobody sent. CancelledReads.EachEndsAbortedAndNoOtherOperationIsCompletedByThem (tests/io) shows
// it after 16,384 submissions. Every operation Asio starts sets its user data after taking the slot, so
// clearing it here changes nothing else; a completion with no user data is ignored by Asio.
#pragma once

#include <boost/asio/detail/config.hpp>

#if defined(BOOST_ASIO_HAS_IO_URING)
#include <liburing.h>

inline io_uring_sqe* pgward_io_uring_get_cleared_sqe(io_uring* ring) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe != nullptr) io_uring_sqe_set_data(sqe, nullptr);
  return sqe;
}

// Asio calls ::io_uring_get_sqe(&ring_) in io_uring_service::get_sqe() only.
#define io_uring_get_sqe pgward_io_uring_get_cleared_sqe
#endif
