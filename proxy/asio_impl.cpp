// Asio's compiled parts, built once for the whole program (BOOST_ASIO_SEPARATE_COMPILATION keeps every other
// translation unit from compiling them again).
#include <boost/asio/impl/src.hpp>
