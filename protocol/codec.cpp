#include "protocol/codec.hpp"

#include <cstring>

namespace pgward::protocol {
namespace {

std::uint32_t load_u32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) | (std::uint32_t{u[2]} << 8) | u[3];
}

void store_u32(char* p, std::uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}

}  // namespace

// Every frontend type byte of protocol 3.0 ("Message Formats").
bool is_frontend_type(char t) {
  switch (t) {
    case fe::kBind:
    case fe::kClose:
    case fe::kCopyData:
    case fe::kCopyDone:
    case fe::kCopyFail:
    case fe::kDescribe:
    case fe::kExecute:
    case fe::kFlush:
    case fe::kFunctionCall:
    case fe::kParse:
    case fe::kPassword:
    case fe::kQuery:
    case fe::kSync:
    case fe::kTerminate: return true;
    default: return false;
  }
}

bool is_backend_type(char t) {
  switch (t) {
    case be::kAuthentication:
    case be::kBackendKeyData:
    case be::kBindComplete:
    case be::kCloseComplete:
    case be::kCommandComplete:
    case be::kCopyData:
    case be::kCopyDone:
    case be::kCopyInResponse:
    case be::kCopyOutResponse:
    case be::kCopyBothResponse:
    case be::kDataRow:
    case be::kEmptyQueryResponse:
    case be::kErrorResponse:
    case be::kFunctionCallResponse:
    case be::kNegotiateProtocolVersion:
    case be::kNoData:
    case be::kNoticeResponse:
    case be::kNotificationResponse:
    case be::kParameterDescription:
    case be::kParameterStatus:
    case be::kParseComplete:
    case be::kPortalSuspended:
    case be::kReadyForQuery:
    case be::kRowDescription: return true;
    default: return false;
  }
}

std::string_view frontend_type_name(char t) {
  switch (t) {
    case fe::kBind: return "Bind";
    case fe::kClose: return "Close";
    case fe::kCopyData: return "CopyData";
    case fe::kCopyDone: return "CopyDone";
    case fe::kCopyFail: return "CopyFail";
    case fe::kDescribe: return "Describe";
    case fe::kExecute: return "Execute";
    case fe::kFlush: return "Flush";
    case fe::kFunctionCall: return "FunctionCall";
    case fe::kParse: return "Parse";
    case fe::kPassword: return "PasswordMessage";
    case fe::kQuery: return "Query";
    case fe::kSync: return "Sync";
    case fe::kTerminate: return "Terminate";
    default: return "unknown";
  }
}

std::string_view backend_type_name(char t) {
  switch (t) {
    case be::kAuthentication: return "Authentication";
    case be::kBackendKeyData: return "BackendKeyData";
    case be::kBindComplete: return "BindComplete";
    case be::kCloseComplete: return "CloseComplete";
    case be::kCommandComplete: return "CommandComplete";
    case be::kCopyData: return "CopyData";
    case be::kCopyDone: return "CopyDone";
    case be::kCopyInResponse: return "CopyInResponse";
    case be::kCopyOutResponse: return "CopyOutResponse";
    case be::kCopyBothResponse: return "CopyBothResponse";
    case be::kDataRow: return "DataRow";
    case be::kEmptyQueryResponse: return "EmptyQueryResponse";
    case be::kErrorResponse: return "ErrorResponse";
    case be::kFunctionCallResponse: return "FunctionCallResponse";
    case be::kNegotiateProtocolVersion: return "NegotiateProtocolVersion";
    case be::kNoData: return "NoData";
    case be::kNoticeResponse: return "NoticeResponse";
    case be::kNotificationResponse: return "NotificationResponse";
    case be::kParameterDescription: return "ParameterDescription";
    case be::kParameterStatus: return "ParameterStatus";
    case be::kParseComplete: return "ParseComplete";
    case be::kPortalSuspended: return "PortalSuspended";
    case be::kReadyForQuery: return "ReadyForQuery";
    case be::kRowDescription: return "RowDescription";
    default: return "unknown";
  }
}

HeaderResult read_header(std::string_view buf, std::uint32_t max_length) {
  HeaderResult r;
  if (buf.size() < kHeaderSize) return r;
  r.header.type = buf[0];
  r.header.length = load_u32(buf.data() + 1);
  if (r.header.length < 4) {
    r.status = Status::error;
    r.error = "invalid message length (less than 4)";
  } else if (r.header.length > max_length) {
    r.status = Status::error;
    r.error = "message length exceeds max_message_size";
  } else {
    r.status = Status::ok;
  }
  return r;
}

MessageResult decode_message(std::string_view buf, std::uint32_t max_length) {
  MessageResult r;
  HeaderResult h = read_header(buf, max_length);
  if (h.status != Status::ok) {
    r.status = h.status;
    r.error = h.error;
    return r;
  }
  if (buf.size() < h.header.total()) return r;
  r.status = Status::ok;
  r.message.type = h.header.type;
  r.message.body = buf.substr(kHeaderSize, h.header.body_size());
  r.consumed = h.header.total();
  return r;
}

const std::string* StartupPacket::find(std::string_view name) const {
  for (const auto& [k, v] : params)
    if (k == name) return &v;
  return nullptr;
}

StartupResult decode_startup(std::string_view buf) {
  StartupResult r;
  if (buf.size() < 4) return r;
  const std::uint32_t len = load_u32(buf.data());
  if (len < kStartupMinLength || len > kStartupMaxLength) {
    r.status = Status::error;
    r.error = "invalid length of startup packet";
    return r;
  }
  if (buf.size() < len) return r;
  r.consumed = len;
  const std::uint32_t code = load_u32(buf.data() + 4);
  const std::string_view payload = buf.substr(8, len - 8);

  if (code == kSslRequestCode || code == kGssEncRequestCode) {
    if (len != 8) {
      r.status = Status::error;
      r.error = "invalid length of encryption request packet";
      return r;
    }
    r.status = Status::ok;
    r.message = code == kSslRequestCode ? StartupMessage{SslRequest{}} : StartupMessage{GssEncRequest{}};
    return r;
  }
  if (code == kCancelRequestCode) {
    if (len != 16) {
      r.status = Status::error;
      r.error = "invalid length of cancel request packet";
      return r;
    }
    r.status = Status::ok;
    r.message = CancelRequest{static_cast<std::int32_t>(load_u32(payload.data())),
                              static_cast<std::int32_t>(load_u32(payload.data() + 4))};
    return r;
  }

  StartupPacket sp;
  sp.major = static_cast<std::uint16_t>(code >> 16);
  sp.minor = static_cast<std::uint16_t>(code & 0xffff);
  if (sp.major != kProtocolMajor) {
    r.status = Status::error;
    r.error = "unsupported frontend protocol " + std::to_string(sp.major) + "." + std::to_string(sp.minor) +
              ": server supports 3.0 to 3.0";
    return r;
  }
  // name\0value\0 ... \0 ("StartupMessage")
  Reader rd(payload);
  for (;;) {
    std::string_view name;
    if (!rd.cstring(name)) {
      r.status = Status::error;
      r.error = "invalid startup packet layout: expected terminator as last byte";
      return r;
    }
    if (name.empty()) break;
    std::string_view value;
    if (!rd.cstring(value)) {
      r.status = Status::error;
      r.error = "invalid startup packet layout: missing value for parameter";
      return r;
    }
    sp.params.emplace_back(std::string(name), std::string(value));
  }
  if (!rd.at_end()) {
    r.status = Status::error;
    r.error = "invalid startup packet layout: expected terminator as last byte";
    return r;
  }
  r.status = Status::ok;
  r.message = std::move(sp);
  return r;
}

bool Reader::u8(std::uint8_t& out) {
  if (remaining() < 1) return false;
  out = static_cast<std::uint8_t>(data_[pos_++]);
  return true;
}

bool Reader::i16(std::int16_t& out) {
  if (remaining() < 2) return false;
  const auto* u = reinterpret_cast<const unsigned char*>(data_.data() + pos_);
  out = static_cast<std::int16_t>((u[0] << 8) | u[1]);
  pos_ += 2;
  return true;
}

bool Reader::i32(std::int32_t& out) {
  if (remaining() < 4) return false;
  out = static_cast<std::int32_t>(load_u32(data_.data() + pos_));
  pos_ += 4;
  return true;
}

bool Reader::cstring(std::string_view& out) {
  const std::size_t nul = data_.find('\0', pos_);
  if (nul == std::string_view::npos) return false;
  out = data_.substr(pos_, nul - pos_);
  pos_ = nul + 1;
  return true;
}

bool Reader::bytes(std::size_t n, std::string_view& out) {
  if (remaining() < n) return false;
  out = data_.substr(pos_, n);
  pos_ += n;
  return true;
}

std::optional<char> parse_ready_for_query(std::string_view body) {
  if (body.size() != 1) return std::nullopt;
  const char s = body[0];
  if (s != kTxIdle && s != kTxInBlock && s != kTxFailed) return std::nullopt;
  return s;
}

std::optional<std::pair<std::string_view, std::string_view>> parse_parameter_status(std::string_view body) {
  Reader rd(body);
  std::string_view name, value;
  if (!rd.cstring(name) || !rd.cstring(value) || !rd.at_end()) return std::nullopt;
  return std::pair{name, value};
}

std::optional<CancelRequest> parse_backend_key_data(std::string_view body) {
  Reader rd(body);
  CancelRequest k;
  if (!rd.i32(k.process_id) || !rd.i32(k.secret_key) || !rd.at_end()) return std::nullopt;
  return k;
}

std::optional<AuthRequest> parse_authentication(std::string_view body) {
  Reader rd(body);
  AuthRequest a;
  if (!rd.i32(a.code)) return std::nullopt;
  a.data = rd.rest();
  if (a.code == authcode::kMd5Password && a.data.size() != 4) return std::nullopt;
  if ((a.code == authcode::kOk || a.code == authcode::kCleartextPassword) && !a.data.empty())
    return std::nullopt;
  return a;
}

std::optional<std::vector<std::string_view>> parse_sasl_mechanisms(std::string_view data) {
  Reader rd(data);
  std::vector<std::string_view> out;
  for (;;) {
    std::string_view m;
    if (!rd.cstring(m)) return std::nullopt;
    if (m.empty()) break;
    out.push_back(m);
  }
  if (!rd.at_end()) return std::nullopt;
  return out;
}

std::optional<SaslInitialResponse> parse_sasl_initial_response(std::string_view body) {
  Reader rd(body);
  SaslInitialResponse s;
  std::int32_t len = 0;
  if (!rd.cstring(s.mechanism) || !rd.i32(len)) return std::nullopt;
  if (len == -1) {
    if (!rd.at_end()) return std::nullopt;
    return s;
  }
  if (len < 0 || static_cast<std::size_t>(len) != rd.remaining()) return std::nullopt;
  s.data = rd.rest();
  return s;
}

std::optional<std::string_view> parse_password_message(std::string_view body) {
  Reader rd(body);
  std::string_view pw;
  if (!rd.cstring(pw) || !rd.at_end()) return std::nullopt;
  return pw;
}

std::optional<std::string_view> parse_query(std::string_view body) { return parse_password_message(body); }

std::optional<std::string_view> parse_first_column(std::string_view body) {
  Reader rd(body);
  std::int16_t columns = 0;
  std::int32_t length = 0;
  std::string_view value;
  if (!rd.i16(columns) || columns < 1 || !rd.i32(length) || length < 0 ||
      !rd.bytes(static_cast<std::size_t>(length), value))
    return std::nullopt;
  return value;
}

std::optional<std::vector<std::optional<std::string_view>>> parse_data_row(std::string_view body) {
  Reader rd(body);
  std::int16_t columns = 0;
  if (!rd.i16(columns) || columns < 0) return std::nullopt;
  std::vector<std::optional<std::string_view>> out;
  for (std::int16_t i = 0; i < columns; ++i) {
    std::int32_t length = 0;
    std::string_view value;
    if (!rd.i32(length)) return std::nullopt;
    if (length < 0) {
      out.emplace_back();
      continue;
    }
    if (!rd.bytes(static_cast<std::size_t>(length), value)) return std::nullopt;
    out.emplace_back(value);
  }
  if (!rd.at_end()) return std::nullopt;
  return out;
}

std::optional<std::vector<Field>> parse_fields(std::string_view body) {
  Reader rd(body);
  std::vector<Field> out;
  for (;;) {
    std::uint8_t code = 0;
    if (!rd.u8(code)) return std::nullopt;
    if (code == 0) break;
    std::string_view value;
    if (!rd.cstring(value)) return std::nullopt;
    out.push_back({static_cast<char>(code), value});
  }
  if (!rd.at_end()) return std::nullopt;
  return out;
}

std::string_view find_field(const std::vector<Field>& fields, char code) {
  for (const auto& f : fields)
    if (f.code == code) return f.value;
  return {};
}

// ---- builders ----

MessageWriter::MessageWriter(std::string& out, char type) : out_(out) {
  if (type != 0) out_.push_back(type);
  length_at_ = out_.size();
  out_.append(4, '\0');
}

MessageWriter& MessageWriter::i8(std::uint8_t v) {
  out_.push_back(static_cast<char>(v));
  return *this;
}

MessageWriter& MessageWriter::i16(std::int16_t v) {
  const auto u = static_cast<std::uint16_t>(v);
  out_.push_back(static_cast<char>(u >> 8));
  out_.push_back(static_cast<char>(u));
  return *this;
}

MessageWriter& MessageWriter::i32(std::int32_t v) {
  char b[4];
  store_u32(b, static_cast<std::uint32_t>(v));
  out_.append(b, 4);
  return *this;
}

MessageWriter& MessageWriter::cstring(std::string_view s) {
  out_.append(s);
  out_.push_back('\0');
  return *this;
}

MessageWriter& MessageWriter::raw(std::string_view s) {
  out_.append(s);
  return *this;
}

void MessageWriter::finish() {
  if (finished_) return;
  finished_ = true;
  store_u32(out_.data() + length_at_, static_cast<std::uint32_t>(out_.size() - length_at_));
}

MessageWriter::~MessageWriter() { finish(); }

namespace {
void put_fields(std::string& out, char type, const ErrorSpec& s) {
  MessageWriter w(out, type);
  // 'S' is localized, 'V' never is (PostgreSQL >= 9.6 sends both); clients key on 'V' and 'C'.
  w.i8('S').cstring(s.severity).i8('V').cstring(s.severity).i8('C').cstring(s.sqlstate);
  w.i8('M').cstring(s.message);
  if (!s.detail.empty()) w.i8('D').cstring(s.detail);
  if (!s.hint.empty()) w.i8('H').cstring(s.hint);
  w.i8(0);
}

void put_auth(std::string& out, std::int32_t code, std::string_view data = {}) {
  MessageWriter(out, be::kAuthentication).i32(code).raw(data);
}
}  // namespace

void put_error_response(std::string& out, const ErrorSpec& spec) {
  put_fields(out, be::kErrorResponse, spec);
}
void put_notice_response(std::string& out, const ErrorSpec& spec) {
  put_fields(out, be::kNoticeResponse, spec);
}
void put_authentication_ok(std::string& out) { put_auth(out, authcode::kOk); }
void put_authentication_cleartext(std::string& out) { put_auth(out, authcode::kCleartextPassword); }

void put_authentication_md5(std::string& out, const std::array<std::uint8_t, 4>& salt) {
  put_auth(out, authcode::kMd5Password, std::string_view(reinterpret_cast<const char*>(salt.data()), 4));
}

void put_authentication_sasl(std::string& out, const std::vector<std::string_view>& mechanisms) {
  MessageWriter w(out, be::kAuthentication);
  w.i32(authcode::kSasl);
  for (auto m : mechanisms) w.cstring(m);
  w.i8(0);
}

void put_authentication_sasl_continue(std::string& out, std::string_view data) {
  put_auth(out, authcode::kSaslContinue, data);
}

void put_authentication_sasl_final(std::string& out, std::string_view data) {
  put_auth(out, authcode::kSaslFinal, data);
}

void put_parameter_status(std::string& out, std::string_view name, std::string_view value) {
  MessageWriter(out, be::kParameterStatus).cstring(name).cstring(value);
}

void put_backend_key_data(std::string& out, std::int32_t process_id, std::int32_t secret_key) {
  MessageWriter(out, be::kBackendKeyData).i32(process_id).i32(secret_key);
}

void put_ready_for_query(std::string& out, char tx_status) {
  MessageWriter(out, be::kReadyForQuery).i8(static_cast<std::uint8_t>(tx_status));
}

void put_negotiate_protocol_version(std::string& out, std::int32_t newest_minor,
                                    const std::vector<std::string_view>& unrecognized_options) {
  MessageWriter w(out, be::kNegotiateProtocolVersion);
  w.i32(newest_minor).i32(static_cast<std::int32_t>(unrecognized_options.size()));
  for (auto o : unrecognized_options) w.cstring(o);
}

void put_command_complete(std::string& out, std::string_view tag) {
  MessageWriter(out, be::kCommandComplete).cstring(tag);
}

void put_parse_complete(std::string& out) { MessageWriter(out, be::kParseComplete); }
void put_bind_complete(std::string& out) { MessageWriter(out, be::kBindComplete); }
void put_close_complete(std::string& out) { MessageWriter(out, be::kCloseComplete); }
void put_no_data(std::string& out) { MessageWriter(out, be::kNoData); }

namespace {

// pg_type.typlen of the types a pgward-made row uses (bool, int8, int4, timestamptz); -1: variable length.
std::int16_t type_size(std::int32_t oid) {
  switch (oid) {
    case 16: return 1;
    case 20: return 8;
    case 23: return 4;
    case 1184: return 8;
    default: return -1;
  }
}

}  // namespace

void put_row_description(std::string& out, const std::vector<ColumnSpec>& columns) {
  MessageWriter w(out, be::kRowDescription);
  w.i16(static_cast<std::int16_t>(columns.size()));
  for (const ColumnSpec& c : columns) {
    // table OID, column number, type OID, type size (-1: variable), type modifier, format (0: text)
    w.cstring(c.name).i32(0).i16(0).i32(c.type_oid).i16(type_size(c.type_oid)).i32(-1).i16(0);
  }
}

void put_data_row(std::string& out, const std::vector<std::optional<std::string>>& values) {
  MessageWriter w(out, be::kDataRow);
  w.i16(static_cast<std::int16_t>(values.size()));
  for (const auto& v : values) {
    if (!v) {
      w.i32(-1);
      continue;
    }
    w.i32(static_cast<std::int32_t>(v->size())).raw(*v);
  }
}

void put_empty_query_response(std::string& out) { MessageWriter(out, be::kEmptyQueryResponse); }

void put_startup_packet(std::string& out, const std::vector<std::pair<std::string, std::string>>& params,
                        std::uint16_t major, std::uint16_t minor) {
  MessageWriter w(out, 0);
  w.i32(static_cast<std::int32_t>((std::uint32_t{major} << 16) | minor));
  for (const auto& [k, v] : params) w.cstring(k).cstring(v);
  w.i8(0);
}

void put_ssl_request(std::string& out) {
  MessageWriter(out, 0).i32(static_cast<std::int32_t>(kSslRequestCode));
}

void put_cancel_request(std::string& out, std::int32_t process_id, std::int32_t secret_key) {
  MessageWriter(out, 0).i32(static_cast<std::int32_t>(kCancelRequestCode)).i32(process_id).i32(secret_key);
}

void put_password_message(std::string& out, std::string_view password) {
  MessageWriter(out, fe::kPassword).cstring(password);
}

void put_sasl_initial_response(std::string& out, std::string_view mechanism, std::string_view data) {
  MessageWriter(out, fe::kPassword).cstring(mechanism).i32(static_cast<std::int32_t>(data.size())).raw(data);
}

void put_sasl_response(std::string& out, std::string_view data) {
  MessageWriter(out, fe::kPassword).raw(data);
}
void put_query(std::string& out, std::string_view sql) { MessageWriter(out, fe::kQuery).cstring(sql); }
void put_sync(std::string& out) { MessageWriter(out, fe::kSync); }
void put_flush(std::string& out) { MessageWriter(out, fe::kFlush); }
void put_terminate(std::string& out) { MessageWriter(out, fe::kTerminate); }

}  // namespace pgward::protocol
