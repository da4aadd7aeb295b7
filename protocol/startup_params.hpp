// Session settings carried by a startup packet ("Message Formats" > StartupMessage): the parameters that are
// GUCs and the "-c name=value" switches in `options`, with names spelt as PostgreSQL spells them. Pure: no
// sockets, no exceptions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/codec.hpp"

namespace pgward::protocol {

using Setting = std::pair<std::string, std::string>;  // (canonical name, value)

// Startup parameters that are not session settings: PostgreSQL compares these names exactly.
bool is_connection_param(std::string_view name);

// GUC names are case-insensitive. Three of the settings PostgreSQL reports in ParameterStatus are spelt in
// mixed case (DateStyle, IntervalStyle, TimeZone) and come back in that spelling whatever the client wrote;
// every other name is folded to lower case, so that one setting always has one name, whoever sets it.
std::string canonical_param_name(std::string_view name);

// The `options` startup parameter, split into words as PostgreSQL's pg_split_opts() does (white space
// separates, a backslash makes the next character literal), then read as its backend switches: "-c
// name=value",
// "-cname=value" and "--name=value", with '-' in the name turned into '_' (ParseLongOption()). Names come out
// canonical. nullopt for any other switch or a setting without '='.
std::optional<std::vector<Setting>> parse_options(std::string_view text);

// Every session setting a startup packet asks for, in the order PostgreSQL applies them
// (process_startup_options(): `options` first, then the packet's own parameters, which therefore win), names
// canonical. nullopt when `options` holds something parse_options() refuses.
std::optional<std::vector<Setting>> startup_settings(const StartupPacket& packet);

}  // namespace pgward::protocol
