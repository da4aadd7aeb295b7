// Asio's compiled parts, built once into pgward_asio for every program that links it
// (BOOST_ASIO_SEPARATE_COMPILATION keeps every other translation unit from compiling them again).
// clang-format off
#include "asio/io_uring_sqe.hpp"  // first: see there
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
// clang-format on
