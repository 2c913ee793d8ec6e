#include "blockrep/objstore/s3_client.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "blockrep/base/check.h"
#include "blockrep/base/fs.h"
#include "s3_libs.h"

namespace blockrep {
namespace {

constexpr size_t kCredentialsFileBytesMax = 4096;
constexpr size_t kReceiveBufferBytes = 512u << 10;
static_assert(kReceiveBufferBytes <= CURL_MAX_READ_SIZE);
constexpr size_t kAccessKeyBytesMax = 128;
constexpr size_t kSecretKeyBytesMax = 256;
constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

using objstore_internal::LoadS3Libs;
using objstore_internal::S3Libs;

// The libraries, once LoadS3Libs succeeded (every S3Client and XmlDoc is made after it did).
const S3Libs& Lib() {
  auto libs = LoadS3Libs();
  BR_CHECK(libs.ok());
  return **libs;
}

std::string Sha256Hex(ByteSpan data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  BR_CHECK(EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr) == 1);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned i = 0; i < n; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool ValidBucketName(std::string_view b) {
  if (b.size() < 3 || b.size() > 63) return false;
  for (char c : b)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  return b.front() != '-' && b.front() != '.' && b.back() != '-' && b.back() != '.';
}

Status CheckCredentials(const S3Credentials& c, std::string_view source) {
  if (c.access_key_id.empty() || c.access_key_id.size() > kAccessKeyBytesMax ||
      !std::all_of(c.access_key_id.begin(), c.access_key_id.end(),
                   [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-'; }))
    return InvalidArgument(std::string(source) + ": the access key id must be 1 to 128 letters, digits, '_' or '-'");
  if (c.secret_access_key.empty() || c.secret_access_key.size() > kSecretKeyBytesMax ||
      !std::all_of(c.secret_access_key.begin(), c.secret_access_key.end(),
                   [](char ch) { return ch > ' ' && ch < 127; }))
    return InvalidArgument(std::string(source) +
                           ": the secret access key must be 1 to 256 printable characters without spaces");
  return Status::Ok();
}

// Whether `n` is an element named `name`.
bool IsElement(const xmlNode* n, const char* name) {
  return n->type == XML_ELEMENT_NODE && n->name != nullptr && std::strcmp(reinterpret_cast<const char*>(n->name), name) == 0;
}

// The text inside `n` and its descendants, in document order (what xmlNodeGetContent returns;
// the parser has already replaced character and predefined entity references, and a document
// with a DTD, the only source of other entities, is refused).
void AppendText(const xmlNode* n, std::string* out) {
  for (const xmlNode* c = n->children; c != nullptr; c = c->next) {
    if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content != nullptr)
      out->append(reinterpret_cast<const char*>(c->content));
    else if (c->type == XML_ELEMENT_NODE)
      AppendText(c, out);
  }
}

// The text of the first child element of `parent` named `name`, or nullopt.
std::optional<std::string> ChildText(xmlNode* parent, const char* name) {
  for (xmlNode* n = parent->children; n != nullptr; n = n->next) {
    if (!IsElement(n, name)) continue;
    std::string out;
    AppendText(n, &out);
    return out;
  }
  return std::nullopt;
}

// Made only once LoadS3Libs succeeded.
struct XmlDoc {
  explicit XmlDoc(ByteSpan xml)
      : doc(xml.size() > static_cast<size_t>(INT32_MAX)
                ? nullptr
                : Lib().xmlReadMemory(reinterpret_cast<const char*>(xml.data()), static_cast<int>(xml.size()),
                                "s3-response.xml", nullptr,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)) {
    // S3 answers never carry a DTD; one that does could define entities that expand without
    // bound when read back (billion laughs), so the document is refused whole.
    if (doc != nullptr && (doc->intSubset != nullptr || doc->extSubset != nullptr)) {
      Lib().xmlFreeDoc(doc);
      doc = nullptr;
    }
  }
  ~XmlDoc() {
    if (doc != nullptr) Lib().xmlFreeDoc(doc);
  }
  XmlDoc(const XmlDoc&) = delete;
  XmlDoc& operator=(const XmlDoc&) = delete;
  xmlNode* root() const { return doc != nullptr ? Lib().xmlDocGetRootElement(doc) : nullptr; }
  xmlDoc* doc;
};

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

size_t CollectBody(char* data, size_t size, size_t count, void* user);
size_t FeedBody(char* dst, size_t size, size_t count, void* user);
int SeekBody(void* user, curl_off_t offset, int origin);

}  // namespace

bool IsS3Url(std::string_view text) { return text.starts_with("s3://"); }

Result<S3Location> ParseS3Url(std::string_view text) {
  if (!IsS3Url(text))
    return InvalidArgument("--store " + std::string(text) + ": not an s3:// address (s3://BUCKET/PREFIX)");
  std::string_view rest = text.substr(5);
  size_t slash = rest.find('/');
  S3Location loc;
  loc.bucket = std::string(rest.substr(0, slash));
  if (!ValidBucketName(loc.bucket))
    return InvalidArgument("--store " + std::string(text) + ": bucket name '" + loc.bucket +
                           "' must be 3 to 63 lower-case letters, digits, '.' or '-'");
  if (slash != std::string_view::npos) {
    std::string_view prefix = rest.substr(slash + 1);
    while (prefix.ends_with('/')) prefix.remove_suffix(1);
    if (prefix.find("//") != std::string_view::npos || prefix.starts_with('/') ||
        prefix.size() > kS3KeyBytesMax / 2 ||
        !std::all_of(prefix.begin(), prefix.end(), [](char c) { return c > ' ' && c < 127; }))
      return InvalidArgument("--store " + std::string(text) +
                             ": the prefix must be printable, without spaces or empty path parts, at most 512 bytes");
    if (!prefix.empty()) loc.prefix = std::string(prefix) + "/";
  }
  return loc;
}

Result<S3Credentials> LoadS3Credentials(const std::string& path) {
  S3Credentials c;
  if (path.empty()) {
    const char* id = std::getenv("AWS_ACCESS_KEY_ID");
    const char* secret = std::getenv("AWS_SECRET_ACCESS_KEY");
    if (id == nullptr || secret == nullptr)
      return InvalidArgument(
          "no S3 credentials: give --s3-credentials FILE (mode 0600) or set AWS_ACCESS_KEY_ID and "
          "AWS_SECRET_ACCESS_KEY");
    c.access_key_id = id;
    c.secret_access_key = secret;
    BR_RETURN_IF_ERROR(CheckCredentials(c, "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"));
    return c;
  }
  BR_RETURN_IF_ERROR(CheckOwnerOnlyFile(path, "S3 credentials file"));
  BR_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, kCredentialsFileBytesMax));
  std::string_view view(text);
  int line_no = 0;
  while (!view.empty()) {
    size_t nl = view.find('\n');
    std::string_view line = Trim(view.substr(0, nl));
    view.remove_prefix(nl == std::string_view::npos ? view.size() : nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    size_t eq = line.find('=');
    std::string_view name = eq == std::string_view::npos ? line : Trim(line.substr(0, eq));
    std::string_view value = eq == std::string_view::npos ? std::string_view() : Trim(line.substr(eq + 1));
    std::string where = path + " line " + std::to_string(line_no);
    if (eq == std::string_view::npos)
      return InvalidArgument(where + ": expected 'access_key_id = ...' or 'secret_access_key = ...'");
    if (name == "access_key_id") {
      c.access_key_id = std::string(value);
    } else if (name == "secret_access_key") {
      c.secret_access_key = std::string(value);
    } else {
      return InvalidArgument(where + ": unknown setting '" + std::string(name) +
                             "'; the file holds access_key_id and secret_access_key");
    }
  }
  if (c.access_key_id.empty() || c.secret_access_key.empty())
    return InvalidArgument(path + ": needs both 'access_key_id = ...' and 'secret_access_key = ...'");
  BR_RETURN_IF_ERROR(CheckCredentials(c, path));
  return c;
}

namespace s3_internal {

std::string UriEncode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Result<ListPage> ParseListPage(ByteSpan xml) {
  if (xml.size() > kS3ListBodyBytesMax)
    return ProtocolError("S3 list answer of " + std::to_string(xml.size()) + " bytes is over the " +
                         std::to_string(kS3ListBodyBytesMax) + "-byte limit");
  BR_RETURN_IF_ERROR(LoadS3Libs().status());
  XmlDoc doc(xml);
  xmlNode* root = doc.root();
  if (root == nullptr || !IsElement(root, "ListBucketResult"))
    return ProtocolError("S3 list answer is not a ListBucketResult document");
  ListPage page;
  std::optional<std::string> truncated = ChildText(root, "IsTruncated");
  page.truncated = truncated.has_value() && *truncated == "true";
  if (page.truncated) {
    std::optional<std::string> token = ChildText(root, "NextContinuationToken");
    if (!token.has_value() || token->empty() || token->size() > kS3KeyBytesMax * 2)
      return ProtocolError("S3 list answer is truncated but has no usable NextContinuationToken");
    page.next_token = std::move(*token);
  }
  for (xmlNode* n = root->children; n != nullptr; n = n->next) {
    if (IsElement(n, "CommonPrefixes")) {
      std::optional<std::string> prefix = ChildText(n, "Prefix");
      if (!prefix.has_value() || prefix->empty() || prefix->size() > kS3KeyBytesMax)
        return ProtocolError("S3 list answer has a CommonPrefixes entry without a valid Prefix");
      if (page.objects.size() + page.common_prefixes.size() == kS3ListPageKeysMax)
        return ProtocolError("S3 list answer has more than the " + std::to_string(kS3ListPageKeysMax) +
                             " keys asked for");
      page.common_prefixes.push_back(std::move(*prefix));
      continue;
    }
    if (!IsElement(n, "Contents")) continue;
    if (page.objects.size() + page.common_prefixes.size() == kS3ListPageKeysMax)
      return ProtocolError("S3 list answer has more than the " + std::to_string(kS3ListPageKeysMax) +
                           " keys asked for");
    std::optional<std::string> key = ChildText(n, "Key");
    std::optional<std::string> size = ChildText(n, "Size");
    S3Object o;
    if (!key.has_value() || key->empty() || key->size() > kS3KeyBytesMax || !size.has_value() ||
        !ParseU64(*size, &o.size_bytes))
      return ProtocolError("S3 list answer has an entry without a valid Key and Size");
    o.key = std::move(*key);
    // An ETag is a hint (which version of an object this is), never trusted for content.
    if (std::optional<std::string> etag = ChildText(n, "ETag"); etag.has_value()) {
      std::string_view v = *etag;
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      if (!v.empty() && v.size() <= 128 && v.find_first_of("\"\r\n ") == std::string_view::npos) o.etag = std::string(v);
    }
    page.objects.push_back(std::move(o));
  }
  return page;
}

ErrorBody ParseErrorBody(ByteSpan xml) {
  ErrorBody e;
  // (Without the libraries no body is read: the HTTP status alone tells what went wrong.)
  if (xml.empty() || xml.size() > kS3ErrorBodyBytesMax || !LoadS3Libs().ok()) return e;
  XmlDoc doc(xml);
  xmlNode* root = doc.root();
  if (root == nullptr || !IsElement(root, "Error")) return e;
  auto clip = [](std::string s) {
    if (s.size() > 200) s.resize(200);
    for (char& c : s)
      if (c < ' ' || c == 127) c = ' ';
    return s;
  };
  e.code = clip(ChildText(root, "Code").value_or(""));
  e.message = clip(ChildText(root, "Message").value_or(""));
  return e;
}

Status StatusForHttp(long http_status, const ErrorBody& error, std::string_view what) {
  std::string detail = "HTTP " + std::to_string(http_status) + (error.code.empty() ? "" : " " + error.code) +
                       (error.message.empty() ? "" : " (" + error.message + ")");
  std::string head = std::string(what) + ": " + detail;
  const std::string& code = error.code;
  if (http_status >= 500 || http_status == 429 || code == "SlowDown" || code == "RequestTimeout" ||
      code == "XAmzContentSHA256Mismatch" || code == "BadDigest" || code == "IncompleteBody")
    return Unavailable(head + "; the object store is busy, failing, or the request was damaged on the way");
  if (code == "QuotaExceeded")
    return NoSpace(head + ": the bucket's quota is full; raise it or let retention free space");
  if (code == "RequestTimeTooSkewed")
    return PermissionDenied(head + ": this host's clock differs from the object store's; set it right (NTP)");
  if (http_status == 403 || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" ||
      code == "AccessDenied")
    return PermissionDenied(head + ": the object store refused the credentials; check --s3-credentials "
                                   "(or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the user's rights");
  if (code == "NoSuchBucket")
    return NotFound(head + ": the bucket does not exist; create it, or check the s3:// address");
  if (http_status == 404) return NotFound(head);
  return ProtocolError(head + ": the object store refused the request");
}

}  // namespace s3_internal

struct S3Client::Request {
  const char* method = "GET";  // GET, PUT, HEAD, DELETE
  std::string url;
  std::string what;            // for messages: "PUT s3://bucket/key"
  ByteSpan body;               // PUT only
  std::string range;           // "bytes=a-b" or ""
  std::string condition;       // "If-None-Match: *" or "If-Match: ETAG" or ""
  size_t response_bytes_max = kS3ErrorBodyBytesMax;
};

struct S3Client::Response {
  long http_status = 0;
  Bytes body;
  uint64_t content_length = 0;  // HEAD
  std::string etag;             // from the ETag header, without quotes
};

namespace {

struct BodySink {
  Bytes* out;
  size_t max_bytes;
  bool overflow = false;
};

struct BodySource {
  ByteSpan data;
  size_t pos = 0;
};

size_t CollectBody(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  size_t n = size * count;
  if (sink->out->size() + n > sink->max_bytes) {
    sink->overflow = true;
    return 0;  // CURLE_WRITE_ERROR
  }
  sink->out->insert(sink->out->end(), reinterpret_cast<uint8_t*>(data), reinterpret_cast<uint8_t*>(data) + n);
  return n;
}

size_t FeedBody(char* dst, size_t size, size_t count, void* user) {
  auto* src = static_cast<BodySource*>(user);
  size_t n = std::min(size * count, src->data.size() - src->pos);
  std::copy_n(src->data.data() + src->pos, n, reinterpret_cast<uint8_t*>(dst));
  src->pos += n;
  return n;
}

// Keeps the ETag header of an answer (bounded: a header line is at most CURL_MAX_HTTP_HEADER).
size_t CollectHeader(char* data, size_t size, size_t count, void* user) {
  auto* etag = static_cast<std::string*>(user);
  std::string_view line(data, size * count);
  constexpr std::string_view kName = "etag:";
  if (line.size() > kName.size() && line.size() < 512) {
    std::string lower(line.substr(0, kName.size()));
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == kName) {
      std::string_view v = Trim(line.substr(kName.size()));
      while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.remove_suffix(1);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      *etag = std::string(v);
    }
  }
  return size * count;
}

int SeekBody(void* user, curl_off_t offset, int origin) {
  auto* src = static_cast<BodySource*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > src->data.size())
    return CURL_SEEKFUNC_FAIL;
  src->pos = static_cast<size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

}  // namespace

S3Client::S3Client(const S3Config& config) : config_(config) {}

S3Client::~S3Client() {
  if (curl_ != nullptr) Lib().curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Result<std::unique_ptr<S3Client>> S3Client::Open(const S3Config& config) {
  BR_ASSIGN_OR_RETURN(const S3Libs* libs, LoadS3Libs());
  const std::string& ep = config.endpoint;
  if (!ep.starts_with("https://") || ep.size() <= 8 || ep.find('/', 8) != std::string::npos ||
      ep.find_first_of(" ?#@") != std::string::npos)
    return InvalidArgument("--s3-endpoint " + ep +
                           ": give https://HOST[:PORT] without a path (plain http is refused: the "
                           "credentials and the store's names would cross the network in clear)");
  if (!ValidBucketName(config.location.bucket))
    return InvalidArgument("bucket name '" + config.location.bucket + "' is not valid");
  if (!config.ca_file.empty() && !PathExists(config.ca_file))
    return InvalidArgument("--s3-ca " + config.ca_file + ": no such file");
  if (config.region.empty() || config.region.size() > 64 ||
      !std::all_of(config.region.begin(), config.region.end(),
                   [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; }))
    return InvalidArgument("--s3-region " + config.region + ": letters, digits, '-' and '_' only");
  BR_RETURN_IF_ERROR(CheckCredentials(config.credentials, "S3 credentials"));
  BR_CHECK(config.attempts_max >= 1 && config.backoff_first_ms >= 1 &&
           config.backoff_first_ms <= config.backoff_max_ms && config.list_page_keys >= 1 &&
           config.list_page_keys <= kS3ListPageKeysMax);
  std::unique_ptr<S3Client> client(new S3Client(config));
  client->curl_ = libs->curl_easy_init();
  if (client->curl_ == nullptr) return Internal("curl_easy_init failed");
  return client;
}

std::string S3Client::ObjectUrl(std::string_view key) const {
  return config_.endpoint + "/" + config_.location.bucket + "/" +
         s3_internal::UriEncode(config_.location.prefix + std::string(key), /*keep_slash=*/true);
}

Status S3Client::PerformOnce(const Request& request, Response* response) {
  const S3Libs& lib = Lib();
  CURL* c = static_cast<CURL*>(curl_);
  lib.curl_easy_reset(c);
  response->http_status = 0;
  response->body.clear();
  response->content_length = 0;

  std::string sigv4 = "aws:amz:" + config_.region + ":s3";
  std::string userpwd = config_.credentials.access_key_id + ":" + config_.credentials.secret_access_key;
  std::string payload_hash =
      "x-amz-content-sha256: " + (request.body.empty() ? std::string(kEmptySha256) : Sha256Hex(request.body));
  curl_slist* headers = lib.curl_slist_append(nullptr, payload_hash.c_str());
  // No "Expect:" here to suppress 100-continue: libcurl would sign that empty header without
  // sending it, and every upload would fail with SignatureDoesNotMatch.
  std::string range = "Range: " + request.range;
  if (!request.range.empty()) headers = lib.curl_slist_append(headers, range.c_str());
  if (!request.condition.empty()) headers = lib.curl_slist_append(headers, request.condition.c_str());

  BodySink sink{&response->body, request.response_bytes_max};
  BodySource source{request.body};
  lib.curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  lib.curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  lib.curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
  lib.curl_easy_setopt(c, CURLOPT_USERPWD, userpwd.c_str());
  lib.curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  lib.curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  lib.curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!config_.ca_file.empty()) lib.curl_easy_setopt(c, CURLOPT_CAINFO, config_.ca_file.c_str());
  lib.curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  lib.curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout_ms));
  lib.curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  lib.curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(config_.stall_timeout_s));
  // A larger receive buffer than libcurl's 16 KiB: with it, a 4 MiB range took ~500 recv and
  // poll calls and the bucket restore ran at a sixth of the gateway's own speed.
  lib.curl_easy_setopt(c, CURLOPT_BUFFERSIZE, static_cast<long>(kReceiveBufferBytes));
  lib.curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, CollectBody);
  lib.curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  lib.curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, CollectHeader);
  lib.curl_easy_setopt(c, CURLOPT_HEADERDATA, &response->etag);
  response->etag.clear();
  std::string method = request.method;
  if (method == "PUT") {
    lib.curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    lib.curl_easy_setopt(c, CURLOPT_READFUNCTION, FeedBody);
    lib.curl_easy_setopt(c, CURLOPT_READDATA, &source);
    lib.curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, SeekBody);
    lib.curl_easy_setopt(c, CURLOPT_SEEKDATA, &source);
    lib.curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  } else if (method == "HEAD") {
    lib.curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (method == "DELETE") {
    lib.curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
  } else {
    BR_CHECK(method == "GET");
  }
  char errbuf[CURL_ERROR_SIZE] = {0};
  lib.curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);

  CURLcode rc = lib.curl_easy_perform(c);
  lib.curl_slist_free_all(headers);
  std::string why = errbuf[0] != 0 ? std::string(errbuf) : lib.curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_OK: break;
    case CURLE_WRITE_ERROR:
      if (sink.overflow)
        return DataLoss(request.what + ": the answer is larger than the " +
                        std::to_string(request.response_bytes_max) + " bytes expected");
      return IoError(request.what + ": " + why);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
      return Unauthenticated(request.what + ": " + why +
                             "; the object store's certificate is not trusted: give its CA with --s3-ca FILE");
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return InvalidArgument(request.what + ": " + why + "; check --s3-endpoint");
    default:
      // Connection refused or reset, timeouts, a stalled transfer, name resolution, TLS handshake
      // cut short: all may pass.
      return Unavailable(request.what + ": " + why);
  }
  lib.curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response->http_status);
  if (method == "HEAD") {
    curl_off_t len = -1;
    lib.curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
    response->content_length = len > 0 ? static_cast<uint64_t>(len) : 0;
  }
  if (response->http_status >= 200 && response->http_status < 300) return Status::Ok();
  if (response->http_status == 412 && !request.condition.empty())
    return Conflict(request.what + ": refused (" + request.condition + "): another writer changed the object first");
  return s3_internal::StatusForHttp(response->http_status, s3_internal::ParseErrorBody(response->body),
                                    request.what);
}

Status S3Client::Perform(const Request& request, Response* response) {
  thread_local std::minstd_rand jitter(std::random_device{}());
  uint64_t backoff_ms = config_.backoff_first_ms;
  for (uint32_t attempt = 1;; ++attempt) {
    Status st = PerformOnce(request, response);
    // Only what PerformOnce calls kUnavailable (transport failures, stalls, 5xx, SlowDown, a body
    // damaged on the way) is worth the same request again: a 404 or a refused signature is not.
    if (st.ok() || st.code() != Code::kUnavailable) {
      if (st.code() == Code::kConflict && attempt > 1)
        return st.Annotate("after " + std::to_string(attempt - 1) +
                           " failed attempt(s), one of which may have written it: read it back to tell");
      return st;
    }
    if (attempt == config_.attempts_max)
      return st.Annotate("gave up after " + std::to_string(attempt) + " attempts");
    ++retries_;
    uint64_t sleep_ms = backoff_ms / 2 + jitter() % (backoff_ms / 2 + 1);  // [b/2, b]
    std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    backoff_ms = std::min<uint64_t>(backoff_ms * 2, config_.backoff_max_ms);
  }
}

Status S3Client::Put(std::string_view key, ByteSpan data) {
  Request r;
  r.method = "PUT";
  r.url = ObjectUrl(key);
  r.what = "PUT s3://" + config_.location.bucket + "/" + config_.location.prefix + std::string(key);
  r.body = data;
  Response resp;
  return Perform(r, &resp);
}

Result<std::string> S3Client::PutConditional(std::string_view key, ByteSpan data, std::string condition) {
  Request r;
  r.method = "PUT";
  r.url = ObjectUrl(key);
  r.what = "PUT s3://" + config_.location.bucket + "/" + config_.location.prefix + std::string(key);
  r.body = data;
  r.condition = std::move(condition);
  Response resp;
  BR_RETURN_IF_ERROR(Perform(r, &resp));
  if (resp.etag.empty()) return ProtocolError(r.what + ": the object store's answer has no ETag");
  return resp.etag;
}

Result<std::string> S3Client::PutIfAbsent(std::string_view key, ByteSpan data) {
  return PutConditional(key, data, "If-None-Match: *");
}

Result<std::string> S3Client::PutIfMatch(std::string_view key, ByteSpan data, std::string_view etag) {
  if (etag.empty() || etag.size() > 128 || etag.find_first_of("\"\r\n ") != std::string_view::npos)
    return InvalidArgument("PutIfMatch: '" + std::string(etag) + "' is not an ETag");
  // RGW 16 compares If-Match with the ETag as stored, without quotes (a quoted one never matches).
  return PutConditional(key, data, "If-Match: " + std::string(etag));
}

Result<Bytes> S3Client::Get(std::string_view key, size_t max_bytes) {
  BR_ASSIGN_OR_RETURN(Versioned v, GetVersioned(key, max_bytes));
  return std::move(v.data);
}

Result<S3Client::Versioned> S3Client::GetVersioned(std::string_view key, size_t max_bytes) {
  Request r;
  r.url = ObjectUrl(key);
  r.what = "GET s3://" + config_.location.bucket + "/" + config_.location.prefix + std::string(key);
  r.response_bytes_max = std::max(max_bytes, kS3ErrorBodyBytesMax);
  Response resp;
  BR_RETURN_IF_ERROR(Perform(r, &resp));
  if (resp.body.size() > max_bytes)
    return DataLoss(r.what + ": " + std::to_string(resp.body.size()) + " bytes, more than the " +
                    std::to_string(max_bytes) + " expected");
  return Versioned{std::move(resp.body), std::move(resp.etag)};
}

Result<Bytes> S3Client::GetRange(std::string_view key, uint64_t offset, size_t len) {
  if (len == 0) return Bytes();
  Request r;
  r.url = ObjectUrl(key);
  r.what = "GET s3://" + config_.location.bucket + "/" + config_.location.prefix + std::string(key) +
           " bytes " + std::to_string(offset) + "+" + std::to_string(len);
  r.range = "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + len - 1);
  r.response_bytes_max = std::max(len, kS3ErrorBodyBytesMax);
  Response resp;
  Status st = Perform(r, &resp);
  if (!st.ok() && resp.http_status == 416) return Bytes();  // the range starts past the end
  BR_RETURN_IF_ERROR(st);
  // 206 is the range; a gateway that ignores Range answers 200 with the whole object.
  if (resp.http_status != 206)
    return ProtocolError(r.what + ": the object store ignored the byte range (HTTP " +
                         std::to_string(resp.http_status) + ")");
  if (resp.body.size() > len)
    return ProtocolError(r.what + ": " + std::to_string(resp.body.size()) + " bytes for a range of " +
                         std::to_string(len));
  return std::move(resp.body);
}

Result<uint64_t> S3Client::Size(std::string_view key) {
  BR_ASSIGN_OR_RETURN(Head h, Stat(key));
  return h.size_bytes;
}

Result<S3Client::Head> S3Client::Stat(std::string_view key) {
  Request r;
  r.method = "HEAD";
  r.url = ObjectUrl(key);
  r.what = "HEAD s3://" + config_.location.bucket + "/" + config_.location.prefix + std::string(key);
  Response resp;
  BR_RETURN_IF_ERROR(Perform(r, &resp));
  return Head{resp.content_length, resp.etag};
}

Status S3Client::Delete(std::string_view key) {
  Request r;
  r.method = "DELETE";
  r.url = ObjectUrl(key);
  r.what = "DELETE s3://" + config_.location.bucket + "/" + config_.location.prefix + std::string(key);
  Response resp;
  Status st = Perform(r, &resp);
  if (!st.ok() && resp.http_status == 404 && st.message().find("NoSuchBucket") == std::string::npos)
    return Status::Ok();
  return st;
}

Status S3Client::ListPages(const std::string& full_prefix, bool delimited,
                           const std::function<Status(s3_internal::ListPage&)>& fn) {
  std::string token;
  for (;;) {
    // SigV4 wants the query's parameters sorted by name and every value percent-encoded.
    std::string query;
    if (!token.empty()) query += "continuation-token=" + s3_internal::UriEncode(token, false) + "&";
    if (delimited) query += "delimiter=%2F&";
    query += "list-type=2&max-keys=" + std::to_string(config_.list_page_keys) +
             "&prefix=" + s3_internal::UriEncode(full_prefix, false);
    Request r;
    r.url = config_.endpoint + "/" + config_.location.bucket + "?" + query;
    r.what = "LIST s3://" + config_.location.bucket + "/" + full_prefix;
    r.response_bytes_max = kS3ListBodyBytesMax;
    Response resp;
    BR_RETURN_IF_ERROR(Perform(r, &resp));
    BR_ASSIGN_OR_RETURN(s3_internal::ListPage page, s3_internal::ParseListPage(resp.body));
    BR_RETURN_IF_ERROR(fn(page).Annotate(r.what));
    if (!page.truncated) return Status::Ok();
    if (page.next_token == token) return ProtocolError(r.what + ": the object store repeated its continuation token");
    token = std::move(page.next_token);
  }
}

Result<std::vector<S3Object>> S3Client::List(std::string_view key_prefix, size_t objects_max) {
  const std::string full_prefix = config_.location.prefix + std::string(key_prefix);
  const size_t store_prefix_bytes = config_.location.prefix.size();
  std::vector<S3Object> out;
  BR_RETURN_IF_ERROR(ListPages(full_prefix, false, [&](s3_internal::ListPage& page) -> Status {
    for (S3Object& o : page.objects) {
      if (!o.key.starts_with(full_prefix) ||
          (!out.empty() && o.key.compare(store_prefix_bytes, std::string::npos, out.back().key) <= 0))
        return ProtocolError("the object store listed key '" + o.key + "' out of order or outside the prefix");
      if (out.size() == objects_max) return InvalidArgument("more than " + std::to_string(objects_max) + " objects");
      o.key.erase(0, store_prefix_bytes);
      out.push_back(std::move(o));
    }
    return Status::Ok();
  }));
  return out;
}

Result<std::vector<std::string>> S3Client::ListChildren(std::string_view folder, size_t names_max) {
  const std::string full_prefix = config_.location.prefix + std::string(folder);
  std::vector<std::string> out;
  auto add = [&](std::string_view name) -> Status {
    if (!name.starts_with(full_prefix) || name.size() == full_prefix.size())
      return ProtocolError("the object store listed '" + std::string(name) + "' outside the prefix");
    name.remove_prefix(full_prefix.size());
    if (name.ends_with('/')) name.remove_suffix(1);
    if (name.empty() || name.find('/') != std::string_view::npos)
      return ProtocolError("the object store listed '" + std::string(name) + "' as a direct child");
    if (out.size() == names_max) return InvalidArgument("more than " + std::to_string(names_max) + " names");
    out.emplace_back(name);
    return Status::Ok();
  };
  BR_RETURN_IF_ERROR(ListPages(full_prefix, true, [&](s3_internal::ListPage& page) -> Status {
    for (const S3Object& o : page.objects) BR_RETURN_IF_ERROR(add(o.key));
    for (const std::string& p : page.common_prefixes) BR_RETURN_IF_ERROR(add(p));
    return Status::Ok();
  }));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Status S3Client::CreateBucket() {
  Request r;
  r.method = "PUT";
  r.url = config_.endpoint + "/" + config_.location.bucket;
  r.what = "CREATE BUCKET s3://" + config_.location.bucket;
  Response resp;
  Status st = Perform(r, &resp);
  if (!st.ok() && st.message().find("BucketAlreadyOwnedByYou") != std::string::npos) return Status::Ok();
  return st;
}

}  // namespace blockrep
