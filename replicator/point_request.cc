#include "point_request.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "blockrep/crypto/seal.h"

namespace blockrep::agent {
namespace {

constexpr size_t kFileBytesMax = 512;  // ids, a 64-character label and numbers
constexpr uint64_t kPollNs = 100000000ull;

std::string RequestPath(const std::string& dir) { return dir + "/point-request"; }
std::string ReplyPath(const std::string& dir) { return dir + "/point-reply"; }

// "key value" lines, each key once; other keys are refused (the files are ours).
Result<std::string> Field(const std::string& text, const std::string& key) {
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    if (line.compare(0, key.size() + 1, key + " ") == 0) return line.substr(key.size() + 1);
    at = end + 1;
  }
  return NotFound("no '" + key + "' line");
}

std::string FieldOr(const std::string& text, const std::string& key, const std::string& fallback) {
  auto v = Field(text, key);
  return v.ok() ? *v : fallback;
}

bool HexId(const std::string& id) {
  return id.size() == 16 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Status WriteText(const std::string& path, const std::string& text) {
  return WriteFileAtomic(path, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace

Result<std::optional<PointRequest>> TakePointRequest(const std::string& state_dir) {
  if (state_dir.empty()) return std::optional<PointRequest>();
  const std::string path = RequestPath(state_dir);
  auto text = ReadSmallFile(path, kFileBytesMax);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) return std::optional<PointRequest>();
    return text.status().Annotate("point request " + path);
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + path, errno);
  PointRequest r;
  auto id = Field(*text, "request");
  if (!id.ok() || !HexId(*id)) return InvalidArgument(path + " has no valid 'request' line (written by hand?)");
  r.id = *id;
  if (auto label = Field(*text, "label"); label.ok() && !label->empty()) {
    BR_RETURN_IF_ERROR(CheckPointLabel(*label).Annotate(path));
    r.label = *label;
  }
  return std::optional<PointRequest>(r);
}

Status WritePointReply(const std::string& state_dir, const PointReply& reply) {
  std::string text = "request " + reply.request + "\n";
  if (!reply.error.empty()) {
    text += "error " + reply.error + "\n";
  } else {
    text += "point " + std::to_string(reply.point_id) + "\nconsistent " + (reply.consistent ? "1" : "0") +
            "\ntime_ns " + std::to_string(reply.time_ns) + "\nlabel " + reply.label + "\n";
  }
  return WriteText(ReplyPath(state_dir), text);
}

Status SendPointRequest(const std::string& state_dir, const PointRequest& request, pid_t pid) {
  BR_CHECK(HexId(request.id));
  BR_RETURN_IF_ERROR(WriteText(RequestPath(state_dir), "request " + request.id + "\nlabel " + request.label + "\n"));
  if (pid <= 0 || kill(pid, SIGUSR1) != 0) {
    unlink(RequestPath(state_dir).c_str());  // nobody will take it
    return Unavailable("the agent (pid " + std::to_string(pid) + ", from " + state_dir +
                       "/agent.pid) is not running: start it, or check --state-dir");
  }
  return Status::Ok();
}

Result<PointReply> AwaitPointReply(const std::string& state_dir, const std::string& request, pid_t pid,
                                   uint64_t timeout_ns) {
  const uint64_t deadline = MonotonicNs() + timeout_ns;
  for (;;) {
    auto text = ReadSmallFile(ReplyPath(state_dir), kFileBytesMax);
    if (text.ok() && FieldOr(*text, "request", "") == request) {
      PointReply r;
      r.request = request;
      if (auto err = Field(*text, "error"); err.ok()) {
        r.error = *err;
        return r;
      }
      auto id = Field(*text, "point");
      auto consistent = Field(*text, "consistent");
      auto time = Field(*text, "time_ns");
      if (!id.ok() || !consistent.ok() || !time.ok())
        return DataLoss(ReplyPath(state_dir) + " is malformed (written by hand?)");
      r.point_id = std::strtoull(id->c_str(), nullptr, 10);
      r.consistent = *consistent == "1";
      r.time_ns = std::strtoull(time->c_str(), nullptr, 10);
      r.label = FieldOr(*text, "label", "");
      return r;
    }
    if (kill(pid, 0) != 0 && errno == ESRCH)
      return Unavailable("the agent (pid " + std::to_string(pid) +
                         ") exited before the point was acknowledged: no point was taken for this request");
    if (MonotonicNs() >= deadline)
      return Unavailable("no acknowledgement of the point within the --timeout; the agent (pid " +
                              std::to_string(pid) + ") may be disconnected or in a backlog (blockrep-agent status " +
                              "shows why); it still takes the point and keeps its label");
    SleepNs(kPollNs);
  }
}

}  // namespace blockrep::agent
