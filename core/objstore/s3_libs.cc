#include "s3_libs.h"

#include "blockrep/base/dynlib.h"

namespace blockrep::objstore_internal {
namespace {

constexpr char kNeededFor[] = "the S3 store";

Result<S3Libs> Load() {
  // The sonames of the build's headers (bookworm: libcurl4 7.88, libxml2 2.9).
  BR_ASSIGN_OR_RETURN(DynamicLibrary curl, DynamicLibrary::Open("libcurl.so.4", "libcurl4", kNeededFor));
  BR_ASSIGN_OR_RETURN(DynamicLibrary xml, DynamicLibrary::Open("libxml2.so.2", "libxml2", kNeededFor));
  S3Libs l;
#define BR_BIND(lib, fn) BR_RETURN_IF_ERROR(lib.Bind(#fn, &l.fn))
  BR_BIND(curl, curl_global_init);
  BR_BIND(curl, curl_easy_init);
  BR_BIND(curl, curl_easy_setopt);
  BR_BIND(curl, curl_easy_perform);
  BR_BIND(curl, curl_easy_getinfo);
  BR_BIND(curl, curl_easy_reset);
  BR_BIND(curl, curl_easy_cleanup);
  BR_BIND(curl, curl_easy_strerror);
  BR_BIND(curl, curl_slist_append);
  BR_BIND(curl, curl_slist_free_all);
  BR_BIND(xml, xmlInitParser);
  BR_BIND(xml, xmlReadMemory);
  BR_BIND(xml, xmlFreeDoc);
  BR_BIND(xml, xmlDocGetRootElement);
#undef BR_BIND
  CURLcode rc = l.curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) return Internal(std::string("curl_global_init failed: ") + l.curl_easy_strerror(rc));
  l.xmlInitParser();
  return l;
}

}  // namespace

Result<const S3Libs*> LoadS3Libs() {
  static const Result<S3Libs> loaded = Load();  // once, thread-safe; the libraries stay loaded to the end
  if (!loaded.ok()) return loaded.status();
  return &*loaded;
}

}  // namespace blockrep::objstore_internal
