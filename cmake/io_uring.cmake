# pgward-io_uring: the same proxy on Asio's io_uring backend (BOOST_ASIO_HAS_IO_URING with
# BOOST_ASIO_DISABLE_EPOLL), where a read is posted once and completes without a speculative recvfrom, and the
# submissions of one loop turn go to the kernel in one io_uring_enter.
#
# Asio chooses its backend when it is compiled, and two backends cannot share a program (each of Asio's types
# would have two definitions), so every library that includes Asio is compiled a second time here, with the
# `_uring` suffix, from the same sources. `pgward` probes io_uring at start-up and execs `pgward-io_uring` from its
# own folder when the kernel allows it (app/io_backend.cpp); a container whose seccomp profile forbids io_uring
# keeps running `pgward` on epoll. Tests link the epoll libraries; the integration suite runs both binaries.

# A `_uring` twin of `target` (a static library defined earlier), linking `libraries`.
function(pgward_uring_twin target)
  get_target_property(sources ${target} SOURCES)
  get_target_property(source_dir ${target} SOURCE_DIR)
  list(TRANSFORM sources PREPEND "${source_dir}/")
  add_library(${target}_uring STATIC ${sources})
  target_include_directories(${target}_uring PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${target}_uring PUBLIC ${ARGN})
endfunction()

pgward_uring_twin(pgward_asio Boost::headers Threads::Threads OpenSSL::SSL PkgConfig::LIBURING)
target_compile_definitions(pgward_asio_uring PUBLIC
  BOOST_ASIO_SEPARATE_COMPILATION BOOST_ASIO_NO_DEPRECATED BOOST_ASIO_DISABLE_BOOST_COROUTINE
  BOOST_ASIO_HAS_IO_URING BOOST_ASIO_DISABLE_EPOLL)
pgward_uring_twin(pgward_pool pgward_config pgward_asio_uring)
pgward_uring_twin(pgward_proxy pgward_pool_uring pgward_protocol pgward_config pgward_asio_uring spdlog::spdlog)
pgward_uring_twin(pgward_admin pgward_proxy_uring pgward_admin_guard prometheus-cpp::core)

add_executable(pgward-io_uring ${PROJECT_SOURCE_DIR}/app/main.cpp ${PROJECT_SOURCE_DIR}/app/io_backend.cpp)
target_compile_definitions(pgward-io_uring PRIVATE PGWARD_VERSION="${PROJECT_VERSION}")
target_link_libraries(pgward-io_uring PRIVATE pgward_proxy_uring pgward_admin_uring PkgConfig::LIBURING)
target_compile_definitions(pgward-io_uring PRIVATE PGWARD_HAVE_LIBURING)
# Beside pgward, where pgward looks for it.
set_target_properties(pgward-io_uring PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/app)
include(GNUInstallDirs)
install(TARGETS pgward-io_uring RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
