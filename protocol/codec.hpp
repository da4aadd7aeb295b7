// PostgreSQL wire protocol 3.0 codec: framing, bounds-checked views over received bytes, and builders for
// what the proxy sends. Pure: no sockets, no allocation in the views, no exceptions (untrusted bytes never
// throw). Reference: PostgreSQL docs, chapter "Frontend/Backend Protocol", sections "Message Formats"
// (protocol-message- formats) and "Message Flow" (protocol-flow).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace pgward::protocol {

// ---- message type bytes ("Message Formats") ----
namespace fe {  // frontend (client to server)
inline constexpr char kBind = 'B';
inline constexpr char kClose = 'C';
inline constexpr char kCopyData = 'd';
inline constexpr char kCopyDone = 'c';
inline constexpr char kCopyFail = 'f';
inline constexpr char kDescribe = 'D';
inline constexpr char kExecute = 'E';
inline constexpr char kFlush = 'H';
inline constexpr char kFunctionCall = 'F';
inline constexpr char kParse = 'P';
inline constexpr char kPassword = 'p';  // also SASLInitialResponse, SASLResponse, GSSResponse
inline constexpr char kQuery = 'Q';
inline constexpr char kSync = 'S';
inline constexpr char kTerminate = 'X';
}  // namespace fe

namespace be {  // backend (server to client)
inline constexpr char kAuthentication = 'R';
inline constexpr char kBackendKeyData = 'K';
inline constexpr char kBindComplete = '2';
inline constexpr char kCloseComplete = '3';
inline constexpr char kCommandComplete = 'C';
inline constexpr char kCopyData = 'd';
inline constexpr char kCopyDone = 'c';
inline constexpr char kCopyInResponse = 'G';
inline constexpr char kCopyOutResponse = 'H';
inline constexpr char kCopyBothResponse = 'W';
inline constexpr char kDataRow = 'D';
inline constexpr char kEmptyQueryResponse = 'I';
inline constexpr char kErrorResponse = 'E';
inline constexpr char kFunctionCallResponse = 'V';
inline constexpr char kNegotiateProtocolVersion = 'v';
inline constexpr char kNoData = 'n';
inline constexpr char kNoticeResponse = 'N';
inline constexpr char kNotificationResponse = 'A';
inline constexpr char kParameterDescription = 't';
inline constexpr char kParameterStatus = 'S';
inline constexpr char kParseComplete = '1';
inline constexpr char kPortalSuspended = 's';
inline constexpr char kReadyForQuery = 'Z';
inline constexpr char kRowDescription = 'T';
}  // namespace be

bool is_frontend_type(char type);
bool is_backend_type(char type);
// "Query", "Parse", ...; "unknown" for anything else. For logs at debug level.
std::string_view frontend_type_name(char type);
std::string_view backend_type_name(char type);

// Authentication request codes (the Int32 after 'R').
namespace authcode {
inline constexpr std::int32_t kOk = 0;
inline constexpr std::int32_t kCleartextPassword = 3;
inline constexpr std::int32_t kMd5Password = 5;
inline constexpr std::int32_t kGss = 7;
inline constexpr std::int32_t kGssContinue = 8;
inline constexpr std::int32_t kSspi = 9;
inline constexpr std::int32_t kSasl = 10;
inline constexpr std::int32_t kSaslContinue = 11;
inline constexpr std::int32_t kSaslFinal = 12;
}  // namespace authcode

// Transaction status byte of ReadyForQuery.
inline constexpr char kTxIdle = 'I';
inline constexpr char kTxInBlock = 'T';
inline constexpr char kTxFailed = 'E';

// ---- startup-phase packets: Int32 length, Int32 code, payload (no type byte) ----
inline constexpr std::uint32_t kStartupMinLength = 8;
inline constexpr std::uint32_t kStartupMaxLength = 10'000;  // whole packet, length word included
inline constexpr std::uint32_t kCancelRequestCode = 80877102;
inline constexpr std::uint32_t kSslRequestCode = 80877103;
inline constexpr std::uint32_t kGssEncRequestCode = 80877104;
inline constexpr std::uint16_t kProtocolMajor = 3;
inline constexpr std::uint16_t kProtocolMinor = 0;

// ---- decoding outcomes (as Envoy's decoder: need more bytes, a message, or an error) ----
enum class Status { need_more, ok, error };

// Header of a typed message: the type byte and Int32 length (which counts itself, not the type byte).
struct Header {
  char type = 0;
  std::uint32_t length = 0;
  std::size_t total() const { return 1 + static_cast<std::size_t>(length); }
  std::size_t body_size() const { return static_cast<std::size_t>(length) - 4; }
};
inline constexpr std::size_t kHeaderSize = 5;

struct HeaderResult {
  Status status = Status::need_more;
  Header header;
  std::string_view error;  // static text when status == error
};
// Reads the 5-byte header at the start of buf and checks 4 <= length <= max_length before anyone allocates.
HeaderResult read_header(std::string_view buf, std::uint32_t max_length);

struct Message {
  char type = 0;
  std::string_view body;  // view into the caller's buffer
};
struct MessageResult {
  Status status = Status::need_more;
  Message message;
  std::size_t consumed = 0;  // header + body when ok
  std::string_view error;
};
// A whole typed message at the start of buf (need_more until all of it is there).
MessageResult decode_message(std::string_view buf, std::uint32_t max_length);

struct StartupPacket {
  std::uint16_t major = 0;
  std::uint16_t minor = 0;
  std::vector<std::pair<std::string, std::string>> params;  // in the order sent
  const std::string* find(std::string_view name) const;
};
struct SslRequest {};
struct GssEncRequest {};
struct CancelRequest {
  std::int32_t process_id = 0;
  std::int32_t secret_key = 0;
};
using StartupMessage = std::variant<StartupPacket, SslRequest, GssEncRequest, CancelRequest>;

struct StartupResult {
  Status status = Status::need_more;
  StartupMessage message;
  std::size_t consumed = 0;
  std::string error;  // for the client, when status == error
};
// A startup-phase packet at the start of buf, length bounded to [8, 10000] before anything is copied.
StartupResult decode_startup(std::string_view buf);

// ---- bounds-checked body reader ----
class Reader {
 public:
  explicit Reader(std::string_view body) : data_(body) {}
  bool u8(std::uint8_t& out);
  bool i16(std::int16_t& out);
  bool i32(std::int32_t& out);
  bool cstring(std::string_view& out);  // NUL-terminated; the view excludes the NUL
  bool bytes(std::size_t n, std::string_view& out);
  std::size_t remaining() const { return data_.size() - pos_; }
  bool at_end() const { return pos_ == data_.size(); }
  std::string_view rest() const { return data_.substr(pos_); }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
};

// ---- parsers for the message bodies the proxy inspects (nullopt when malformed) ----
std::optional<char> parse_ready_for_query(std::string_view body);
std::optional<std::pair<std::string_view, std::string_view>> parse_parameter_status(std::string_view body);
std::optional<CancelRequest> parse_backend_key_data(std::string_view body);

struct AuthRequest {
  std::int32_t code = 0;
  std::string_view data;  // salt (md5), mechanism list (SASL), or SASL data
};
std::optional<AuthRequest> parse_authentication(std::string_view body);
// Mechanism names of AuthenticationSASL's list.
std::optional<std::vector<std::string_view>> parse_sasl_mechanisms(std::string_view data);

struct SaslInitialResponse {
  std::string_view mechanism;
  std::string_view data;  // empty when the length is -1
};
std::optional<SaslInitialResponse> parse_sasl_initial_response(std::string_view body);
// PasswordMessage: the NUL-terminated password.
std::optional<std::string_view> parse_password_message(std::string_view body);
// Query: the NUL-terminated SQL text.
std::optional<std::string_view> parse_query(std::string_view body);

// DataRow: the first column's value; nullopt when it is NULL, there are no columns or the row is malformed.
std::optional<std::string_view> parse_first_column(std::string_view body);
// DataRow: every column's value (nullopt for NULL); nullopt when the row is malformed.
std::optional<std::vector<std::optional<std::string_view>>> parse_data_row(std::string_view body);

// ErrorResponse/NoticeResponse fields: (code byte, value) in order.
struct Field {
  char code = 0;
  std::string_view value;
};
std::optional<std::vector<Field>> parse_fields(std::string_view body);
std::string_view find_field(const std::vector<Field>& fields, char code);  // empty when absent

// ---- builders: each appends one complete message to out ----
struct ErrorSpec {
  std::string_view severity = "ERROR";  // ERROR | FATAL | PANIC (or WARNING/NOTICE for notices)
  std::string_view sqlstate;
  std::string_view message;
  std::string_view detail = {};
  std::string_view hint = {};
};
void put_error_response(std::string& out, const ErrorSpec& spec);
void put_notice_response(std::string& out, const ErrorSpec& spec);
void put_authentication_ok(std::string& out);
void put_authentication_cleartext(std::string& out);
void put_authentication_md5(std::string& out, const std::array<std::uint8_t, 4>& salt);
void put_authentication_sasl(std::string& out, const std::vector<std::string_view>& mechanisms);
void put_authentication_sasl_continue(std::string& out, std::string_view data);
void put_authentication_sasl_final(std::string& out, std::string_view data);
void put_parameter_status(std::string& out, std::string_view name, std::string_view value);
void put_backend_key_data(std::string& out, std::int32_t process_id, std::int32_t secret_key);
void put_ready_for_query(std::string& out, char tx_status);
void put_negotiate_protocol_version(std::string& out, std::int32_t newest_minor,
                                    const std::vector<std::string_view>& unrecognized_options);
void put_command_complete(std::string& out, std::string_view tag);
void put_parse_complete(std::string& out);
void put_bind_complete(std::string& out);
void put_close_complete(std::string& out);
void put_no_data(std::string& out);
// RowDescription of text-format columns that belong to no table ("Message Formats": RowDescription).
struct ColumnSpec {
  std::string_view name;
  std::int32_t type_oid = 25;  // text
};
void put_row_description(std::string& out, const std::vector<ColumnSpec>& columns);
// DataRow of text values (nullopt: NULL).
void put_data_row(std::string& out, const std::vector<std::optional<std::string>>& values);
void put_empty_query_response(std::string& out);

void put_startup_packet(std::string& out, const std::vector<std::pair<std::string, std::string>>& params,
                        std::uint16_t major = kProtocolMajor, std::uint16_t minor = kProtocolMinor);
void put_ssl_request(std::string& out);
void put_cancel_request(std::string& out, std::int32_t process_id, std::int32_t secret_key);
void put_password_message(std::string& out, std::string_view password);
void put_sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data);
void put_sasl_response(std::string& out, std::string_view data);
void put_query(std::string& out, std::string_view sql);
void put_sync(std::string& out);
void put_flush(std::string& out);
void put_terminate(std::string& out);

// Low-level helpers for builders elsewhere: begin a typed message, append fields, then patch its length.
class MessageWriter {
 public:
  MessageWriter(std::string& out, char type);  // type 0: untyped (startup-phase packet)
  MessageWriter& i8(std::uint8_t v);
  MessageWriter& i16(std::int16_t v);
  MessageWriter& i32(std::int32_t v);
  MessageWriter& cstring(std::string_view s);  // appends s and a NUL
  MessageWriter& raw(std::string_view s);
  void finish();  // writes the length; called by the destructor if not called before
  ~MessageWriter();
  MessageWriter(const MessageWriter&) = delete;
  MessageWriter& operator=(const MessageWriter&) = delete;

 private:
  std::string& out_;
  std::size_t length_at_;
  bool finished_ = false;
};

}  // namespace pgward::protocol
