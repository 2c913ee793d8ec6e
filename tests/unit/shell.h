// Test helper: runs a shell command and returns its standard output without trailing newlines.
#pragma once

#include <cstdio>
#include <string>

namespace blockrep::testing_util {

inline std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[256];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  pclose(p);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace blockrep::testing_util
