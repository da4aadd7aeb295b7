#include "protocol/response_queue.hpp"

namespace pgward::protocol {

bool completes(char request, char response) {
  switch (request) {
    case fe::kParse: return response == be::kParseComplete;
    case fe::kBind: return response == be::kBindComplete;
    case fe::kClose: return response == be::kCloseComplete;
    case fe::kDescribe: return response == be::kRowDescription || response == be::kNoData;
    case fe::kExecute:
      return response == be::kCommandComplete || response == be::kEmptyQueryResponse ||
             response == be::kPortalSuspended;
    default: return false;
  }
}

}  // namespace pgward::protocol
