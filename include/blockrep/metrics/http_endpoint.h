// Serves GET /metrics over plain HTTP with libmicrohttpd (its own thread): the text the owner
// last published, as it was then. The owner's thread renders (it alone touches its figures) and
// calls Publish about once a second; the HTTP thread only copies the string under a lock.
// Bounded: 16 connections, 10 s idle timeout, requests other than GET or HEAD of /metrics are
// answered 404/405 without a body to read. No authentication: bind it to a loopback or a
// monitoring network (README.md, Metrics).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"

struct MHD_Daemon;

namespace blockrep::metrics {

class HttpEndpoint {
 public:
  // Binds `where` (flag names the option in errors, e.g. "--metrics") and starts serving.
  static Result<std::unique_ptr<HttpEndpoint>> Start(const HostPort& where, const char* flag);
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  void Publish(std::string text);
  uint16_t port() const { return port_; }
  // The published text (the HTTP thread's copy).
  std::string Snapshot();

 private:
  HttpEndpoint() = default;
  UniqueFd listen_fd_;
  MHD_Daemon* daemon_ = nullptr;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::string text_;  // guarded by mu_
};

}  // namespace blockrep::metrics
