#include "token_bucket.h"

#include <algorithm>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"

namespace blockrep::agent {

void TokenBucket::SetRate(uint64_t bytes_per_second) {
  rate_bps_ = bytes_per_second;
  tokens_ = 0;
}

uint64_t TokenBucket::WaitNs(uint64_t now_ns) {
  if (rate_bps_ == 0) return 0;
  const double rate = static_cast<double>(rate_bps_);
  if (tokens_at_ns_ != 0 && now_ns > tokens_at_ns_) {
    double burst = std::max(rate / 10, 65536.0);
    tokens_ = std::min(burst, tokens_ + rate * static_cast<double>(now_ns - tokens_at_ns_) / 1e9);
  }
  tokens_at_ns_ = std::max(tokens_at_ns_, now_ns);
  if (tokens_ > 0) return 0;
  return static_cast<uint64_t>(-tokens_ / rate * 1e9) + 1000000;  // + 1 ms: wake once it is paid
}

void TokenBucket::Reserve(uint64_t bytes) {
  if (rate_bps_ != 0) tokens_ -= static_cast<double>(bytes);
}

void TokenBucket::Settle(uint64_t reserved, uint64_t produced) {
  if (rate_bps_ != 0) tokens_ += static_cast<double>(reserved) - static_cast<double>(produced);
}

std::optional<uint64_t> ReadRateFile(const std::string& state_dir) {
  if (state_dir.empty()) return std::nullopt;
  const std::string path = state_dir + "/bandwidth-limit";
  auto text = ReadSmallFile(path, 64);
  if (!text.ok()) {
    if (text.status().code() != Code::kNotFound)
      Log("blockrep-agent", "warning: cannot read " + path + ": " + text.status().message());
    return std::nullopt;
  }
  std::string t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  auto rate = ParseRate(t, "bandwidth-limit file");
  if (!rate.ok()) {
    Log("blockrep-agent", "warning: ignoring " + path + ": " + rate.status().message());
    return std::nullopt;
  }
  Log("blockrep-agent", "bandwidth limit now " + (*rate ? std::to_string(*rate) + " bytes/s" : std::string("unlimited")));
  return *rate;
}

}  // namespace blockrep::agent
