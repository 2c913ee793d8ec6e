#include "blockrep/metrics/exposition.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "blockrep/base/check.h"

namespace blockrep::metrics {

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  for (size_t i = 1; i < bounds_.size(); ++i) BR_CHECK_MSG(bounds_[i - 1] < bounds_[i], "histogram bounds must rise");
}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];  // the last slot is +Inf
  ++count_;
  sum_ += value;
}

std::string EscapeLabel(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // The shortest text that reads back as the same double (times keep their microseconds), in
  // fixed notation where that is short: scripts and people read these too.
  char buf[64];
  double mag = std::fabs(value);
  auto fmt = mag == 0 || (mag >= 1e-4 && mag < 1e17) ? std::chars_format::fixed : std::chars_format::general;
  auto r = std::to_chars(buf, buf + sizeof buf, value, fmt);
  BR_CHECK(r.ec == std::errc());
  return std::string(buf, r.ptr);
}

void Exposition::Family(const std::string& name, Type type, const std::string& help) {
  BR_CHECK_MSG(name.rfind("blockrep_", 0) == 0, "metric " + name + " lacks the blockrep_ prefix");
  for (char c : name) BR_CHECK_MSG((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_', "metric name " + name);
  BR_CHECK_MSG((type == Type::kCounter) == (name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0),
               "counter names end in _total, and only they: " + name);
  name_ = name;
  type_ = type;
  const char* t = type == Type::kGauge ? "gauge" : type == Type::kCounter ? "counter" : "histogram";
  // HELP text: backslash and newline escaped.
  std::string h;
  for (char c : help) h += c == '\\' ? std::string("\\\\") : c == '\n' ? std::string("\\n") : std::string(1, c);
  text_ += "# HELP " + name + " " + h + "\n# TYPE " + name + " " + t + "\n";
}

std::string Exposition::Labels(const std::string& server, const std::string& volume, const std::string& extra) {
  std::string l;
  auto add = [&](const std::string& kv) { l += (l.empty() ? "" : ",") + kv; };
  if (!server.empty()) add("server=\"" + EscapeLabel(server) + "\"");
  if (!volume.empty()) add("volume=\"" + EscapeLabel(volume) + "\"");
  if (!extra.empty()) add(extra);
  return l.empty() ? "" : "{" + l + "}";
}

void Exposition::Sample(double value, const std::string& server, const std::string& volume) {
  BR_CHECK_MSG(!name_.empty() && type_ != Type::kHistogram, "Sample(value) outside a gauge or counter family");
  text_ += name_ + Labels(server, volume) + " " + FormatValue(value) + "\n";
}

void Exposition::Sample(const Histogram& h, const std::string& server) {
  BR_CHECK_MSG(type_ == Type::kHistogram, "Sample(histogram) outside a histogram family");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    std::string le = i < h.bounds().size() ? FormatValue(h.bounds()[i]) : "+Inf";
    text_ += name_ + "_bucket" + Labels(server, "", "le=\"" + le + "\"") + " " + std::to_string(cumulative) + "\n";
  }
  text_ += name_ + "_sum" + Labels(server, "") + " " + FormatValue(h.sum()) + "\n";
  text_ += name_ + "_count" + Labels(server, "") + " " + std::to_string(h.count()) + "\n";
}

}  // namespace blockrep::metrics
