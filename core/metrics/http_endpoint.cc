#include "blockrep/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "blockrep/base/dynlib.h"

namespace blockrep::metrics {
namespace {

constexpr unsigned kConnectionsMax = 16;
constexpr unsigned kIdleTimeoutSeconds = 10;

// libmicrohttpd, opened (dlopen) when an endpoint first starts: linked, it and its GnuTLS tree
// (9 libraries) loaded at every start of the agent and the staging, --metrics or not.
struct Mhd {
  decltype(&::MHD_start_daemon) start_daemon = nullptr;
  decltype(&::MHD_stop_daemon) stop_daemon = nullptr;
  decltype(&::MHD_create_response_from_buffer) create_response_from_buffer = nullptr;
  decltype(&::MHD_add_response_header) add_response_header = nullptr;
  decltype(&::MHD_queue_response) queue_response = nullptr;
  decltype(&::MHD_destroy_response) destroy_response = nullptr;
};

Result<Mhd> LoadMhd() {
  BR_ASSIGN_OR_RETURN(DynamicLibrary lib, DynamicLibrary::Open("libmicrohttpd.so.12", "libmicrohttpd12", "--metrics"));
  Mhd m;
  BR_RETURN_IF_ERROR(lib.Bind("MHD_start_daemon", &m.start_daemon));
  BR_RETURN_IF_ERROR(lib.Bind("MHD_stop_daemon", &m.stop_daemon));
  BR_RETURN_IF_ERROR(lib.Bind("MHD_create_response_from_buffer", &m.create_response_from_buffer));
  BR_RETURN_IF_ERROR(lib.Bind("MHD_add_response_header", &m.add_response_header));
  BR_RETURN_IF_ERROR(lib.Bind("MHD_queue_response", &m.queue_response));
  BR_RETURN_IF_ERROR(lib.Bind("MHD_destroy_response", &m.destroy_response));
  return m;
}

// The library, once per process.
const Result<Mhd>& Library() {
  static const Result<Mhd> loaded = LoadMhd();
  return loaded;
}
// Only where an endpoint exists, so Start has loaded it.
const Mhd& Lib() { return *Library(); }

MHD_Result Answer(MHD_Connection* c, unsigned code, const std::string& body, const char* type) {
  const Mhd& mhd = Lib();
  MHD_Response* r = mhd.create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) return MHD_NO;
  mhd.add_response_header(r, "Content-Type", type);
  MHD_Result ok = mhd.queue_response(c, code, r);
  mhd.destroy_response(r);
  return ok;
}

MHD_Result OnRequest(void* cls, MHD_Connection* c, const char* url, const char* method, const char*,
                     const char*, size_t* upload_size, void** req_cls) {
  // The first call of a request only announces it (headers read); the answer comes on the second.
  static int announced;
  if (*req_cls != &announced) {
    *req_cls = &announced;
    return MHD_YES;
  }
  if (*upload_size != 0) return MHD_NO;  // a body on GET: drop the connection
  auto* self = static_cast<HttpEndpoint*>(cls);
  const char* plain = "text/plain; charset=utf-8";
  if (std::strcmp(url, "/metrics") != 0) return Answer(c, MHD_HTTP_NOT_FOUND, "only /metrics is served here\n", plain);
  if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0)
    return Answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n", plain);
  return Answer(c, MHD_HTTP_OK, self->Snapshot(), "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace

Result<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const HostPort& where, const char* flag) {
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint());
  std::string name = std::string(flag) + " " + where.host + ":" + std::to_string(where.port);
  if (!Library().ok()) return Library().status().Annotate(name);
  // Our own socket: a bind failure is reported with its reason, which the library would only log.
  int fd = socket(where.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return ErrnoStatus(name + ": socket", errno);
  e->listen_fd_ = UniqueFd(fd);
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) return ErrnoStatus(name + ": setsockopt", errno);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&where.addr), where.addr_len) != 0)
    return ErrnoStatus(name + ": bind (another program on that port? pick another, or 0 for any)", errno);
  if (listen(fd, 64) != 0) return ErrnoStatus(name + ": listen", errno);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) return ErrnoStatus(name + ": getsockname", errno);
  e->port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  e->daemon_ = Lib().start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, nullptr, nullptr, &OnRequest, e.get(),
                                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, kConnectionsMax,
                                MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutSeconds, MHD_OPTION_END);
  if (e->daemon_ == nullptr) return Internal(name + ": libmicrohttpd did not start");
  return e;
}

HttpEndpoint::~HttpEndpoint() {
  if (daemon_ == nullptr) return;
  Lib().stop_daemon(daemon_);    // joins its thread and closes the listening socket
  (void)listen_fd_.Release();  // so it is not closed twice
}

void HttpEndpoint::Publish(std::string text) {
  std::lock_guard<std::mutex> lock(mu_);
  text_.swap(text);
}

std::string HttpEndpoint::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  return text_;
}

}  // namespace blockrep::metrics
