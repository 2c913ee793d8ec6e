// Shared command-line plumbing: address parsing, UTC time formatting, one-line logging, exit codes.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "blockrep/base/status.h"

namespace blockrep {

struct HostPort {
  std::string host;
  uint16_t port = 0;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
};

// "HOST:PORT" or "[V6]:PORT"; HOST is resolved (numeric or via getaddrinfo).
Result<HostPort> ParseHostPort(const std::string& text, const char* flag);

// "2026-11-23T20:07:37Z" (seconds) and with milliseconds for logs.
std::string FormatUtc(uint64_t time_ns);
// The process clock's (blockrep/base/clock.h): the system's, or the simulation's.
uint64_t NowUtcNs();
uint64_t MonotonicNs();
void SleepNs(uint64_t ns);
// Parses "2026-11-23T20:07:37Z", "2026-11-23T20:07:37", "2026-11-23 20:07:37" (UTC).
Result<uint64_t> ParseUtc(const std::string& text);

// "50M" bytes per second: decimal suffixes K, M, G (as network rates are quoted); "0" = unlimited.
Result<uint64_t> ParseRate(const std::string& text, const char* flag);

// "64G" bytes: binary suffixes K, M, G, T (1024^n), as disk sizes are quoted; a bare number is bytes.
Result<uint64_t> ParseSizeBytes(const std::string& text, const char* flag);

// "500ms", "30s", "10m", "1h", "7d" (a bare number is seconds).
Result<uint64_t> ParseDurationNs(const std::string& text, const char* flag);

// One line on stderr: a timestamp, `prog` and `message` with control characters escaped, so text
// a peer chose (a server-id, a certificate's name) cannot forge further log lines.
void Log(const char* prog, const std::string& message);
// Where Log's lines go instead of stderr (the simulation keeps them per scenario); null: stderr.
// Set it before any thread starts.
using LogSink = void (*)(const std::string& line);
void SetLogSink(LogSink sink);
// `text` with bytes outside printable ASCII as \xNN, cut to `max_bytes` of input ("..." after).
std::string Printable(std::string_view text, size_t max_bytes = 256);
// Prints "prog: error: message" and returns the exit status for it (2 for usage errors, 1 else).
int ReportFatal(const char* prog, const Status& status);

}  // namespace blockrep
