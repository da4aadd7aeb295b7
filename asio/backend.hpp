// The event loop this program's Asio was compiled with: "io_uring" in pgward-io_uring (cmake/io_uring.cmake),
// "epoll" in pgward and in the tests. One value per program: the two builds never share one.
#pragma once

#include <boost/asio/detail/config.hpp>
#include <string_view>

namespace pgward {

#if defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
inline constexpr std::string_view kIoBackend = "io_uring";
#else
inline constexpr std::string_view kIoBackend = "epoll";
#endif

}  // namespace pgward
