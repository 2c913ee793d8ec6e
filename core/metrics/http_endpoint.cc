#include "blockrep/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace blockrep::metrics {
namespace {

constexpr unsigned kConnectionsMax = 16;
constexpr unsigned kIdleTimeoutSeconds = 10;

MHD_Result Answer(MHD_Connection* c, unsigned code, const std::string& body, const char* type) {
  MHD_Response* r = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", type);
  MHD_Result ok = MHD_queue_response(c, code, r);
  MHD_destroy_response(r);
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
  e->daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, nullptr, nullptr, &OnRequest, e.get(),
                                MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, kConnectionsMax,
                                MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutSeconds, MHD_OPTION_END);
  if (e->daemon_ == nullptr) return Internal(name + ": libmicrohttpd did not start");
  return e;
}

HttpEndpoint::~HttpEndpoint() {
  if (daemon_ == nullptr) return;
  MHD_stop_daemon(daemon_);      // joins its thread and closes the listening socket
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
