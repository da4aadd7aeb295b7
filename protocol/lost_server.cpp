#include "protocol/lost_server.hpp"

namespace pgward::protocol {

LostPlan plan_lost_server(const LostFacts& f) {
  LostPlan p;
  p.in_doubt = f.in_doubt;
  if (f.mid_message) {
    p.action = LostPlan::Action::close;
    return p;
  }
  // A session's state is gone, or several batches are in flight whose answers cannot be made up.
  if (f.session_mode || f.client_waits > 1 || (f.client_waits == 1 && f.batch_open)) {
    p.action = LostPlan::Action::fatal;
    return p;
  }
  if (f.client_waits == 0 && !f.batch_open) {
    p.action = LostPlan::Action::remember;
    if (f.tx_status != kTxIdle)
      p.lost = f.tx_status == kTxFailed ? LostPlan::Lost::aborted : LostPlan::Lost::unreported;
    return p;
  }
  p.action = LostPlan::Action::answer;
  if (!f.in_doubt && f.tx_status != kTxIdle) {
    // The block is rolled back; the client learns it and stays in a failed transaction until it ends it.
    p.end_status = kTxFailed;
    p.lost = LostPlan::Lost::aborted;
  }
  p.ready_now = f.client_waits == 1;
  return p;
}

}  // namespace pgward::protocol
