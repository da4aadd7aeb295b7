# pgward-io_uring: the same proxy on Asio's io_uring backend (BOOST_ASIO_HAS_IO_URING with
# BOOST_ASIO_DISABLE_EPOLL), where a read is posted once and completes without a speculative recvfrom, and the
# submissions of one loop turn go to the kernel in one io_uring_enter.
#
# Asio chooses its backend when it is compiled, and two backends cannot share a program (each of Asio's types
# would have two definitions), so every library that includes Asio is compiled a second time here, with the
# `_uring` suffix, from the same sources. `pgward` probes io_uring at start-up and execs `pgward-io_uring` from its
# own folder when the kernel allows it (app/io_backend.cpp); a container whose seccomp profile forbids io_uring
# keeps running `pgward` on epoll. Tests link the epoll libraries; the integration suite runs both binaries.

# The targets that get a twin; a twin links the twins of those among its dependencies.
set(pgward_twinned pgward_asio pgward_pool pgward_proxy pgward_admin)

# `twin`: `target` (a static library or an executable defined earlier) built again from the same sources, with the
# same include folders, definitions, options and dependencies, each twinned dependency replaced by its twin.
function(pgward_uring_twin target twin)
  get_target_property(type ${target} TYPE)
  get_target_property(sources ${target} SOURCES)
  get_target_property(source_dir ${target} SOURCE_DIR)
  set(paths)
  foreach(source IN LISTS sources)
    cmake_path(ABSOLUTE_PATH source BASE_DIRECTORY ${source_dir})
    list(APPEND paths ${source})
  endforeach()
  if(type STREQUAL "EXECUTABLE")
    add_executable(${twin} ${paths})
  else()
    add_library(${twin} STATIC ${paths})
  endif()
  foreach(property INCLUDE_DIRECTORIES INTERFACE_INCLUDE_DIRECTORIES COMPILE_DEFINITIONS
          INTERFACE_COMPILE_DEFINITIONS COMPILE_OPTIONS LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
    get_target_property(value ${target} ${property})
    if(NOT value)
      continue()
    endif()
    if(property MATCHES "LINK_LIBRARIES$")
      foreach(dependency IN LISTS pgward_twinned)
        list(TRANSFORM value REPLACE "^${dependency}$" "${dependency}_uring")
      endforeach()
    endif()
    set_property(TARGET ${twin} PROPERTY ${property} "${value}")
  endforeach()
endfunction()

pgward_uring_twin(pgward_asio pgward_asio_uring)
target_compile_definitions(pgward_asio_uring PUBLIC BOOST_ASIO_HAS_IO_URING BOOST_ASIO_DISABLE_EPOLL)
target_link_libraries(pgward_asio_uring PUBLIC PkgConfig::LIBURING)
pgward_uring_twin(pgward_pool pgward_pool_uring)
pgward_uring_twin(pgward_proxy pgward_proxy_uring)
pgward_uring_twin(pgward_admin pgward_admin_uring)
pgward_uring_twin(pgward pgward-io_uring)
# Beside pgward, where pgward looks for it.
set_target_properties(pgward-io_uring PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/app)
include(GNUInstallDirs)
install(TARGETS pgward-io_uring RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
