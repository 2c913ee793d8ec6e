// Prometheus text exposition (format 0.0.4), built by the program that owns the figures: one
// family at a time (HELP and TYPE once, then its samples), labels `server` and `volume` only.
// Names follow the conventions: the `blockrep_` prefix, base units (seconds, bytes), `_total` on
// counters, `_timestamp_seconds` on points in time. `promtool check metrics` accepts the output
// (tests/e2e/metrics.sh).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blockrep::metrics {

enum class Type : uint8_t { kGauge, kCounter, kHistogram };

// Fixed-bucket histogram of seconds (observed on one thread; copied to render).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<uint64_t>& counts() const { return counts_; }  // per bucket, not cumulative
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
};

class Exposition {
 public:
  // Starts a family; `name` must match [a-z_][a-z0-9_]* and carry the blockrep_ prefix (checked).
  void Family(const std::string& name, Type type, const std::string& help);
  // A sample of the current family (gauge or counter); `server` empty: no label.
  void Sample(double value, const std::string& server = "", const std::string& volume = "");
  void Sample(const Histogram& h, const std::string& server = "");
  const std::string& text() const { return text_; }

 private:
  static std::string Labels(const std::string& server, const std::string& volume, const std::string& extra = "");
  std::string name_;
  Type type_ = Type::kGauge;
  std::string text_;
};

// A label value escaped for the exposition format (backslash, double quote, newline).
std::string EscapeLabel(const std::string& value);
// A sample value as the format writes it: the shortest text that reads back as the same double
// (integers without a fraction), NaN and infinities by name.
std::string FormatValue(double value);

}  // namespace blockrep::metrics
