// A directory for one test, made with mkdtemp under /tmp and removed with everything in it when
// the object goes: TempDir dir("name") makes /tmp/blockrep-name.XXXXXX.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

#include "blockrep/base/check.h"

namespace blockrep {

class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    std::string tmpl = "/tmp/blockrep-" + name + ".XXXXXX";  // mkdtemp template
    BR_CHECK_MSG(mkdtemp(tmpl.data()) != nullptr, "cannot make a directory under /tmp for the test");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // best effort: a leftover directory fails nothing
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace blockrep
