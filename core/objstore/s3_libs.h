// libcurl and libxml2, the S3 client's two libraries, opened with dlopen when an S3 client is
// first needed rather than linked into every program. Linked, they and what they pull in (GnuTLS,
// Kerberos, LDAP, ICU, SSH, RTMP: 30 more libraries) were loaded at every start of
// blockrep-recover and blockrep-staging, S3 store or not: 58-71 ms from a cold page cache against
// 8 ms warm, more than a failback of a 1 % change takes once started (docs/PERFORMANCE.md).
// Internal to core/objstore.
#pragma once

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "blockrep/base/status.h"

namespace blockrep::objstore_internal {

// The functions the S3 client calls, typed from the libraries' own headers.
struct S3Libs {
  decltype(&::curl_global_init) curl_global_init = nullptr;
  decltype(&::curl_easy_init) curl_easy_init = nullptr;
  decltype(&::curl_easy_setopt) curl_easy_setopt = nullptr;
  decltype(&::curl_easy_perform) curl_easy_perform = nullptr;
  decltype(&::curl_easy_getinfo) curl_easy_getinfo = nullptr;
  decltype(&::curl_easy_reset) curl_easy_reset = nullptr;
  decltype(&::curl_easy_cleanup) curl_easy_cleanup = nullptr;
  decltype(&::curl_easy_strerror) curl_easy_strerror = nullptr;
  decltype(&::curl_slist_append) curl_slist_append = nullptr;
  decltype(&::curl_slist_free_all) curl_slist_free_all = nullptr;
  decltype(&::xmlInitParser) xmlInitParser = nullptr;
  decltype(&::xmlReadMemory) xmlReadMemory = nullptr;
  decltype(&::xmlFreeDoc) xmlFreeDoc = nullptr;
  decltype(&::xmlDocGetRootElement) xmlDocGetRootElement = nullptr;
};

// Both libraries opened and initialised (curl_global_init, xmlInitParser), once per process;
// every later call gives the same answer. The error names the missing library and its Debian
// package.
Result<const S3Libs*> LoadS3Libs();

}  // namespace blockrep::objstore_internal
