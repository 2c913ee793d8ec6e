#include "blockrep/net/tcp.h"

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

namespace blockrep {

Result<UniqueFd> ConnectToStaging(const HostPort& staging, const std::string& name) {
  int raw = socket(staging.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (raw < 0) return ErrnoStatus("socket", errno);
  UniqueFd fd(raw);
  timeval tv{10, 0};
  if (setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)  // bounds connect()
    return ErrnoStatus("setsockopt SO_SNDTIMEO", errno);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&staging.addr), staging.addr_len) != 0) {
    int err = errno;
    Status st = ErrnoStatus("cannot connect to staging " + name, err == EINPROGRESS ? ETIMEDOUT : err);
    return Status(st.code(), st.message() + " (is blockrep-staging running there? check --staging)");
  }
  int one = 1;
  if (setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    return ErrnoStatus("setsockopt TCP_NODELAY", errno);
  return fd;
}

}  // namespace blockrep
