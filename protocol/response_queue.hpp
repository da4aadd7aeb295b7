// What each server message answers. Responses come in the order requests were sent ("Message Flow"), so a
// queue with one entry per request sent tells, for every server message, which request it completes and what
// pgward does with it: pass it on, drop it (a request pgward injected), or put something else in its place.
// An error undoes what was assumed of the failed request and of those PostgreSQL then skips up to the next
// Sync. Pure: message types and bodies in, a disposition out; what an entry's notes mean is the user's
// business, through a Hooks object:
//
//   void undo(Notes&, bool failed);   // the request failed (true), or was skipped after an error (false)
//   void undo_mark(std::uint8_t mark, bool failed);  // the same for an entry's mark (see Expected)
//   void succeeded(Notes&);           // its Sync/Query/FunctionCall ended without an error undoing it
//   std::string rewrite(Notes*, std::string_view error_body, bool stand_in);
//       // the client's text for a server error: stand_in (On::error) always replaces, even with "" (the
//       // error is then dropped); otherwise "" keeps the server's text
//   void txid(std::string_view data_row_body);  // the row of an On::txid query
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/codec.hpp"

namespace pgward::protocol {

enum class On : std::uint8_t {
  forward,         // pass the response through
  swallow,         // a message pgward injected: drop its success response (an error still goes through)
  parse_complete,  // a no-op Close standing in for a Parse pgward answers: send ParseComplete instead
  error,           // a request sent so that the server fails it: the client gets pgward's error instead
  txid,            // pgward's own transaction-id query before a COMMIT: hand the row over, drop the rest
};

enum class Disposition : std::uint8_t { forward, drop, replace };

// A Sync, Query or FunctionCall: the request whose ReadyForQuery ends a batch.
constexpr bool ends_with_sync(char request) {
  return request == fe::kSync || request == fe::kQuery || request == fe::kFunctionCall;
}
// The response that completes an extended-protocol request ("Extended Query" in "Message Flow").
bool completes(char request, char response);

template <class Notes>
struct Expected {
  char request = 0;  // the frontend message type sent
  On on = On::forward;
  // The user's own bits, for undo information small enough to need no notes (a request sent once per
  // transaction, say): undone like notes, through Hooks::undo_mark, and never allocated.
  std::uint8_t mark = 0;
  std::unique_ptr<Notes> notes;  // absent for plain requests: queueing one then allocates nothing
  Notes& more() {
    if (!notes) notes = std::make_unique<Notes>();
    return *notes;
  }
};

template <class Notes>
class ResponseQueue {
 public:
  using Entry = Expected<Notes>;
  struct Answer {
    Disposition disposition = Disposition::forward;
    std::string_view replacement;  // valid until the next answer()
  };

  Entry& push(char request, On on = On::forward) {
    Entry& e = entries_.emplace_back();
    e.request = request;
    e.on = on;
    return e;
  }
  Entry& back() { return entries_.back(); }
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  // What to do with one server message; pops the request it completes. `body` is the message body (whole for
  // ReadyForQuery, ErrorResponse and DataRow of an On::txid query).
  template <class Hooks>
  Answer answer(char type, std::string_view body, Hooks& hooks);

  // The server is gone: nothing queued will be answered. Undoes each as failed and empties the queue.
  template <class Hooks>
  void abandon(Hooks& hooks) {
    for (Entry& e : entries_) undo(e, true, hooks);
    entries_.clear();
  }

  // The answers a COMMIT verified after its server was lost still owes the client (ParseComplete,
  // BindComplete, CommandComplete COMMIT...; the ReadyForQuery aside); nullopt unless the queue holds exactly
  // one COMMIT-completing request and nothing pgward cannot answer for.
  std::optional<std::string> committed_reply() const;

 private:
  template <class Hooks>
  static void undo(Entry& e, bool failed, Hooks& hooks) {
    if (e.notes) hooks.undo(*e.notes, failed);
    if (e.mark != 0) hooks.undo_mark(e.mark, failed);
  }

  std::deque<Entry> entries_;
  std::string replacement_;
};

// ---------------------------------------------------------------------------------------------------------------

template <class Notes>
template <class Hooks>
typename ResponseQueue<Notes>::Answer ResponseQueue<Notes>::answer(char type, std::string_view body,
                                                                   Hooks& hooks) {
  static constexpr std::string_view kParseComplete{"1\0\0\0\4", 5};
  // Messages the server may send at any time belong to no request.
  if (type == be::kNoticeResponse || type == be::kNotificationResponse || type == be::kParameterStatus ||
      entries_.empty())
    return {};
  if (type == be::kReadyForQuery) {
    // Ends the first Sync/Query/FunctionCall; requests queued before it were skipped after an error.
    while (!entries_.empty()) {
      Entry e = std::move(entries_.front());
      entries_.pop_front();
      if (ends_with_sync(e.request)) {
        if (e.notes) hooks.succeeded(*e.notes);  // still there: no error undid it
        if (e.on == On::swallow || e.on == On::txid) return {Disposition::drop, {}};
        return {};
      }
      undo(e, false, hooks);
    }
    return {};
  }
  Entry& front = entries_.front();
  if (ends_with_sync(front.request)) {  // output of a simple query, function call or Sync
    if (front.on == On::swallow) {      // a preamble pgward injected
      if (type == be::kErrorResponse) {
        undo(front, true, hooks);
        front.notes.reset();
        front.mark = 0;
      }
      return {Disposition::drop, {}};
    }
    if (front.on == On::txid) {
      if (type == be::kDataRow) hooks.txid(body);
      return {Disposition::drop, {}};
    }
    if (type != be::kErrorResponse || (!front.notes && front.mark == 0)) return {};
    const bool stand_in = front.on == On::error;
    undo(front, true, hooks);
    replacement_ = hooks.rewrite(front.notes.get(), body, stand_in);
    front.notes.reset();  // one error per query is enough to undo
    front.mark = 0;
    if (!stand_in && replacement_.empty()) return {};
    return {Disposition::replace, replacement_};
  }

  if (type == be::kErrorResponse) {
    Entry failed = std::move(front);
    entries_.pop_front();
    undo(failed, true, hooks);
    // PostgreSQL skips every extended message up to the next Sync.
    while (!entries_.empty() && !ends_with_sync(entries_.front().request)) {
      undo(entries_.front(), false, hooks);
      entries_.pop_front();
    }
    if (failed.on != On::error) return {};
    replacement_ = hooks.rewrite(failed.notes.get(), body, true);
    return {Disposition::replace, replacement_};
  }
  if (!completes(front.request, type)) return {};  // ParameterDescription, DataRow, ...
  const On on = front.on;
  entries_.pop_front();
  switch (on) {
    case On::swallow:
    case On::txid: return {Disposition::drop, {}};
    case On::parse_complete: return {Disposition::replace, kParseComplete};
    case On::forward:
    case On::error: break;
  }
  return {};
}

template <class Notes>
std::optional<std::string> ResponseQueue<Notes>::committed_reply() const {
  std::string out;
  int commits = 0;
  for (const Entry& e : entries_) {
    switch (e.on) {
      case On::swallow: continue;  // pgward's own requests
      case On::txid:
      case On::error: return std::nullopt;
      case On::parse_complete: put_parse_complete(out); continue;
      case On::forward: break;
    }
    switch (e.request) {
      case fe::kParse: put_parse_complete(out); break;
      case fe::kBind: put_bind_complete(out); break;
      case fe::kClose: put_close_complete(out); break;
      case fe::kDescribe: put_no_data(out); break;  // a COMMIT returns no rows
      case fe::kQuery:
      case fe::kExecute:
        put_command_complete(out, "COMMIT");
        ++commits;
        break;
      case fe::kSync: break;  // its ReadyForQuery is added by the caller
      default: return std::nullopt;
    }
  }
  if (commits != 1) return std::nullopt;
  return out;
}

}  // namespace pgward::protocol
