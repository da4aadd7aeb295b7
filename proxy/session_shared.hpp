// What the session's files share (see session.hpp for which file holds what).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace pgward::proxy {

// The usual client receive buffer; a message that must be read whole may grow it up to max_buffer_per_client.
inline constexpr std::size_t kClientBufferSize = 16 * 1024;
// Authentication messages are small; anything larger during login is an attack or a bug.
inline constexpr std::uint32_t kMaxLoginMessage = 8 * 1024;
// Largest server message the relay looks inside (ReadyForQuery, ParameterStatus); the rest stream through.
inline constexpr std::uint32_t kMaxServerMessage = 0x40000000 + 64;

// Exponential backoff with full jitter for retried connects and checks: 50 ms doubling per attempt up to 2 s,
// then a uniform draw in [delay/2, delay], so that clients that failed together do not retry together.
std::chrono::milliseconds retry_backoff(std::uint32_t attempt);

}  // namespace pgward::proxy
