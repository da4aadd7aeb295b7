#include "protocol/txn_gate.hpp"

namespace pgward::protocol {

void TxnGate::reset(char tx_status) {
  pending_ = 0;
  client_waits_ = 0;
  batch_open_ = false;
  tx_status_ = tx_status;
}

bool TxnGate::client_message(char type) {
  switch (type) {
    case fe::kQuery:
    case fe::kFunctionCall:
      ++pending_;
      ++client_waits_;
      return true;
    case fe::kSync:
      ++pending_;
      ++client_waits_;
      batch_open_ = false;
      return true;
    case fe::kParse:
    case fe::kBind:
    case fe::kDescribe:
    case fe::kExecute:
    case fe::kClose:
    case fe::kFlush: batch_open_ = true; return false;
    default: return false;  // CopyData/CopyDone/CopyFail belong to a Query or Sync already counted
  }
}

TxnGate::Verdict TxnGate::ready_for_query(char tx_status, bool statement_mode) {
  if (pending_ > 0) --pending_;
  if (client_waits_ > 0) --client_waits_;
  tx_status_ = tx_status;
  if (statement_mode && tx_status_ != kTxIdle && fresh()) return Verdict::violation;
  return quiet() ? Verdict::release : Verdict::keep;
}

}  // namespace pgward::protocol
