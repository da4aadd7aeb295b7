// SQLSTATE codes the proxy itself returns (PostgreSQL docs, Appendix A "PostgreSQL Error Codes").
#pragma once

#include <string_view>

namespace pgward::protocol::sqlstate {

inline constexpr std::string_view kSuccessfulCompletion = "00000";
inline constexpr std::string_view kConnectionException = "08000";
inline constexpr std::string_view kConnectionFailure = "08006";
inline constexpr std::string_view kSqlclientUnableToEstablishSqlconnection = "08001";
inline constexpr std::string_view kTransactionResolutionUnknown = "08007";
inline constexpr std::string_view kProtocolViolation = "08P01";
inline constexpr std::string_view kFeatureNotSupported = "0A000";
inline constexpr std::string_view kInvalidParameterValue = "22023";
inline constexpr std::string_view kActiveSqlTransaction = "25001";
inline constexpr std::string_view kInFailedSqlTransaction = "25P02";
inline constexpr std::string_view kIdleInTransactionSessionTimeout = "25P03";
inline constexpr std::string_view kStatementCompletionUnknown = "40003";
inline constexpr std::string_view kInvalidAuthorizationSpecification = "28000";
inline constexpr std::string_view kInvalidPassword = "28P01";
inline constexpr std::string_view kInvalidCatalogName = "3D000";
inline constexpr std::string_view kSyntaxError = "42601";
inline constexpr std::string_view kUndefinedObject = "42704";
inline constexpr std::string_view kTooManyConnections = "53300";
inline constexpr std::string_view kOutOfMemory = "53200";
inline constexpr std::string_view kProgramLimitExceeded = "54000";
inline constexpr std::string_view kQueryCanceled = "57014";
inline constexpr std::string_view kAdminShutdown = "57P01";
inline constexpr std::string_view kCrashShutdown = "57P02";
inline constexpr std::string_view kCannotConnectNow = "57P03";
inline constexpr std::string_view kConfigFileError = "F0000";
inline constexpr std::string_view kInternalError = "XX000";

}  // namespace pgward::protocol::sqlstate
