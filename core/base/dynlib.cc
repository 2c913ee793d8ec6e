#include "blockrep/base/dynlib.h"

#include <dlfcn.h>

namespace blockrep {
namespace {

std::string DlError() {
  const char* e = dlerror();
  return e != nullptr ? e : "unknown dlopen error";
}

}  // namespace

Result<DynamicLibrary> DynamicLibrary::Open(const char* soname, const char* package, const char* needed_for) {
  void* h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr)
    return Internal(std::string(needed_for) + " needs " + soname + ", which did not load (" + DlError() +
                    "): install the Debian package " + package);
  return DynamicLibrary(h, soname);
}

Status DynamicLibrary::Symbol(const char* name, void** out) const {
  dlerror();  // cleared, so that the message below is this lookup's
  *out = dlsym(handle_, name);
  if (*out == nullptr)
    return Internal(soname_ + " lacks " + name + " (" + DlError() +
                    "): it is older than the one blockrep was built against; upgrade it");
  return Status::Ok();
}

}  // namespace blockrep
