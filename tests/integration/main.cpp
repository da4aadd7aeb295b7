#include <gtest/gtest.h>

#include <csignal>

#include "harness.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Writes to a socket the peer closed must fail with EPIPE, not kill the run.
  std::signal(SIGPIPE, SIG_IGN);
  ::testing::AddGlobalTestEnvironment(new pgward::it::PostgresEnvironment);
  ::testing::UnitTest::GetInstance()->listeners().Append(new pgward::it::Watchdog(std::chrono::seconds(60)));
  return RUN_ALL_TESTS();
}
