// libFuzzer target over everything that parses untrusted bytes: framing, the startup packet, every body
// parser, the prepared-statement message views, the SQL statement-name scanner and both SCRAM roles. Any
// crash, over-read (ASan) or undefined behaviour (UBSan) is a finding. Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/auth.hpp"
#include "protocol/codec.hpp"
#include "protocol/error_text.hpp"
#include "protocol/frontend.hpp"
#include "protocol/sql_text.hpp"

namespace pr = pgward::protocol;

namespace {

void parse_bodies(std::string_view body) {
  (void)pr::parse_ready_for_query(body);
  (void)pr::parse_parameter_status(body);
  (void)pr::parse_backend_key_data(body);
  if (auto a = pr::parse_authentication(body)) (void)pr::parse_sasl_mechanisms(a->data);
  (void)pr::parse_sasl_initial_response(body);
  (void)pr::parse_password_message(body);
  (void)pr::parse_query(body);
  (void)pr::parse_first_column(body);
  if (auto f = pr::parse_fields(body)) (void)pr::find_field(*f, 'C');
  (void)pr::parse_parse(body);
  (void)pr::parse_bind(body);
  (void)pr::parse_target(body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.empty()) return 0;
  const std::string_view rest = in.substr(1);

  switch (static_cast<unsigned char>(in[0]) % 5) {
    case 0: {  // a stream of typed messages, as the relay walks it
      std::string_view buf = rest;
      for (;;) {
        auto r = pr::decode_message(buf, 1 << 20);
        if (r.status != pr::Status::ok) break;
        parse_bodies(r.message.body);
        buf.remove_prefix(r.consumed);
      }
      break;
    }
    case 1: {  // startup-phase packets
      std::string_view buf = rest;
      for (int i = 0; i < 4; ++i) {
        auto r = pr::decode_startup(buf);
        if (r.status != pr::Status::ok) break;
        buf.remove_prefix(r.consumed);
      }
      break;
    }
    case 2: {  // a SCRAM server facing a hostile client: split the input into client-first and client-final
      static const auto verifier = pr::auth::make_scram_verifier("pencil", "0123456789abcdef", 1);
      pr::auth::ScramServer server(verifier);
      const auto cut = rest.find('\n');
      if (server.handle_client_first(rest.substr(0, cut)) && cut != std::string_view::npos) {
        (void)server.handle_client_final(rest.substr(cut + 1));
      }
      break;
    }
    case 3: {  // a SCRAM client facing a hostile server
      pr::auth::ScramClient client("pencil");
      (void)client.client_first();
      const auto cut = rest.find('\n');
      if (client.handle_server_first(rest.substr(0, cut)) && cut != std::string_view::npos) {
        (void)client.verify_server_final(rest.substr(cut + 1));
      }
      (void)pr::auth::parse_scram_verifier(rest);
      (void)pr::auth::base64_decode(rest);
      break;
    }
    case 4: {  // a client's SQL text, and a server error about it
      const auto scan = pr::sql::scan_statement_refs(rest);
      std::size_t last = 0;
      for (const auto& r : scan.refs) {
        // Every reported range lies inside the text, in order: the session rewrites the text by these.
        if (r.name_len != 0 && (r.name_pos < last || r.name_pos + r.name_len > rest.size())) std::abort();
        if (r.stmt_pos + r.stmt_len > rest.size()) std::abort();
        if (r.name_len != 0) last = r.name_pos + r.name_len;
      }
      (void)pr::sql::may_name_statements(rest);
      (void)pr::translate_error(rest, {{"pgw_x", "q", 3, 5, 1}, {"pgw_missing", "\"Odd\"", 20, 11, 5}});
      break;
    }
  }
  return 0;
}
