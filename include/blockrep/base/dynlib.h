// A shared library opened at run time (dlopen) instead of linked: for the libraries only some runs
// need (libcurl and libxml2 for an S3 store, libmicrohttpd for --metrics), whose dependency trees
// otherwise load at every start of every program, from disk when the page cache is cold.
#pragma once

#include <string>

#include "blockrep/base/status.h"

namespace blockrep {

class DynamicLibrary {
 public:
  // Opens `soname` for the rest of the process (never closed). The error says that `needed_for`
  // needs it and names the Debian `package` to install.
  static Result<DynamicLibrary> Open(const char* soname, const char* package, const char* needed_for);

  // *out = the function `name` of the library, typed as the caller's header declares it.
  template <typename Fn>
  Status Bind(const char* name, Fn* out) const {
    void* sym = nullptr;
    BR_RETURN_IF_ERROR(Symbol(name, &sym));
    *out = reinterpret_cast<Fn>(sym);
    return Status::Ok();
  }

 private:
  DynamicLibrary(void* handle, const char* soname) : handle_(handle), soname_(soname) {}
  Status Symbol(const char* name, void** out) const;

  void* handle_;
  std::string soname_;
};

}  // namespace blockrep
