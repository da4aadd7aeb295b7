// What a client is told when its server dies under it: the plan, from what was in flight. Pure; the session
// carries it out (and, for a COMMIT in doubt with commit_resolution = "verify", asks another server first).
//
// PostgreSQL's own words for the cases: 08006 connection_failure when nothing can have committed, 08007
// transaction_resolution_unknown when a COMMIT or a statement outside a transaction block was in flight.
#pragma once

#include <cstdint>

#include "protocol/codec.hpp"

namespace pgward::protocol {

struct LostFacts {
  bool mid_message = false;       // half a server message had gone to the client
  bool session_mode = false;      // the client's session state died with the server
  std::int64_t client_waits = 0;  // the client's Syncs, Queries and FunctionCalls without a ReadyForQuery
  bool batch_open = false;        // extended-protocol messages sent since the client's last Sync
  bool in_doubt = false;          // what was in flight may have committed
  char tx_status = kTxIdle;       // the last ReadyForQuery's status
};

struct LostPlan {
  enum class Action : std::uint8_t {
    close,     // close the client's connection without a word: half a message went out
    fatal,     // one FATAL (08007 when in doubt, else 08006), then close
    remember,  // the client waits for nothing: its next message learns the loss (see `lost`)
    answer,    // one ERROR (or a verified COMMIT's answers) in place of what the client waits for
  };
  // What the session remembers of a transaction block that died with the server.
  enum class Lost : std::uint8_t {
    none,
    unreported,  // the client has not heard of the loss yet
    aborted,     // it has: the next server plays a failed transaction
  };
  Action action = Action::answer;
  bool in_doubt = false;  // fatal/answer: 08007 (answer: after a verification, when one is possible)
  Lost lost = Lost::none;
  char end_status = kTxIdle;  // answer: the ReadyForQuery status that follows the error
  bool ready_now = true;      // answer: a ReadyForQuery follows at once; false: at the client's next Sync
};

LostPlan plan_lost_server(const LostFacts& f);

}  // namespace pgward::protocol
