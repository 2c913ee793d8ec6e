#include "blockrep/base/cli.h"
#include "blockrep/base/progress.h"

#include "blockrep/base/clock.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace blockrep {

Result<HostPort> ParseHostPort(const std::string& text, const char* flag) {
  HostPort hp;
  std::string port_text;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return InvalidArgument(std::string(flag) + " " + text + ": expected [IPV6]:PORT");
    hp.host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return InvalidArgument(std::string(flag) + " " + text + ": expected HOST:PORT, e.g. 127.0.0.1:7070");
    hp.host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  char* end = nullptr;
  unsigned long port = std::strtoul(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port > 65535)
    return InvalidArgument(std::string(flag) + " " + text + ": port must be a number from 0 to 65535");
  hp.port = static_cast<uint16_t>(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(hp.host.c_str(), port_text.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr)
    return InvalidArgument(std::string(flag) + " " + text + ": cannot resolve host: " + gai_strerror(rc));
  std::memcpy(&hp.addr, res->ai_addr, res->ai_addrlen);
  hp.addr_len = res->ai_addrlen;
  freeaddrinfo(res);
  return hp;
}

uint64_t NowUtcNs() { return ProcessClock()->NowUtcNs(); }
uint64_t MonotonicNs() { return ProcessClock()->MonotonicNs(); }
void SleepNs(uint64_t ns) { ProcessClock()->SleepNs(ns); }

std::string FormatUtc(uint64_t time_ns) {
  time_t secs = static_cast<time_t>(time_ns / 1000000000ull);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

Result<uint64_t> ParseUtc(const std::string& text) {
  tm t{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &t);
  if (end == nullptr) end = strptime(text.c_str(), "%Y-%m-%d %H:%M:%S", &t);
  if (end == nullptr || !(*end == '\0' || (end[0] == 'Z' && end[1] == '\0')))
    return InvalidArgument("time '" + text + "' is not ISO-8601 UTC like 2026-11-23T20:07:37Z");
  time_t secs = timegm(&t);
  if (secs < 0) return InvalidArgument("time '" + text + "' is before 1970");
  return static_cast<uint64_t>(secs) * 1000000000ull + 999999999ull;
}

Result<uint64_t> ParseSizeBytes(const std::string& text, const char* flag) {
  const std::string hint = std::string(flag) + " " + text + ": expected a size like 512M, 64G or 2T (K, M, G, T = 1024^n)";
  if (text.empty() || !(text[0] >= '0' && text[0] <= '9')) return InvalidArgument(hint);
  size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &used);
  } catch (...) {
    return InvalidArgument(hint);
  }
  std::string suffix = text.substr(used);
  unsigned shift = suffix.empty() ? 0 : suffix == "K" ? 10 : suffix == "M" ? 20 : suffix == "G" ? 30 : suffix == "T" ? 40 : 64;
  if (shift == 64) return InvalidArgument(hint);
  if (shift > 0 && v > (~0ull >> shift)) return InvalidArgument(hint + " (too large)");
  return static_cast<uint64_t>(v) << shift;
}

Result<uint64_t> ParseRate(const std::string& text, const char* flag) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  std::string unit = end ? end : "";
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();  // "50MB"
  double mult = 0;
  if (unit.empty()) mult = 1;
  else if (unit == "K" || unit == "k") mult = 1e3;
  else if (unit == "M" || unit == "m") mult = 1e6;
  else if (unit == "G" || unit == "g") mult = 1e9;
  if (end == text.c_str() || mult == 0 || v < 0 || v * mult > 1e12)
    return InvalidArgument(std::string(flag) + " " + text +
                           ": expected bytes per second like 500K, 50M or 1G (0: unlimited)");
  return static_cast<uint64_t>(v * mult);
}

Result<uint64_t> ParseDurationNs(const std::string& text, const char* flag) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  std::string unit = end ? end : "";
  double mult = 0;
  if (unit.empty() || unit == "s") mult = 1e9;
  else if (unit == "ms") mult = 1e6;
  else if (unit == "m") mult = 60e9;
  else if (unit == "h") mult = 3600e9;
  else if (unit == "d") mult = 86400e9;
  if (end == text.c_str() || mult == 0 || !(v > 0) || v * mult > 3.15e18)
    return InvalidArgument(std::string(flag) + " " + text + ": expected a duration like 500ms, 30s, 10m, 1h");
  return static_cast<uint64_t>(v * mult);
}

std::string Printable(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 4);
  for (size_t i = 0; i < text.size() && i < max_bytes; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char esc[5];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
    }
  }
  if (text.size() > max_bytes) out += "...";
  return out;
}

namespace {
LogSink g_log_sink = nullptr;
}  // namespace

void SetLogSink(LogSink sink) { g_log_sink = sink; }

void Log(const char* prog, const std::string& message) {
  uint64_t now = NowUtcNs();
  std::string ts = FormatUtc(now);
  ts.pop_back();
  // Messages are ours, but may quote a peer's words; UTF-8 beyond ASCII is escaped too.
  char head[64];
  std::snprintf(head, sizeof head, "%s.%03uZ ", ts.c_str(), static_cast<unsigned>((now / 1000000ull) % 1000));
  std::string line = head + std::string(prog) + ": " + Printable(message, 64 * 1024);
  if (g_log_sink != nullptr) {
    g_log_sink(line);
    return;
  }
  EraseProgressForLog();
  std::fprintf(stderr, "%s\n", line.c_str());
}

int ReportFatal(const char* prog, const Status& status) {
  std::fprintf(stderr, "%s: error: %s\n", prog, status.message().c_str());
  return status.code() == Code::kInvalidArgument ? 2 : 1;
}

}  // namespace blockrep
