// blockrep-staging: the DR-region side. See README.md and docs/FORMAT.md.
#include <boost/program_options.hpp>
#include <malloc.h>
#include <unistd.h>

#include <csignal>
#include <iostream>

#include "blockrep/base/cli.h"
#include "blockrep/base/options.h"
#include "blockrep/objstore/bucket_mirror.h"
#include "server.h"

namespace po = boost::program_options;
using namespace blockrep;

namespace {
volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_reload = 0;
void OnSignal(int) { g_stop = 1; }
void OnHangup(int) { g_reload = 1; }
constexpr const char* kProg = "blockrep-staging";
}  // namespace

int main(int argc, char** argv) {
  // Sessions' buffers of 256 KiB and more (batches, inboxes) are mapped on their own and
  // unmapped when freed. glibc's default raises this threshold to the size of the largest buffer
  // freed, after which such buffers come from the heap and what they free stays in the
  // process: with 64 agents syncing, 183-193 MiB peak against 124-127 MiB with it fixed (P6).
  // Ignored on purpose when refused: another allocator (AddressSanitizer's) keeps its own policy,
  // and the staging works the same either way.
  static_cast<void>(mallopt(M_MMAP_THRESHOLD, 256 << 10));
  po::options_description desc(
      "Usage: blockrep-staging --listen HOST:PORT --store DIR --tls-cert F --tls-key F --tls-ca F\n"
      "Options");
  std::string listen, store, cert, key, ca, crl, retention, min_retention = "0", keep_labelled = "7d", quota_bytes = "0", metrics;
  uint64_t quota_records = 64ull << 20, quota_packs = 0;
  uint32_t keep_last = 0;
  S3Flags s3;
  std::string s3_cache, s3_cache_bytes, frontend_name;
  uint32_t lease_seconds = 15;
  desc.add_options()("help,h", "show this help")("config", po::value<std::string>(), kConfigHelp)(
      "listen", po::value(&listen), "address to accept agents on, e.g. 0.0.0.0:7070")(
      "store", po::value(&store),
      "store directory (created if missing), or s3://BUCKET/PREFIX: the store in a bucket, with "
      "--s3-endpoint and --s3-cache")(
      "s3-endpoint", po::value(&s3.endpoint), "with --store s3://...: the object store, https://HOST[:PORT]")(
      "s3-credentials", po::value(&s3.credentials_file),
      "with --store s3://...: a 0600 file of 'access_key_id = ...' and 'secret_access_key = ...' "
      "(default: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")(
      "s3-ca", po::value(&s3.ca_file), "with --store s3://...: the CA bundle to trust for the endpoint (default: the system's)")(
      "s3-region", po::value(&s3.region)->default_value("us-east-1"), "with --store s3://...: the region requests are signed for")(
      "s3-cache", po::value(&s3_cache),
      "with --store s3://...: a local directory the staging works in (the records' group commit, "
      "what it serves): packs being written, the indexes and manifests of the bucket's chains, and "
      "up to --s3-cache-bytes of packs the bucket holds (docs/FORMAT.md, A store in a bucket)")(
      "s3-cache-bytes", po::value(&s3_cache_bytes),
      "with --store s3://...: packs the bucket holds kept in --s3-cache at most, least recently read "
      "evicted first and fetched again when read, e.g. 20G (suffixes K/M/G/T; default 8G; 0: keep "
      "none: the cache only buffers writes)")(
      "s3-lease-seconds", po::value(&lease_seconds)->default_value(15),
      "with --store s3://...: several stagings (frontends) may share the bucket; one at a time writes "
      "a server's chain, holding its lease, renewed while its agent is connected; another takes it "
      "over once it has not been renewed for this long (0: no leases: this staging is the bucket "
      "prefix's only writer)")(
      "frontend-name", po::value(&frontend_name),
      "with --store s3://...: this staging's name in leases and messages, without spaces (default: "
      "HOSTNAME:PORT)")(
      "tls-cert", po::value(&cert), "staging certificate (PEM), e.g. staging.crt from blockrep-keygen")(
      "tls-key", po::value(&key), "staging private key (PEM)")(
      "tls-ca", po::value(&ca), "CA certificate that signed the agents' certificates")(
      "tls-crl", po::value(&crl),
      "revoked agent certificates (ca.crl from blockrep-keygen --revoke); re-read with the other TLS "
      "files on SIGHUP, which also closes sessions of newly revoked certificates")(
      "retention", po::value(&retention)->default_value(kDefaultRetention),
      "recovery points kept per server: EVERY:FOR tiers (one point per EVERY of UTC time, for FOR), "
      "or all, or none")(
      "keep-last", po::value(&keep_last)->default_value(0), "also keep the newest N points, whatever their age")(
      "min-retention", po::value(&min_retention)->default_value("0"),
      "no point younger than this expires, whatever the tiers or the agent say (e.g. 7d): history a "
      "compromised agent cannot erase; 0 = off")(
      "keep-labelled", po::value(&keep_labelled)->default_value("7d"),
      "keep a labelled point (blockrep-agent point --label) this long beyond the longest --retention "
      "tier (default: 7 d + 7 d = 14 d from its time), or 'forever'; the newest 256 labelled points of "
      "a server are kept so; 0 = as long as the longest tier")(
      "quota-bytes", po::value(&quota_bytes)->default_value("0"),
      "per server: the most its packs may hold (e.g. 500G); past it only that server is refused, "
      "with \"quota exceeded\", and its agent waits; 0 = no quota")(
      "quota-records-per-point", po::value(&quota_records)->default_value(64ull << 20),
      "per server: the most records one point may hold (64 KiB each: 64 Mi records is 4 TiB)")(
      "quota-packs", po::value(&quota_packs)->default_value(0),
      "per server: the most pack files (each session writes at least one; reaching it compacts, "
      "merging small packs, and the agent waits meanwhile); 0 = no quota, else at least 16")(
      "metrics", po::value(&metrics),
      "serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9400 (no authentication: "
      "a loopback or monitoring-network address)");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (listen.empty() || store.empty())
    return ReportFatal(kProg, InvalidArgument("--listen and --store are required (see --help)"));
  auto hp = ParseHostPort(listen, "--listen");
  if (!hp.ok()) return ReportFatal(kProg, hp.status());

  auto policy = RetentionPolicy::Parse(retention, keep_last);
  if (!policy.ok()) return ReportFatal(kProg, policy.status());
  if (min_retention != "0") {
    auto min_ns = ParseDurationNs(min_retention, "--min-retention");
    if (!min_ns.ok()) return ReportFatal(kProg, min_ns.status());
    policy->min_retention_ns = *min_ns;
  }
  if (keep_labelled == "forever") {
    policy->keep_labelled_ns = RetentionPolicy::kKeepForever;
  } else if (keep_labelled == "0") {
    policy->keep_labelled_ns = 0;  // kept as long as the longest tier only
  } else {
    auto keep_ns = ParseDurationNs(keep_labelled, "--keep-labelled");
    if (!keep_ns.ok()) return ReportFatal(kProg, keep_ns.status());
    policy->keep_labelled_ns = *keep_ns;
  }

  auto quota = ParseSizeBytes(quota_bytes, "--quota-bytes");
  if (!quota.ok()) return ReportFatal(kProg, quota.status());
  if (quota_records == 0)
    return ReportFatal(kProg, InvalidArgument("--quota-records-per-point 0 would refuse every point; give at least 1"));
  if (quota_packs != 0 && quota_packs < 2 * store::ServerStore::kSmallPacksToMerge)
    return ReportFatal(kProg, InvalidArgument("--quota-packs " + std::to_string(quota_packs) +
                                              " leaves compaction no room to merge small packs; give 0 (no quota) or at least " +
                                              std::to_string(2 * store::ServerStore::kSmallPacksToMerge)));
  staging::Options opts;
  if (!metrics.empty()) {
    auto mhp = ParseHostPort(metrics, "--metrics");
    if (!mhp.ok()) return ReportFatal(kProg, mhp.status());
    opts.metrics = *mhp;
  }
  opts.quota_packs = quota_packs;
  opts.quota_bytes = *quota;
  opts.quota_records_per_point = quota_records;
  opts.retention = *policy;
  opts.listen = *hp;
  if (IsS3Url(store)) {
    if (s3_cache.empty())
      return ReportFatal(kProg, InvalidArgument("--store " + store + " needs --s3-cache DIR, the local directory the staging works in"));
    if (frontend_name.empty()) {
      char host[256] = {0};
      gethostname(host, sizeof(host) - 1);
      // Port 0 (any free port) says nothing: the process id tells two such stagings apart.
      frontend_name = std::string(host) + ":" + (hp->port != 0 ? std::to_string(hp->port) : "pid-" + std::to_string(getpid()));
    }
    auto cache_bytes = ParseSizeBytes(s3_cache_bytes.empty() ? "8G" : s3_cache_bytes, "--s3-cache-bytes");
    if (!cache_bytes.ok()) return ReportFatal(kProg, cache_bytes.status());
    auto bucket = BucketStore::Open(store, s3, LeaseSettings{frontend_name, uint64_t{lease_seconds} * 1000}, *cache_bytes);
    if (!bucket.ok()) return ReportFatal(kProg, bucket.status());
    opts.bucket = std::move(bucket).value();
    opts.store_dir = s3_cache;
  } else {
    if (!s3_cache.empty()) return ReportFatal(kProg, InvalidArgument("--s3-cache goes with --store s3://BUCKET/PREFIX"));
    if (!s3_cache_bytes.empty())
      return ReportFatal(kProg, InvalidArgument("--s3-cache-bytes goes with --store s3://BUCKET/PREFIX and --s3-cache"));
    opts.store_dir = store;
  }
  opts.tls = TlsFiles{cert, key, ca, crl};
  opts.reload = &g_reload;
  staging::Server server(std::move(opts));
  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  struct sigaction hup{};
  hup.sa_handler = OnHangup;
  sigaction(SIGHUP, &hup, nullptr);
  Status st = server.Start();
  if (!st.ok()) return ReportFatal(kProg, st);
  st = server.Run(&g_stop);
  if (!st.ok()) return ReportFatal(kProg, st);
  return 0;
}
