// JSON text for the programs' --json outputs and reports (hand-written: flat objects of our own).
#pragma once

#include <string>

namespace blockrep {

// `s` as a JSON string literal: quotes, backslashes and control characters escaped.
std::string JsonString(const std::string& s);

}  // namespace blockrep
