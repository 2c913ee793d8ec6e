// blockrep_faultproxy: a TCP proxy for the tests that damages what passes through it, the way bad
// networks do (docs/PROTOCOL.md, Damage in transit). Between an agent and the staging it can
//   drop      reset both sides after a random number of bytes
//   truncate  forward a random number of bytes, then close both sides cleanly (FIN)
//   flip      flip one bit every so many bytes, and keep the connection
//   delay     hold every chunk back for --delay-ms
//   stall     after a random number of bytes stop forwarding for --stall-ms, then go on
//   halfopen  after a random number of bytes stop forwarding for good, keeping both sockets open
//             and reading what arrives (a peer gone without a FIN, a dead middlebox)
//   mixed     each faulty connection draws one of drop, truncate, flip, delay, stall (seeded)
// Faults hit the first --faulty N connections (then it forwards cleanly), in the direction
// --direction up (agent -> staging), down or both. Each fault it injects is logged on stderr.
// Usage: blockrep_faultproxy --upstream HOST:PORT --fault MODE [--listen PORT] [--after BYTES]
//                            [--faulty N] [--direction up|down|both] [--seed N]
//                            [--delay-ms MS] [--stall-ms MS]
// Prints "listening on 127.0.0.1:PORT" on stdout once it accepts connections.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "blockrep_faultproxy: error: %s\n", what.c_str());
  std::exit(2);
}

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

enum class Fault { kNone, kDrop, kTruncate, kFlip, kDelay, kStall, kHalfOpen, kMixed };
const char* const kFaultNames[] = {"none", "drop", "truncate", "flip", "delay", "stall", "halfopen", "mixed"};

struct Options {
  uint16_t listen_port = 0;
  std::string upstream_host = "127.0.0.1";
  uint16_t upstream_port = 0;
  Fault fault = Fault::kNone;
  uint64_t after_bytes = 1 << 20;
  int faulty_connections = 1 << 30;
  bool up = true, down = false;
  uint64_t seed = 1;
  uint64_t delay_ms = 50;
  uint64_t stall_ms = 3000;
};

// One direction of one connection: bytes read from `from` wait in `queue` until `release_ms`.
struct Pipe {
  int from = -1, to = -1;
  const char* name = "";
  bool faulty = false;
  uint64_t passed = 0;   // bytes forwarded so far
  uint64_t trigger = 0;  // byte count at which the next fault fires
  uint64_t stalled_until_ms = 0;
  bool dead = false;  // halfopen: nothing passes any more
  bool eof = false;   // halfopen: `from` was closed by its peer; no longer polled
  struct Chunk {
    std::vector<uint8_t> data;
    size_t done = 0;
    uint64_t release_ms = 0;
  };
  std::deque<Chunk> queue;
};

struct Connection {
  int id = 0;
  Fault fault = Fault::kNone;
  int client = -1, server = -1;
  Pipe up, down;
  bool closed = false;
};

constexpr size_t kQueueMax = 8 << 20;  // bytes held per direction before we stop reading

size_t Queued(const Pipe& p) {
  size_t n = 0;
  for (const auto& c : p.queue) n += c.data.size() - c.done;
  return n;
}

void CloseConnection(Connection& c, bool reset) {
  if (c.closed) return;
  for (int fd : {c.client, c.server}) {
    if (reset) {
      linger l{1, 0};  // close sends RST
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(fd);
  }
  c.closed = true;
}

uint64_t NextTrigger(const Options& o, std::mt19937_64& rng, uint64_t from) {
  return from + o.after_bytes / 2 + rng() % (o.after_bytes + 1);
}

// Applies the fault to `data` about to pass; returns false when the connection must close.
bool Inject(const Options& o, std::mt19937_64& rng, Connection& c, Pipe& p, std::vector<uint8_t>& data,
            bool* reset) {
  if (!p.faulty || p.dead) return true;
  uint64_t start = p.passed, end = p.passed + data.size();
  switch (c.fault) {
    case Fault::kNone:
    case Fault::kDelay:
    case Fault::kMixed:  // resolved per connection at accept
      return true;
    case Fault::kFlip:
      while (p.trigger < end) {
        size_t at = static_cast<size_t>(p.trigger - start);
        int bit = static_cast<int>(rng() % 8);
        data[at] ^= static_cast<uint8_t>(1u << bit);
        std::fprintf(stderr, "conn %d %s: flipped bit %d of byte %llu\n", c.id, p.name, bit,
                     static_cast<unsigned long long>(p.trigger));
        p.trigger = NextTrigger(o, rng, p.trigger + 1);
      }
      return true;
    case Fault::kDrop:
    case Fault::kTruncate:
      if (end <= p.trigger) return true;
      data.resize(static_cast<size_t>(p.trigger - start));
      *reset = c.fault == Fault::kDrop;
      std::fprintf(stderr, "conn %d %s: %s after %llu bytes\n", c.id, p.name,
                   *reset ? "reset" : "truncated (FIN)", static_cast<unsigned long long>(p.trigger));
      return false;
    case Fault::kStall:
      if (end <= p.trigger) return true;
      p.stalled_until_ms = NowMs() + o.stall_ms;
      p.trigger = UINT64_MAX;  // one stall per connection
      std::fprintf(stderr, "conn %d %s: stalled for %llu ms after %llu bytes\n", c.id, p.name,
                   static_cast<unsigned long long>(o.stall_ms), static_cast<unsigned long long>(start));
      return true;
    case Fault::kHalfOpen:
      if (end <= p.trigger) return true;
      data.resize(static_cast<size_t>(p.trigger - start));
      c.up.dead = c.down.dead = true;
      std::fprintf(stderr, "conn %d %s: half-open after %llu bytes (both directions stop, sockets stay open)\n",
                   c.id, p.name, static_cast<unsigned long long>(p.trigger));
      return true;
  }
  return true;
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) Die("option " + a + " needs a value");
    std::string v = argv[++i];
    if (a == "--listen") {
      o.listen_port = static_cast<uint16_t>(std::stoul(v));
    } else if (a == "--upstream") {
      size_t colon = v.rfind(':');
      if (colon == std::string::npos) Die("--upstream wants HOST:PORT");
      o.upstream_host = v.substr(0, colon);
      o.upstream_port = static_cast<uint16_t>(std::stoul(v.substr(colon + 1)));
    } else if (a == "--fault") {
      if (v == "none") o.fault = Fault::kNone;
      else if (v == "drop") o.fault = Fault::kDrop;
      else if (v == "truncate") o.fault = Fault::kTruncate;
      else if (v == "flip") o.fault = Fault::kFlip;
      else if (v == "delay") o.fault = Fault::kDelay;
      else if (v == "stall") o.fault = Fault::kStall;
      else if (v == "halfopen") o.fault = Fault::kHalfOpen;
      else if (v == "mixed") o.fault = Fault::kMixed;
      else Die("unknown --fault " + v + " (none drop truncate flip delay stall halfopen mixed)");
    } else if (a == "--after") {
      o.after_bytes = std::stoull(v);
    } else if (a == "--faulty") {
      o.faulty_connections = std::stoi(v);
    } else if (a == "--direction") {
      o.up = v == "up" || v == "both";
      o.down = v == "down" || v == "both";
      if (!o.up && !o.down) Die("--direction wants up, down or both");
    } else if (a == "--seed") {
      o.seed = std::stoull(v);
    } else if (a == "--delay-ms") {
      o.delay_ms = std::stoull(v);
    } else if (a == "--stall-ms") {
      o.stall_ms = std::stoull(v);
    } else {
      Die("unknown option " + a);
    }
  }
  if (o.upstream_port == 0) Die("--upstream HOST:PORT is required");
  return o;
}

int ConnectUpstream(const Options& o) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(o.upstream_port);
  if (inet_pton(AF_INET, o.upstream_host.c_str(), &a.sin_addr) != 1) Die("bad upstream host " + o.upstream_host);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = Parse(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  std::mt19937_64 rng(o.seed);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(o.listen_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(lfd, 64) != 0)
    Die("cannot listen on 127.0.0.1:" + std::to_string(o.listen_port) + ": " + std::strerror(errno));
  socklen_t alen = sizeof(a);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen);
  std::printf("listening on 127.0.0.1:%u\n", ntohs(a.sin_port));
  std::fflush(stdout);

  std::vector<std::unique_ptr<Connection>> conns;
  int next_id = 1;
  std::vector<uint8_t> buf(256 * 1024);
  for (;;) {
    std::vector<pollfd> pfds{{lfd, POLLIN, 0}};
    std::vector<std::pair<Connection*, Pipe*>> owners{{nullptr, nullptr}};
    uint64_t now = NowMs();
    for (auto& c : conns) {
      if (c->closed) continue;
      for (Pipe* p : {&c->up, &c->down}) {
        if (!p->dead && !p->queue.empty() && p->queue.front().release_ms <= now && p->stalled_until_ms <= now) {
          pfds.push_back({p->to, POLLOUT, 0});
          owners.push_back({c.get(), p});
        }
        if (!p->eof && (p->dead || Queued(*p) < kQueueMax)) {  // dead pipes read and discard
          pfds.push_back({p->from, POLLIN, 0});
          owners.push_back({c.get(), p});
        }
      }
    }
    if (poll(pfds.data(), pfds.size(), 10) < 0 && errno != EINTR) Die(std::string("poll: ") + std::strerror(errno));
    if (pfds[0].revents & POLLIN) {
      int cfd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (cfd >= 0) {
        int sfd = ConnectUpstream(o);
        if (sfd < 0) {
          std::fprintf(stderr, "conn %d: upstream refused; closing\n", next_id++);
          close(cfd);
        } else {
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          auto c = std::make_unique<Connection>();
          c->id = next_id++;
          c->client = cfd;
          c->server = sfd;
          bool faulty = c->id <= o.faulty_connections && o.fault != Fault::kNone;
          c->fault = !faulty ? Fault::kNone : o.fault != Fault::kMixed ? o.fault
                   : static_cast<Fault>(static_cast<int>(Fault::kDrop) + static_cast<int>(rng() % 5));
          c->up = Pipe{cfd, sfd, "agent->staging", faulty && o.up, 0, 0, 0, false, false, {}};
          c->down = Pipe{sfd, cfd, "staging->agent", faulty && o.down, 0, 0, 0, false, false, {}};
          c->up.trigger = NextTrigger(o, rng, 0);
          c->down.trigger = NextTrigger(o, rng, 0);
          std::fprintf(stderr, "conn %d: opened (%s)\n", c->id, faulty ? kFaultNames[static_cast<int>(c->fault)] : "clean");
          conns.push_back(std::move(c));
        }
      }
    }
    for (size_t i = 1; i < pfds.size(); ++i) {
      auto [c, p] = owners[i];
      if (c->closed || pfds[i].revents == 0) continue;
      if (pfds[i].events & POLLOUT) {
        if (!(pfds[i].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
        auto& chunk = p->queue.front();
        ssize_t n = send(p->to, chunk.data.data() + chunk.done, chunk.data.size() - chunk.done,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN) {
          CloseConnection(*c, false);
          continue;
        }
        if (n > 0) chunk.done += static_cast<size_t>(n);
        if (chunk.done == chunk.data.size()) p->queue.pop_front();
        continue;
      }
      ssize_t n = recv(p->from, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        // One side went away: so does the other (after what is queued; good enough for tests).
        std::fprintf(stderr, "conn %d %s: peer closed\n", c->id, p->name);
        if (p->dead) {  // half-open: keep the other socket open, as a dead link would
          p->eof = true;
          if (c->up.eof && c->down.eof) CloseConnection(*c, false);
          continue;
        }
        CloseConnection(*c, false);
        continue;
      }
      if (n < 0 || p->dead) continue;
      std::vector<uint8_t> data(buf.begin(), buf.begin() + n);
      bool reset = false;
      bool keep = Inject(o, rng, *c, *p, data, &reset);
      p->passed += data.size();
      if (!data.empty() && !p->dead) {
        uint64_t delay = (c->fault == Fault::kDelay && p->faulty) ? o.delay_ms : 0;
        p->queue.push_back({std::move(data), 0, NowMs() + delay});
      }
      if (!keep) {
        // Deliver what was let through (best effort, blocking briefly), then close.
        for (auto& chunk : p->queue) {
          fcntl(p->to, F_SETFL, 0);
          send(p->to, chunk.data.data() + chunk.done, chunk.data.size() - chunk.done, MSG_NOSIGNAL);
        }
        p->queue.clear();
        CloseConnection(*c, reset);
      }
    }
    // Forget closed connections.
    for (auto it = conns.begin(); it != conns.end();) it = (*it)->closed ? conns.erase(it) : it + 1;
  }
}
