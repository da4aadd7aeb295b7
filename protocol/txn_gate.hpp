// When a server may go back to the pool: the count of requests a server still owes a ReadyForQuery for, the
// extended-protocol batch left open (messages since the last Sync), and the transaction status the last
// ReadyForQuery reported. Pure bookkeeping over message types: the session feeds it what goes to the server
// and what comes back, and asks it. Byte-level reasons to hold a server (half a message forwarded, a write
// under way, a cancel on its way) are the relay's, not this gate's.
#pragma once

#include <cstdint>

#include "protocol/codec.hpp"

namespace pgward::protocol {

class TxnGate {
 public:
  // What a client's ReadyForQuery means for the server that sent it.
  enum class Verdict : std::uint8_t {
    keep,       // more is owed, a batch is open, or a transaction block is open
    release,    // nothing outstanding, idle: the server may go back
    violation,  // statement mode: a transaction block is open and nothing more is owed
  };

  // A server was just linked; `tx_status` is what it starts in (idle, or failed when pgward made it play a
  // lost transaction).
  void reset(char tx_status = kTxIdle);

  // A client message goes to the server. True when the client waits for a ReadyForQuery for it (Query,
  // FunctionCall, Sync); `pending()` before the call is then how many were already outstanding.
  bool client_message(char type);
  // pgward's own Sync or Query, sent ahead of the client's messages: its ReadyForQuery is swallowed.
  void injected(std::int64_t n = 1) { pending_ += n; }
  // The ReadyForQuery of an injected request, dropped before it reached the client.
  void injected_ready() {
    if (pending_ > 0) --pending_;
  }
  // A ReadyForQuery for the client, with the status it reports.
  Verdict ready_for_query(char tx_status, bool statement_mode);

  // The next client message starts a new batch: nothing is outstanding and no batch is open.
  bool fresh() const { return pending_ == 0 && !batch_open_; }
  // Nothing outstanding, no batch open, no transaction block: as far as the protocol goes, the server may
  // go back.
  bool quiet() const { return fresh() && tx_status_ == kTxIdle; }
  // The client waits for nothing: every Sync/Query/FunctionCall it sent has been answered and no batch is
  // open.
  bool answered() const { return client_waits_ == 0 && !batch_open_; }

  std::int64_t pending() const { return pending_; }
  std::int64_t client_waits() const { return client_waits_; }
  bool batch_open() const { return batch_open_; }
  char tx_status() const { return tx_status_; }
  void set_tx_status(char s) { tx_status_ = s; }

 private:
  std::int64_t pending_ = 0;       // Sync, Query and FunctionCall messages without their ReadyForQuery yet
  std::int64_t client_waits_ = 0;  // the client's own among pending_
  bool batch_open_ =
      false;  // extended-protocol messages sent since the last Sync (Flush-ed portals and such)
  char tx_status_ = kTxIdle;
};

}  // namespace pgward::protocol
