// Golden-byte tests for protocol/codec.hpp. Every expected byte string below is written out by hand from the
// PostgreSQL docs, "Frontend/Backend Protocol" > "Message Formats" (Byte1 type, Int32 length counting itself
// but not the type byte, big-endian integers, NUL-terminated strings), never produced by the code under test.
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "protocol/codec.hpp"

namespace pgward::protocol {
namespace {

using namespace std::string_literals;

// Raw bytes, written as numbers: keeps golden data readable without escape-sequence pitfalls ("\x08a").
std::string b(std::initializer_list<unsigned> bytes) {
  std::string out;
  for (unsigned v : bytes) out.push_back(static_cast<char>(v));
  return out;
}

// A NUL-terminated protocol String.
std::string z(std::string_view s) { return std::string(s) + '\0'; }

// ---- builders ----

TEST(CodecBuild, AuthenticationOk) {
  std::string out;
  put_authentication_ok(out);
  EXPECT_EQ(out, b({'R', 0, 0, 0, 8, 0, 0, 0, 0}));
}

TEST(CodecBuild, RowDescriptionDataRowEmptyQuery) {
  std::string out;
  put_row_description(out, {{"n", 20}, {"t"}});
  // count, then per column: name, table OID, column number, type OID, typlen, typmod, format
  EXPECT_EQ(out, b({'T', 0, 0, 0, 46, 0, 2}) + z("n") +
                     b({0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 8, 255, 255, 255, 255, 0, 0}) + z("t") +
                     b({0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 255, 255, 255, 255, 255, 255, 0, 0}));
  out.clear();
  put_data_row(out, {std::string("ab"), std::nullopt});
  EXPECT_EQ(out, b({'D', 0, 0, 0, 16, 0, 2, 0, 0, 0, 2, 'a', 'b', 255, 255, 255, 255}));
  const std::string body = out.substr(5);  // the views point into it
  const auto values = parse_data_row(body);
  ASSERT_TRUE(values);
  EXPECT_EQ((*values)[0], "ab");
  EXPECT_FALSE((*values)[1]);
  out.clear();
  put_empty_query_response(out);
  EXPECT_EQ(out, b({'I', 0, 0, 0, 4}));
}

TEST(CodecBuild, AuthenticationCleartextPassword) {
  std::string out;
  put_authentication_cleartext(out);
  EXPECT_EQ(out, b({'R', 0, 0, 0, 8, 0, 0, 0, 3}));
}

TEST(CodecBuild, AuthenticationMd5Password) {
  std::string out;
  put_authentication_md5(out, {0xde, 0xad, 0xbe, 0xef});
  EXPECT_EQ(out, b({'R', 0, 0, 0, 12, 0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef}));
}

TEST(CodecBuild, AuthenticationSasl) {
  std::string out;
  put_authentication_sasl(out, {"SCRAM-SHA-256"});
  // 4 (length) + 4 (code 10) + 14 ("SCRAM-SHA-256\0") + 1 (list terminator) = 23
  EXPECT_EQ(out, b({'R', 0, 0, 0, 23, 0, 0, 0, 10}) + z("SCRAM-SHA-256") + b({0}));

  out.clear();
  put_authentication_sasl(out, {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  // 4 + 4 + 19 + 14 + 1 = 42
  EXPECT_EQ(out, b({'R', 0, 0, 0, 42, 0, 0, 0, 10}) + z("SCRAM-SHA-256-PLUS") + z("SCRAM-SHA-256") + b({0}));

  out.clear();
  put_authentication_sasl(out, {});
  EXPECT_EQ(out, b({'R', 0, 0, 0, 9, 0, 0, 0, 10, 0}));
}

TEST(CodecBuild, AuthenticationSaslContinue) {
  std::string out;
  put_authentication_sasl_continue(out, "r=abc,s=c2FsdA==,i=4096");  // 23 bytes, not NUL-terminated
  EXPECT_EQ(out, b({'R', 0, 0, 0, 31, 0, 0, 0, 11}) + "r=abc,s=c2FsdA==,i=4096"s);
}

TEST(CodecBuild, AuthenticationSaslFinal) {
  std::string out;
  put_authentication_sasl_final(out, "v=abc");
  EXPECT_EQ(out, b({'R', 0, 0, 0, 13, 0, 0, 0, 12}) + "v=abc"s);
}

TEST(CodecBuild, ParameterStatus) {
  std::string out;
  put_parameter_status(out, "client_encoding", "UTF8");
  // 4 + 16 + 5 = 25
  EXPECT_EQ(out, b({'S', 0, 0, 0, 25}) + z("client_encoding") + z("UTF8"));
  out.clear();
  put_parameter_status(out, "application_name", "");
  EXPECT_EQ(out, b({'S', 0, 0, 0, 22}) + z("application_name") + z(""));
}

TEST(CodecBuild, BackendKeyData) {
  std::string out;
  put_backend_key_data(out, 0x01020304, -2);
  EXPECT_EQ(out, b({'K', 0, 0, 0, 12, 0x01, 0x02, 0x03, 0x04, 0xff, 0xff, 0xff, 0xfe}));
}

TEST(CodecBuild, ReadyForQuery) {
  for (char status : {'I', 'T', 'E'}) {
    std::string out;
    put_ready_for_query(out, status);
    EXPECT_EQ(out, b({'Z', 0, 0, 0, 5, static_cast<unsigned>(status)}));
  }
}

TEST(CodecBuild, NegotiateProtocolVersion) {
  std::string out;
  put_negotiate_protocol_version(out, 0, {"_pq_.foo", "_pq_.bar"});
  // 4 + 4 (newest minor) + 4 (count) + 9 + 9 = 30
  EXPECT_EQ(out, b({'v', 0, 0, 0, 30, 0, 0, 0, 0, 0, 0, 0, 2}) + z("_pq_.foo") + z("_pq_.bar"));
  out.clear();
  put_negotiate_protocol_version(out, 0, {});
  EXPECT_EQ(out, b({'v', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0}));
}

TEST(CodecBuild, CommandComplete) {
  std::string out;
  put_command_complete(out, "SELECT 1");
  EXPECT_EQ(out, b({'C', 0, 0, 0, 13}) + z("SELECT 1"));
}

TEST(CodecBuild, ErrorResponse) {
  std::string out;
  put_error_response(out, {.severity = "FATAL", .sqlstate = "28P01", .message = "bad password"});
  // Fields as PostgreSQL orders them: S (localized severity), V (non-localized), C, M; then the 0 terminator.
  // 4 + 7 + 7 + 7 + 14 + 1 = 40
  EXPECT_EQ(out, b({'E', 0, 0, 0, 40}) + "S"s + z("FATAL") + "V"s + z("FATAL") + "C"s + z("28P01") + "M"s +
                     z("bad password") + b({0}));
}

TEST(CodecBuild, ErrorResponseWithDetailAndHint) {
  std::string out;
  put_error_response(out,
                     {.severity = "ERROR", .sqlstate = "08P01", .message = "m", .detail = "d", .hint = "h"});
  // 4 + 7 + 7 + 7 + 3 + 3 + 3 + 1 = 35
  EXPECT_EQ(out, b({'E', 0, 0, 0, 35}) + "S"s + z("ERROR") + "V"s + z("ERROR") + "C"s + z("08P01") + "M"s +
                     z("m") + "D"s + z("d") + "H"s + z("h") + b({0}));
}

TEST(CodecBuild, NoticeResponse) {
  std::string out;
  put_notice_response(out, {.severity = "NOTICE", .sqlstate = "00000", .message = "hi"});
  // 4 + 8 + 8 + 7 + 4 + 1 = 32
  EXPECT_EQ(out, b({'N', 0, 0, 0, 32}) + "S"s + z("NOTICE") + "V"s + z("NOTICE") + "C"s + z("00000") + "M"s +
                     z("hi") + b({0}));
}

TEST(CodecBuild, StartupMessage) {
  std::string out;
  put_startup_packet(out, {{"user", "alice"}, {"database", "db"}});
  // No type byte. 4 (length) + 4 (protocol 3.0 = 0x00030000) + 5 + 6 + 9 + 3 + 1 (terminator) = 32
  EXPECT_EQ(out, b({0, 0, 0, 32, 0, 3, 0, 0}) + z("user") + z("alice") + z("database") + z("db") + b({0}));
}

TEST(CodecBuild, StartupMessageOtherVersion) {
  std::string out;
  put_startup_packet(out, {{"user", "u"}}, 3, 2);
  EXPECT_EQ(out, b({0, 0, 0, 16, 0, 3, 0, 2}) + z("user") + z("u") + b({0}));
  out.clear();
  put_startup_packet(out, {});
  EXPECT_EQ(out, b({0, 0, 0, 9, 0, 3, 0, 0, 0}));
}

TEST(CodecBuild, SslRequest) {
  std::string out;
  put_ssl_request(out);
  // 80877103 = (1234 << 16) | 5679 = 0x04D2162F
  EXPECT_EQ(out, b({0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}));
}

TEST(CodecBuild, CancelRequest) {
  std::string out;
  put_cancel_request(out, 0x01020304, static_cast<std::int32_t>(0x8a0b0c0d));
  // 80877102 = (1234 << 16) | 5678 = 0x04D2162E
  EXPECT_EQ(out, b({0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0x01, 0x02, 0x03, 0x04, 0x8a, 0x0b, 0x0c, 0x0d}));
}

TEST(CodecBuild, PasswordMessage) {
  std::string out;
  put_password_message(out, "secret");
  EXPECT_EQ(out, b({'p', 0, 0, 0, 11}) + z("secret"));
}

TEST(CodecBuild, SaslInitialResponse) {
  std::string out;
  put_sasl_initial_response(out, "SCRAM-SHA-256", "n,,n=,r=abc");
  // 4 + 14 + 4 (Int32 length of the data) + 11 = 33
  EXPECT_EQ(out, b({'p', 0, 0, 0, 33}) + z("SCRAM-SHA-256") + b({0, 0, 0, 11}) + "n,,n=,r=abc"s);
}

TEST(CodecBuild, SaslResponse) {
  std::string out;
  put_sasl_response(out, "c=biws,r=abc,p=xyz");
  EXPECT_EQ(out, b({'p', 0, 0, 0, 22}) + "c=biws,r=abc,p=xyz"s);
}

TEST(CodecBuild, Query) {
  std::string out;
  put_query(out, "SELECT 1");
  EXPECT_EQ(out, b({'Q', 0, 0, 0, 13}) + z("SELECT 1"));
}

TEST(CodecBuild, EmptyCompletions) {
  std::string out;
  put_parse_complete(out);
  put_bind_complete(out);
  put_close_complete(out);
  put_no_data(out);
  EXPECT_EQ(out, b({'1', 0, 0, 0, 4, '2', 0, 0, 0, 4, '3', 0, 0, 0, 4, 'n', 0, 0, 0, 4}));
}

TEST(CodecBuild, SyncFlushTerminate) {
  std::string out;
  put_sync(out);
  EXPECT_EQ(out, b({'S', 0, 0, 0, 4}));
  out.clear();
  put_flush(out);
  EXPECT_EQ(out, b({'H', 0, 0, 0, 4}));
  out.clear();
  put_terminate(out);
  EXPECT_EQ(out, b({'X', 0, 0, 0, 4}));
}

TEST(CodecBuild, BuildersAppend) {
  std::string out = "prefix";
  put_sync(out);
  put_ready_for_query(out, 'I');
  EXPECT_EQ(out, "prefix"s + b({'S', 0, 0, 0, 4, 'Z', 0, 0, 0, 5, 'I'}));
}

TEST(CodecBuild, LongMessageLengthUsesAllFourBytes) {
  std::string out;
  put_query(out, std::string(0x010203 - 5, 'x'));  // length = 4 + (0x010203 - 5) + 1 = 0x010203
  ASSERT_EQ(out.size(), 1u + 0x010203);
  EXPECT_EQ(out.substr(0, 5), b({'Q', 0x00, 0x01, 0x02, 0x03}));
  EXPECT_EQ(out.back(), '\0');
}

TEST(CodecBuild, MessageWriterTyped) {
  std::string out = "ab";
  {
    MessageWriter w(out, 'T');
    w.i8(0xfe).i16(-2).i32(0x01020304).cstring("xy").raw("zw");
  }  // the destructor writes the length
  // 4 + 1 + 2 + 4 + 3 + 2 = 16
  EXPECT_EQ(out,
            "ab"s + b({'T', 0, 0, 0, 16, 0xfe, 0xff, 0xfe, 0x01, 0x02, 0x03, 0x04, 'x', 'y', 0, 'z', 'w'}));
}

TEST(CodecBuild, MessageWriterUntypedAndExplicitFinish) {
  std::string out;
  {
    MessageWriter w(out, 0);
    w.i32(5);
    w.finish();
    EXPECT_EQ(out, b({0, 0, 0, 8, 0, 0, 0, 5}));
    w.finish();  // idempotent, and the destructor does not write again
  }
  EXPECT_EQ(out, b({0, 0, 0, 8, 0, 0, 0, 5}));
}

TEST(CodecBuild, MessageWriterEmptyBody) {
  std::string out;
  { MessageWriter w(out, 'H'); }
  EXPECT_EQ(out, b({'H', 0, 0, 0, 4}));
}

// ---- framing: read_header / decode_message ----

constexpr std::uint32_t kMax = 1 << 20;

TEST(CodecFraming, ReadHeaderGolden) {
  const std::string query = b({'Q', 0, 0, 0, 13}) + z("SELECT 1");
  HeaderResult h = read_header(query, kMax);
  ASSERT_EQ(h.status, Status::ok);
  EXPECT_EQ(h.header.type, 'Q');
  EXPECT_EQ(h.header.length, 13u);
  EXPECT_EQ(h.header.total(), 14u);
  EXPECT_EQ(h.header.body_size(), 9u);
  // Only the 5 header bytes are needed.
  EXPECT_EQ(read_header(query.substr(0, kHeaderSize), kMax).status, Status::ok);
  for (std::size_t len = 0; len < kHeaderSize; ++len) {
    EXPECT_EQ(read_header(query.substr(0, len), kMax).status, Status::need_more) << len;
  }
}

TEST(CodecFraming, ReadHeaderBigEndianLength) {
  HeaderResult h = read_header(b({'D', 0x00, 0x01, 0x02, 0x03}), 0x7fffffff);
  ASSERT_EQ(h.status, Status::ok);
  EXPECT_EQ(h.header.length, 0x010203u);
}

TEST(CodecFraming, LengthBelowFourIsAnError) {
  for (unsigned len : {0u, 1u, 2u, 3u}) {
    HeaderResult h = read_header(b({'Q', 0, 0, 0, len}), kMax);
    EXPECT_EQ(h.status, Status::error) << len;
    EXPECT_FALSE(h.error.empty());
    MessageResult m = decode_message(b({'Q', 0, 0, 0, len}), kMax);
    EXPECT_EQ(m.status, Status::error) << len;
    EXPECT_FALSE(m.error.empty());
  }
  EXPECT_EQ(read_header(b({'S', 0, 0, 0, 4}), kMax).status, Status::ok);
}

TEST(CodecFraming, LengthOverMaximumIsAnErrorBeforeTheBodyArrives) {
  EXPECT_EQ(read_header(b({'Q', 0, 0, 0, 100}), 100).status, Status::ok);
  EXPECT_EQ(read_header(b({'Q', 0, 0, 0, 101}), 100).status, Status::error);
  EXPECT_EQ(decode_message(b({'Q', 0, 0, 0, 101}), 100).status, Status::error);
  EXPECT_EQ(decode_message(b({'Q', 0, 0, 0, 100}), 100).status, Status::need_more);
  // Lengths with the top bit set must not wrap into something small.
  EXPECT_EQ(read_header(b({'Q', 0xff, 0xff, 0xff, 0xff}), kMax).status, Status::error);
  EXPECT_EQ(read_header(b({'Q', 0x80, 0, 0, 0}), kMax).status, Status::error);
  EXPECT_EQ(decode_message(b({'Q', 0xff, 0xff, 0xff, 0xff}), kMax).status, Status::error);
}

TEST(CodecFraming, DecodeMessageGolden) {
  const std::string query = b({'Q', 0, 0, 0, 13}) + z("SELECT 1");
  MessageResult m = decode_message(query, kMax);
  ASSERT_EQ(m.status, Status::ok);
  EXPECT_EQ(m.message.type, 'Q');
  EXPECT_EQ(m.message.body, z("SELECT 1"));
  EXPECT_EQ(m.consumed, 14u);
  EXPECT_EQ(m.message.body.data(), query.data() + 5);  // a view, not a copy
}

TEST(CodecFraming, DecodeMessageNeedsMoreAtEverySplitPoint) {
  const std::string query = b({'Q', 0, 0, 0, 13}) + z("SELECT 1");
  for (std::size_t len = 0; len < query.size(); ++len) {
    MessageResult m = decode_message(query.substr(0, len), kMax);
    EXPECT_EQ(m.status, Status::need_more) << len;
    EXPECT_EQ(m.consumed, 0u) << len;
  }
}

TEST(CodecFraming, DecodeMessageEmptyBodyAndBackToBack) {
  const std::string stream = b({'S', 0, 0, 0, 4, 'H', 0, 0, 0, 4}) + b({'Q', 0, 0, 0, 6}) + z("x");
  std::string_view rest = stream;
  std::vector<char> types;
  while (!rest.empty()) {
    MessageResult m = decode_message(rest, kMax);
    ASSERT_EQ(m.status, Status::ok);
    types.push_back(m.message.type);
    if (m.message.type != 'Q') {
      EXPECT_TRUE(m.message.body.empty());
    }
    rest.remove_prefix(m.consumed);
  }
  EXPECT_EQ(types, (std::vector<char>{'S', 'H', 'Q'}));
}

TEST(CodecFraming, DecodeMessageRoundTripsEveryBuilder) {
  std::string stream;
  put_authentication_ok(stream);
  put_authentication_md5(stream, {1, 2, 3, 4});
  put_authentication_sasl(stream, {"SCRAM-SHA-256"});
  put_parameter_status(stream, "a", "b");
  put_backend_key_data(stream, 1, 2);
  put_ready_for_query(stream, 'T');
  put_error_response(stream, {.severity = "ERROR", .sqlstate = "XX000", .message = "m"});
  put_query(stream, "q");
  put_sasl_initial_response(stream, "SCRAM-SHA-256", "n,,n=,r=x");
  put_terminate(stream);
  std::string types;
  std::string_view rest = stream;
  while (!rest.empty()) {
    MessageResult m = decode_message(rest, kMax);
    ASSERT_EQ(m.status, Status::ok);
    types.push_back(m.message.type);
    rest.remove_prefix(m.consumed);
  }
  EXPECT_EQ(types, "RRRSKZEQpX");
}

// ---- startup phase ----

const std::string kStartup =
    b({0, 0, 0, 32, 0, 3, 0, 0}) + z("user") + z("alice") + z("database") + z("db") + b({0});

TEST(CodecStartup, StartupMessageGolden) {
  StartupResult r = decode_startup(kStartup);
  ASSERT_EQ(r.status, Status::ok) << r.error;
  EXPECT_EQ(r.consumed, 32u);
  const auto* sp = std::get_if<StartupPacket>(&r.message);
  ASSERT_NE(sp, nullptr);
  EXPECT_EQ(sp->major, 3);
  EXPECT_EQ(sp->minor, 0);
  ASSERT_EQ(sp->params.size(), 2u);
  EXPECT_EQ(sp->params[0], (std::pair<std::string, std::string>{"user", "alice"}));
  EXPECT_EQ(sp->params[1], (std::pair<std::string, std::string>{"database", "db"}));
  ASSERT_NE(sp->find("database"), nullptr);
  EXPECT_EQ(*sp->find("database"), "db");
  EXPECT_EQ(sp->find("options"), nullptr);
  EXPECT_EQ(sp->find("use"), nullptr);
}

TEST(CodecStartup, ConsumesOnlyThePacket) {
  StartupResult r = decode_startup(kStartup + b({'p', 0, 0, 0, 4}));
  ASSERT_EQ(r.status, Status::ok);
  EXPECT_EQ(r.consumed, kStartup.size());
}

TEST(CodecStartup, NeedsMoreAtEverySplitPoint) {
  for (std::size_t len = 0; len < kStartup.size(); ++len) {
    EXPECT_EQ(decode_startup(kStartup.substr(0, len)).status, Status::need_more) << len;
  }
}

TEST(CodecStartup, Protocol32Request) {
  // PostgreSQL 18 clients may ask for 3.2; the packet decodes with its version so the proxy can answer with
  // NegotiateProtocolVersion ("Protocol versions").
  const std::string packet = b({0, 0, 0, 16, 0, 3, 0, 2}) + z("user") + z("u") + b({0});
  StartupResult r = decode_startup(packet);
  ASSERT_EQ(r.status, Status::ok) << r.error;
  const auto* sp = std::get_if<StartupPacket>(&r.message);
  ASSERT_NE(sp, nullptr);
  EXPECT_EQ(sp->major, 3);
  EXPECT_EQ(sp->minor, 2);
  ASSERT_NE(sp->find("user"), nullptr);
  EXPECT_EQ(*sp->find("user"), "u");
}

TEST(CodecStartup, OtherMajorVersionsRejected) {
  for (unsigned major : {2u, 4u, 0u}) {
    const std::string packet = b({0, 0, 0, 16, 0, major, 0, 0}) + z("user") + z("u") + b({0});
    StartupResult r = decode_startup(packet);
    EXPECT_EQ(r.status, Status::error) << major;
    EXPECT_FALSE(r.error.empty());
  }
}

TEST(CodecStartup, SslRequest) {
  StartupResult r = decode_startup(b({0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}));
  ASSERT_EQ(r.status, Status::ok);
  EXPECT_TRUE(std::holds_alternative<SslRequest>(r.message));
  EXPECT_EQ(r.consumed, 8u);
}

TEST(CodecStartup, GssEncRequest) {
  // 80877104 = (1234 << 16) | 5680 = 0x04D21630
  StartupResult r = decode_startup(b({0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}));
  ASSERT_EQ(r.status, Status::ok);
  EXPECT_TRUE(std::holds_alternative<GssEncRequest>(r.message));
  EXPECT_EQ(r.consumed, 8u);
}

TEST(CodecStartup, CancelRequest) {
  StartupResult r = decode_startup(
      b({0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0x01, 0x02, 0x03, 0x04, 0x8a, 0x0b, 0x0c, 0x0d}));
  ASSERT_EQ(r.status, Status::ok);
  const auto* c = std::get_if<CancelRequest>(&r.message);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->process_id, 0x01020304);
  EXPECT_EQ(c->secret_key, static_cast<std::int32_t>(0x8a0b0c0d));
  EXPECT_EQ(r.consumed, 16u);
}

TEST(CodecStartup, SpecialRequestsWithWrongLengthRejected) {
  EXPECT_EQ(decode_startup(b({0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f, 0, 0, 0, 0})).status, Status::error);
  EXPECT_EQ(decode_startup(b({0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x30, 0, 0, 0, 0})).status, Status::error);
  EXPECT_EQ(decode_startup(b({0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1})).status, Status::error);
  EXPECT_EQ(decode_startup(b({0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2e})).status, Status::error);
  EXPECT_EQ(
      decode_startup(b({0, 0, 0, 20, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3})).status,
      Status::error);
}

TEST(CodecStartup, LengthBelowMinimumRejectedFromTheLengthAlone) {
  for (unsigned len = 0; len < kStartupMinLength; ++len) {
    StartupResult r = decode_startup(b({0, 0, 0, len}));
    EXPECT_EQ(r.status, Status::error) << len;
    EXPECT_FALSE(r.error.empty());
  }
}

TEST(CodecStartup, LengthAboveMaximumRejectedFromTheLengthAlone) {
  // 10001 = 0x2711
  EXPECT_EQ(decode_startup(b({0, 0, 0x27, 0x11})).status, Status::error);
  EXPECT_EQ(decode_startup(b({0, 0, 0x27, 0x11, 0, 3, 0, 0})).status, Status::error);
  EXPECT_EQ(decode_startup(b({0xff, 0xff, 0xff, 0xff})).status, Status::error);
  EXPECT_EQ(decode_startup(b({0x80, 0, 0, 8})).status, Status::error);
  // 10000 = 0x2710 is allowed: only more data is needed.
  EXPECT_EQ(decode_startup(b({0, 0, 0x27, 0x10, 0, 3, 0, 0})).status, Status::need_more);
}

TEST(CodecStartup, MaximumLengthPacketAccepted) {
  // 4 + 4 + 5 ("user\0") + value + NUL + 1 = 10000  ->  value of 9985 bytes
  const std::string packet =
      b({0, 0, 0x27, 0x10, 0, 3, 0, 0}) + z("user") + z(std::string(9985, 'u')) + b({0});
  ASSERT_EQ(packet.size(), 10000u);
  StartupResult r = decode_startup(packet);
  ASSERT_EQ(r.status, Status::ok) << r.error;
  EXPECT_EQ(r.consumed, 10000u);
}

TEST(CodecStartup, MalformedStartupMessagesRejected) {
  const std::vector<std::string> payloads = {
      "",                                      // no terminator at all (length 8)
      z("user") + z("alice"),                  // missing final terminator
      z("user") + "alice"s,                    // unterminated value
      z("user"),                               // name without value
      "user"s,                                 // unterminated name
      z("user") + z("alice") + b({0}) + "x"s,  // bytes after the terminator
      z("user") + z("alice") + b({0, 0}),      // two terminators
  };
  for (const auto& payload : payloads) {
    const unsigned len = static_cast<unsigned>(8 + payload.size());
    const std::string packet = b({0, 0, len >> 8, len & 0xff, 0, 3, 0, 0}) + payload;
    StartupResult r = decode_startup(packet);
    EXPECT_EQ(r.status, Status::error) << testing::PrintToString(payload);
    EXPECT_FALSE(r.error.empty());
  }
}

TEST(CodecStartup, EmptyParameterListAccepted) {
  StartupResult r = decode_startup(b({0, 0, 0, 9, 0, 3, 0, 0, 0}));
  ASSERT_EQ(r.status, Status::ok) << r.error;
  EXPECT_TRUE(std::get<StartupPacket>(r.message).params.empty());
}

// ---- body parsers ----

// Every strict prefix of a valid body must be rejected by `parse` (no partial acceptance, no over-read).
template <typename Parse>
void expect_every_prefix_rejected(const std::string& body, Parse parse) {
  for (std::size_t len = 0; len < body.size(); ++len) {
    // A copy of exactly `len` bytes, so that a parser reading past the end is caught by ASan.
    const std::string prefix = body.substr(0, len);
    EXPECT_FALSE(parse(std::string_view(prefix)).has_value()) << "prefix length " << len;
  }
}

TEST(CodecParse, ReadyForQuery) {
  EXPECT_EQ(parse_ready_for_query("I"), 'I');
  EXPECT_EQ(parse_ready_for_query("T"), 'T');
  EXPECT_EQ(parse_ready_for_query("E"), 'E');
  EXPECT_FALSE(parse_ready_for_query("").has_value());
  EXPECT_FALSE(parse_ready_for_query("X").has_value());
  EXPECT_FALSE(parse_ready_for_query("II").has_value());
  EXPECT_FALSE(parse_ready_for_query(b({0})).has_value());
}

TEST(CodecParse, FirstColumnOfDataRow) {
  // Int16 columns, then per column Int32 length (-1 for NULL) and the bytes.
  EXPECT_EQ(parse_first_column(b({0, 2, 0, 0, 0, 3}) + "742" + b({0, 0, 0, 1}) + "x"), "742");
  EXPECT_EQ(parse_first_column(b({0, 1, 0, 0, 0, 0})), "");
  EXPECT_FALSE(parse_first_column(b({0, 1, 0xff, 0xff, 0xff, 0xff})).has_value());  // NULL
  EXPECT_FALSE(parse_first_column(b({0, 0})).has_value());                          // no columns
  EXPECT_FALSE(parse_first_column(b({0, 1, 0, 0, 0, 5}) + "abc").has_value());      // cut short
  EXPECT_FALSE(parse_first_column(b({0, 1, 0x80, 0, 0, 0})).has_value());           // negative length
  EXPECT_FALSE(parse_first_column("").has_value());
}

TEST(CodecParse, EveryColumnOfDataRow) {
  const std::string body = b({0, 3, 0, 0, 0, 1}) + "a" + b({0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2}) + "bc";
  const auto row = parse_data_row(body);  // views into body
  ASSERT_TRUE(row.has_value());
  ASSERT_EQ(row->size(), 3u);
  EXPECT_EQ((*row)[0], "a");
  EXPECT_FALSE((*row)[1].has_value());  // NULL
  EXPECT_EQ((*row)[2], "bc");
  EXPECT_TRUE(parse_data_row(b({0, 0}))->empty());
  EXPECT_FALSE(parse_data_row(b({0, 1, 0, 0, 0, 5}) + "abc").has_value());  // cut short
  EXPECT_FALSE(parse_data_row(b({0, 1, 0, 0, 0, 1}) + "ab").has_value());   // bytes left over
  EXPECT_FALSE(parse_data_row(b({0xff, 0xff})).has_value());                // negative count
}

TEST(CodecParse, ParameterStatus) {
  const std::string body = z("client_encoding") + z("UTF8");
  auto p = parse_parameter_status(body);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->first, "client_encoding");
  EXPECT_EQ(p->second, "UTF8");
  expect_every_prefix_rejected(body, parse_parameter_status);
  EXPECT_FALSE(parse_parameter_status(body + "x"s).has_value());
  EXPECT_FALSE(parse_parameter_status(body + b({0})).has_value());

  const std::string empty_value_body = z("application_name") + z("");
  auto empty_value = parse_parameter_status(empty_value_body);
  ASSERT_TRUE(empty_value.has_value());
  EXPECT_EQ(empty_value->second, "");
}

TEST(CodecParse, BackendKeyData) {
  const std::string body = b({0x01, 0x02, 0x03, 0x04, 0xff, 0xff, 0xff, 0xfe});
  auto k = parse_backend_key_data(body);
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->process_id, 0x01020304);
  EXPECT_EQ(k->secret_key, -2);
  expect_every_prefix_rejected(body, parse_backend_key_data);
  EXPECT_FALSE(parse_backend_key_data(body + b({0})).has_value());
}

TEST(CodecParse, AuthenticationOkAndCleartext) {
  const std::string ok_body = b({0, 0, 0, 0});
  auto ok = parse_authentication(ok_body);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->code, authcode::kOk);
  EXPECT_TRUE(ok->data.empty());
  const std::string clear_body = b({0, 0, 0, 3});
  auto clear = parse_authentication(clear_body);
  ASSERT_TRUE(clear.has_value());
  EXPECT_EQ(clear->code, authcode::kCleartextPassword);
  EXPECT_FALSE(parse_authentication(b({0, 0, 0, 0, 1})).has_value());
  EXPECT_FALSE(parse_authentication(b({0, 0, 0, 3, 1})).has_value());
  expect_every_prefix_rejected(b({0, 0, 0, 0}), parse_authentication);
}

TEST(CodecParse, AuthenticationMd5) {
  const std::string body = b({0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef});
  auto a = parse_authentication(body);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->code, authcode::kMd5Password);
  EXPECT_EQ(a->data, b({0xde, 0xad, 0xbe, 0xef}));
  expect_every_prefix_rejected(body, parse_authentication);
  EXPECT_FALSE(parse_authentication(body + b({0})).has_value());
}

TEST(CodecParse, AuthenticationSaslFamily) {
  const std::string sasl_body = b({0, 0, 0, 10}) + z("SCRAM-SHA-256") + b({0});
  auto sasl = parse_authentication(sasl_body);
  ASSERT_TRUE(sasl.has_value());
  EXPECT_EQ(sasl->code, authcode::kSasl);
  EXPECT_EQ(sasl->data, z("SCRAM-SHA-256") + b({0}));

  const std::string cont_body = b({0, 0, 0, 11}) + "r=abc,s=c2FsdA==,i=4096"s;
  auto cont = parse_authentication(cont_body);
  ASSERT_TRUE(cont.has_value());
  EXPECT_EQ(cont->code, authcode::kSaslContinue);
  EXPECT_EQ(cont->data, "r=abc,s=c2FsdA==,i=4096");

  const std::string fin_body = b({0, 0, 0, 12}) + "v=abc"s;
  auto fin = parse_authentication(fin_body);
  ASSERT_TRUE(fin.has_value());
  EXPECT_EQ(fin->code, authcode::kSaslFinal);
  EXPECT_EQ(fin->data, "v=abc");
}

TEST(CodecParse, SaslMechanisms) {
  const std::string one_body = z("SCRAM-SHA-256") + b({0});
  auto one = parse_sasl_mechanisms(one_body);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(*one, (std::vector<std::string_view>{"SCRAM-SHA-256"}));

  const std::string two = z("SCRAM-SHA-256-PLUS") + z("SCRAM-SHA-256") + b({0});
  auto both = parse_sasl_mechanisms(two);
  ASSERT_TRUE(both.has_value());
  EXPECT_EQ(*both, (std::vector<std::string_view>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}));
  expect_every_prefix_rejected(two, parse_sasl_mechanisms);
  EXPECT_FALSE(parse_sasl_mechanisms(two + "x"s).has_value());

  const std::string none_body = b({0});
  auto none = parse_sasl_mechanisms(none_body);
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
}

TEST(CodecParse, SaslInitialResponse) {
  const std::string body = z("SCRAM-SHA-256") + b({0, 0, 0, 11}) + "n,,n=,r=abc"s;
  auto s = parse_sasl_initial_response(body);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->mechanism, "SCRAM-SHA-256");
  EXPECT_EQ(s->data, "n,,n=,r=abc");
  expect_every_prefix_rejected(body, parse_sasl_initial_response);
  EXPECT_FALSE(parse_sasl_initial_response(body + "x"s).has_value());
}

TEST(CodecParse, SaslInitialResponseWithoutData) {
  // Length -1: no initial response ("Message Formats", SASLInitialResponse).
  const std::string s_body = z("SCRAM-SHA-256") + b({0xff, 0xff, 0xff, 0xff});
  auto s = parse_sasl_initial_response(s_body);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->mechanism, "SCRAM-SHA-256");
  EXPECT_TRUE(s->data.empty());
  EXPECT_FALSE(
      parse_sasl_initial_response(z("SCRAM-SHA-256") + b({0xff, 0xff, 0xff, 0xff}) + "x"s).has_value());

  const std::string empty_body = z("SCRAM-SHA-256") + b({0, 0, 0, 0});
  auto empty = parse_sasl_initial_response(empty_body);
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->data.empty());
}

TEST(CodecParse, SaslInitialResponseBadLengths) {
  const std::string mech = z("SCRAM-SHA-256");
  EXPECT_FALSE(
      parse_sasl_initial_response(mech + b({0, 0, 0, 12}) + "n,,n=,r=abc"s).has_value());  // too long
  EXPECT_FALSE(
      parse_sasl_initial_response(mech + b({0, 0, 0, 10}) + "n,,n=,r=abc"s).has_value());  // too short
  EXPECT_FALSE(parse_sasl_initial_response(mech + b({0xff, 0xff, 0xff, 0xfe}) + "x"s).has_value());  // -2
  EXPECT_FALSE(parse_sasl_initial_response(mech + b({0x80, 0, 0, 0})).has_value());  // INT32_MIN
  EXPECT_FALSE(parse_sasl_initial_response(mech + b({0x7f, 0xff, 0xff, 0xff}) + "x"s).has_value());
  EXPECT_FALSE(parse_sasl_initial_response("SCRAM-SHA-256"s + b({0, 0, 0, 1}) + "x"s).has_value());
}

TEST(CodecParse, PasswordMessage) {
  const std::string body = z("secret");
  EXPECT_EQ(parse_password_message(body), std::optional<std::string_view>("secret"));
  EXPECT_EQ(parse_password_message(z("")), std::optional<std::string_view>(""));
  expect_every_prefix_rejected(body, parse_password_message);
  EXPECT_FALSE(parse_password_message(body + "x"s).has_value());
  EXPECT_FALSE(parse_password_message(body + b({0})).has_value());
}

TEST(CodecParse, Query) {
  const std::string body = z("SELECT 1");
  EXPECT_EQ(parse_query(body), std::optional<std::string_view>("SELECT 1"));
  EXPECT_EQ(parse_query(z("")), std::optional<std::string_view>(""));
  expect_every_prefix_rejected(body, parse_query);
  EXPECT_FALSE(parse_query(body + "x"s).has_value());
}

TEST(CodecParse, ErrorFields) {
  // The body of a real PostgreSQL ErrorResponse: S, V, C, M, F, L, R fields, then the 0 terminator.
  const std::string body = "S"s + z("FATAL") + "V"s + z("FATAL") + "C"s + z("28P01") + "M"s +
                           z("password authentication failed for user \"alice\"") + "F"s + z("auth.c") +
                           "L"s + z("323") + "R"s + z("auth_failed") + b({0});
  auto fields = parse_fields(body);
  ASSERT_TRUE(fields.has_value());
  ASSERT_EQ(fields->size(), 7u);
  EXPECT_EQ((*fields)[0].code, 'S');
  EXPECT_EQ((*fields)[0].value, "FATAL");
  EXPECT_EQ((*fields)[3].code, 'M');
  EXPECT_EQ(find_field(*fields, 'C'), "28P01");
  EXPECT_EQ(find_field(*fields, 'V'), "FATAL");
  EXPECT_EQ(find_field(*fields, 'M'), "password authentication failed for user \"alice\"");
  EXPECT_EQ(find_field(*fields, 'R'), "auth_failed");
  EXPECT_EQ(find_field(*fields, 'D'), "");
  expect_every_prefix_rejected(body, parse_fields);
  EXPECT_FALSE(parse_fields(body + "x"s).has_value());
  EXPECT_FALSE(parse_fields(body + b({0})).has_value());
}

TEST(CodecParse, ErrorFieldsEdgeCases) {
  const std::string none_body = b({0});
  auto none = parse_fields(none_body);
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(parse_fields("").has_value());
  // A field code whose value is missing its NUL.
  EXPECT_FALSE(parse_fields("Mabc"s).has_value());
  // Field code byte values above 0x7f are kept as they are.
  const std::string high_body = b({0xc3}) + z("v") + b({0});
  auto high = parse_fields(high_body);
  ASSERT_TRUE(high.has_value());
  EXPECT_EQ((*high)[0].code, static_cast<char>(0xc3));
}

TEST(CodecParse, BuiltErrorResponseParsesBack) {
  std::string out;
  put_error_response(out, {.severity = "FATAL", .sqlstate = "53300", .message = "too many", .hint = "wait"});
  MessageResult m = decode_message(out, kMax);
  ASSERT_EQ(m.status, Status::ok);
  auto fields = parse_fields(m.message.body);
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(find_field(*fields, 'S'), "FATAL");
  EXPECT_EQ(find_field(*fields, 'C'), "53300");
  EXPECT_EQ(find_field(*fields, 'M'), "too many");
  EXPECT_EQ(find_field(*fields, 'H'), "wait");
  EXPECT_EQ(find_field(*fields, 'D'), "");
}

// ---- Reader ----

TEST(CodecReader, GoldenReads) {
  const std::string body = b({0xfe, 0xff, 0xfe, 0x80, 0, 0, 0}) + z("ab") + "xyz"s;
  Reader r(body);
  std::uint8_t u8 = 0;
  std::int16_t i16 = 0;
  std::int32_t i32 = 0;
  std::string_view s;
  ASSERT_TRUE(r.u8(u8));
  EXPECT_EQ(u8, 0xfe);
  ASSERT_TRUE(r.i16(i16));
  EXPECT_EQ(i16, -2);
  ASSERT_TRUE(r.i32(i32));
  EXPECT_EQ(i32, INT32_MIN);
  ASSERT_TRUE(r.cstring(s));
  EXPECT_EQ(s, "ab");
  EXPECT_EQ(r.remaining(), 3u);
  EXPECT_EQ(r.rest(), "xyz");
  ASSERT_TRUE(r.bytes(2, s));
  EXPECT_EQ(s, "xy");
  ASSERT_TRUE(r.bytes(1, s));
  EXPECT_TRUE(r.at_end());
  EXPECT_FALSE(r.u8(u8));
  EXPECT_TRUE(r.bytes(0, s));
}

TEST(CodecReader, ShortReadsFailWithoutAdvancing) {
  {
    const std::string data = b({1});
    Reader r(data);
    std::int16_t v = 0;
    EXPECT_FALSE(r.i16(v));
    EXPECT_EQ(r.remaining(), 1u);
  }
  {
    const std::string data = b({1, 2, 3});
    Reader r(data);
    std::int32_t v = 0;
    EXPECT_FALSE(r.i32(v));
    EXPECT_EQ(r.remaining(), 3u);
  }
  {
    Reader r("abc");  // no NUL
    std::string_view s;
    EXPECT_FALSE(r.cstring(s));
    EXPECT_EQ(r.remaining(), 3u);
  }
  {
    Reader r("abc");
    std::string_view s;
    EXPECT_FALSE(r.bytes(4, s));
    EXPECT_FALSE(r.bytes(static_cast<std::size_t>(-1), s));
    EXPECT_EQ(r.remaining(), 3u);
  }
  {
    Reader r("");
    std::uint8_t v = 0;
    EXPECT_FALSE(r.u8(v));
    EXPECT_TRUE(r.at_end());
  }
}

// ---- type bytes ----

TEST(CodecTypes, FrontendAndBackendSets) {
  const std::set<char> frontend = {'B', 'C', 'd', 'c', 'f', 'D', 'E', 'H', 'F', 'P', 'p', 'Q', 'S', 'X'};
  const std::set<char> backend = {'R', 'K', '2', '3', 'C', 'd', 'c', 'G', 'H', 'W', 'D', 'I',
                                  'E', 'V', 'v', 'n', 'N', 'A', 't', 'S', '1', 's', 'Z', 'T'};
  for (int i = 0; i < 256; ++i) {
    const char t = static_cast<char>(i);
    EXPECT_EQ(is_frontend_type(t), frontend.count(t) == 1) << i;
    EXPECT_EQ(is_backend_type(t), backend.count(t) == 1) << i;
    EXPECT_EQ(frontend_type_name(t) == "unknown", frontend.count(t) == 0) << i;
    EXPECT_EQ(backend_type_name(t) == "unknown", backend.count(t) == 0) << i;
  }
  EXPECT_EQ(frontend_type_name('Q'), "Query");
  EXPECT_EQ(frontend_type_name('P'), "Parse");
  EXPECT_EQ(backend_type_name('Z'), "ReadyForQuery");
  EXPECT_EQ(backend_type_name('T'), "RowDescription");
}

TEST(CodecTypes, ConstantsMatchTheDocs) {
  EXPECT_EQ(kSslRequestCode, (1234u << 16) | 5679u);
  EXPECT_EQ(kGssEncRequestCode, (1234u << 16) | 5680u);
  EXPECT_EQ(kCancelRequestCode, (1234u << 16) | 5678u);
  EXPECT_EQ(authcode::kSasl, 10);
  EXPECT_EQ(authcode::kSaslContinue, 11);
  EXPECT_EQ(authcode::kSaslFinal, 12);
  EXPECT_EQ(authcode::kMd5Password, 5);
}

}  // namespace
}  // namespace pgward::protocol
