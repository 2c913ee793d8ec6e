// blockrep-keygen: a quick-start PKI and data keys. Writes ca.crt/ca.key (reused when present),
// staging.crt/staging.key, and per server agent-ID.crt/agent-ID.key (TLS, CN = server-id) and
// data-ID.key (the AES data key, mode 0600; an existing one is kept). Never overwrites an existing
// file. --revoke ID adds agent-ID.crt to ca.crl (the staging's --tls-crl) and moves the
// certificate and its key aside (agent-ID.crt.revoked-SERIAL), so that --server-id ID issues anew.
// --rotate-key ID appends a new data key to data-ID.key: the agent seals with it from its next point
// (a full one), and the older keys stay in the file so that every older point restores.
// --operator NAME issues operator-NAME.crt/.key (CN operator:NAME) for the staging's fleet view.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>

#include "blockrep/base/cli.h"
#include "blockrep/base/options.h"
#include "blockrep/base/fs.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/net/tls.h"
#include "blockrep/net/wire.h"

namespace po = boost::program_options;
using namespace blockrep;

namespace {

constexpr const char* kProg = "blockrep-keygen";
constexpr long kValidDays = 825;

struct PkeyFree { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
struct X509Free { void operator()(X509* x) const { X509_free(x); } };
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

Result<Pkey> NewKey() {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  if (k == nullptr) return Internal("EC key generation failed: " + TakeOpenSslError());
  return Pkey(k);
}

Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return Internal(std::string("bad certificate extension ") + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return Status::Ok();
}

// Issues a certificate for `key`; self-signed when issuer is null.
Result<Cert> Issue(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key,
                   const std::vector<std::pair<int, std::string>>& exts) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  uint8_t serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return Internal("RAND_bytes failed: no entropy for a certificate serial");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValidDays * 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const uint8_t*>("blockrep"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t*>(cn.c_str()), -1, -1, 0);
  X509* iss = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(iss));
  for (const auto& [nid, value] : exts) BR_RETURN_IF_ERROR(AddExt(cert.get(), iss, nid, value.c_str()));
  if (X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0)
    return Internal("signing certificate failed: " + TakeOpenSslError());
  return cert;
}

Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key) {
  if (PathExists(path)) return InvalidArgument(path + " already exists; refusing to overwrite it");
  mode_t old = umask(077);
  FILE* f = std::fopen(path.c_str(), "wx");
  umask(old);
  if (f == nullptr) return ErrnoStatus("create " + path, errno);
  if (key != nullptr) {
    fchmod(fileno(f), 0600);
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  } else {
    fchmod(fileno(f), 0644);
    PEM_write_X509(f, cert);
  }
  bool ok = std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) return ErrnoStatus("write " + path, errno);
  return Status::Ok();
}

Result<std::pair<Cert, Pkey>> LoadOrCreateCa(const std::string& dir, bool* created) {
  std::string crt = dir + "/ca.crt", key = dir + "/ca.key";
  if (PathExists(crt) && PathExists(key)) {
    *created = false;
    FILE* fc = std::fopen(crt.c_str(), "r");
    FILE* fk = std::fopen(key.c_str(), "r");
    X509* c = fc ? PEM_read_X509(fc, nullptr, nullptr, nullptr) : nullptr;
    EVP_PKEY* k = fk ? PEM_read_PrivateKey(fk, nullptr, nullptr, nullptr) : nullptr;
    if (fc) std::fclose(fc);
    if (fk) std::fclose(fk);
    if (c == nullptr || k == nullptr) {
      X509_free(c);
      EVP_PKEY_free(k);
      return InvalidArgument("cannot read the existing CA in " + dir + " (ca.crt/ca.key)");
    }
    return std::make_pair(Cert(c), Pkey(k));
  }
  *created = true;
  BR_ASSIGN_OR_RETURN(Pkey k, NewKey());
  BR_ASSIGN_OR_RETURN(Cert c, Issue(k.get(), "blockrep CA", nullptr, nullptr,
                                    {{NID_basic_constraints, "critical,CA:TRUE"},
                                     {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                     {NID_subject_key_identifier, "hash"}}));
  BR_RETURN_IF_ERROR(WritePem(key, nullptr, k.get()));
  BR_RETURN_IF_ERROR(WritePem(crt, c.get(), nullptr));
  return std::make_pair(std::move(c), std::move(k));
}

Status Revoke(const std::string& dir, const std::vector<std::string>& ids);

Status Run(const std::string& dir, const std::vector<std::string>& ids,
           const std::vector<std::string>& staging_names, const std::vector<std::string>& operators) {
  for (const auto& id : ids) BR_RETURN_IF_ERROR(wire::ValidateServerId(id));
  for (const auto& name : operators) BR_RETURN_IF_ERROR(wire::ValidateServerId(name).Annotate("--operator"));
  BR_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  bool created = false;
  BR_ASSIGN_OR_RETURN(auto ca, LoadOrCreateCa(dir, &created));
  std::printf("%s %s/ca.crt, %s/ca.key\n", created ? "wrote" : "reusing", dir.c_str(), dir.c_str());
  // An empty CRL from the start, so the staging can always run with --tls-crl (and a revocation
  // later needs only a SIGHUP).
  if (!PathExists(dir + "/ca.crl")) BR_RETURN_IF_ERROR(Revoke(dir, {}));
  if (!PathExists(dir + "/staging.crt")) {
    std::string san = "DNS:localhost,IP:127.0.0.1,IP:::1";
    for (const auto& n : staging_names) {
      bool ip = n.find_first_not_of("0123456789.:abcdefABCDEF") == std::string::npos && n.find_first_of(".:") != std::string::npos;
      san += (ip ? ",IP:" : ",DNS:") + n;
    }
    BR_ASSIGN_OR_RETURN(Pkey k, NewKey());
    BR_ASSIGN_OR_RETURN(Cert c, Issue(k.get(), "blockrep-staging", ca.first.get(), ca.second.get(),
                                      {{NID_basic_constraints, "critical,CA:FALSE"},
                                       {NID_key_usage, "critical,digitalSignature"},
                                       {NID_ext_key_usage, "serverAuth"},
                                       {NID_subject_alt_name, san}}));
    BR_RETURN_IF_ERROR(WritePem(dir + "/staging.key", nullptr, k.get()));
    BR_RETURN_IF_ERROR(WritePem(dir + "/staging.crt", c.get(), nullptr));
    std::printf("wrote %s/staging.crt, %s/staging.key (names: %s)\n", dir.c_str(), dir.c_str(), san.c_str());
  }
  for (const auto& id : ids) {
    BR_ASSIGN_OR_RETURN(Pkey k, NewKey());
    BR_ASSIGN_OR_RETURN(Cert c, Issue(k.get(), id, ca.first.get(), ca.second.get(),
                                      {{NID_basic_constraints, "critical,CA:FALSE"},
                                       {NID_key_usage, "critical,digitalSignature"},
                                       {NID_ext_key_usage, "clientAuth"}}));
    BR_RETURN_IF_ERROR(WritePem(dir + "/agent-" + id + ".key", nullptr, k.get()));
    BR_RETURN_IF_ERROR(WritePem(dir + "/agent-" + id + ".crt", c.get(), nullptr));
    // A certificate issued again after --revoke keeps the server's data key: its chain stays its own.
    bool keep_key = PathExists(dir + "/data-" + id + ".key");
    if (!keep_key) BR_RETURN_IF_ERROR(WriteNewDataKey(dir + "/data-" + id + ".key"));
    std::printf("wrote %s/agent-%s.crt, agent-%s.key%s\n", dir.c_str(), id.c_str(), id.c_str(),
                keep_key ? (" (kept data-" + id + ".key)").c_str() : (", data-" + id + ".key (mode 0600)").c_str());
  }
  for (const auto& name : operators) {
    // CN operator:NAME: a fleet view on the staging (every server's figures, no data), never an
    // agent (no server-id holds a ':').
    BR_ASSIGN_OR_RETURN(Pkey k, NewKey());
    BR_ASSIGN_OR_RETURN(Cert c, Issue(k.get(), std::string(wire::kOperatorCnPrefix) + name, ca.first.get(), ca.second.get(),
                                      {{NID_basic_constraints, "critical,CA:FALSE"},
                                       {NID_key_usage, "critical,digitalSignature"},
                                       {NID_ext_key_usage, "clientAuth"}}));
    BR_RETURN_IF_ERROR(WritePem(dir + "/operator-" + name + ".key", nullptr, k.get()));
    BR_RETURN_IF_ERROR(WritePem(dir + "/operator-" + name + ".crt", c.get(), nullptr));
    std::printf("wrote %s/operator-%s.crt, operator-%s.key (blockrep-recover servers --staging)\n", dir.c_str(),
                name.c_str(), name.c_str());
  }
  return FsyncDir(dir);
}

struct CrlFree { void operator()(X509_CRL* c) const { X509_CRL_free(c); } };
using Crl = std::unique_ptr<X509_CRL, CrlFree>;

Result<Cert> ReadCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return ErrnoStatus("certificate " + path, errno);
  X509* c = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (c == nullptr) return InvalidArgument(path + " is not a PEM certificate");
  return Cert(c);
}

// Adds each server's current agent certificate to <dir>/ca.crl (created, or extended), signed by
// the CA, and moves the certificate and key aside. With no ids: writes the CRL as it is (empty
// when new).
Status Revoke(const std::string& dir, const std::vector<std::string>& ids) {
  for (const auto& id : ids) BR_RETURN_IF_ERROR(wire::ValidateServerId(id));
  if (!PathExists(dir + "/ca.crt") || !PathExists(dir + "/ca.key"))
    return InvalidArgument("no CA in " + dir + " (ca.crt, ca.key): --revoke needs the directory that issued the certificates");
  bool created = false;
  BR_ASSIGN_OR_RETURN(auto ca, LoadOrCreateCa(dir, &created));
  std::string crl_path = dir + "/ca.crl";
  Crl crl;
  if (PathExists(crl_path)) {
    FILE* f = std::fopen(crl_path.c_str(), "r");
    crl.reset(f != nullptr ? PEM_read_X509_CRL(f, nullptr, nullptr, nullptr) : nullptr);
    if (f != nullptr) std::fclose(f);
    if (!crl || X509_CRL_verify(crl.get(), ca.second.get()) != 1)
      return InvalidArgument(crl_path + " is not a CRL of this CA; move it away and revoke again");
  } else {
    crl.reset(X509_CRL_new());
    X509_CRL_set_version(crl.get(), 1);  // v2
    X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.first.get()));
  }
  for (const auto& id : ids) {
    std::string crt = dir + "/agent-" + id + ".crt", key = dir + "/agent-" + id + ".key";
    BR_ASSIGN_OR_RETURN(Cert cert, ReadCert(crt));
    X509_REVOKED* r = X509_REVOKED_new();
    ASN1_TIME* now = X509_gmtime_adj(nullptr, 0);
    X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(cert.get()));
    X509_REVOKED_set_revocationDate(r, now);
    ASN1_TIME_free(now);
    X509_CRL_add0_revoked(crl.get(), r);
    std::string serial = SerialHex(X509_get0_serialNumber(cert.get()));
    for (const std::string& from : {crt, key})
      if (PathExists(from) && rename(from.c_str(), (from + ".revoked-" + serial).c_str()) != 0)
        return ErrnoStatus("move aside " + from, errno);
    std::printf("revoked %s (serial %s): moved to %s.revoked-%s; issue a new one with --server-id %s\n", crt.c_str(),
                serial.c_str(), crt.c_str(), serial.c_str(), id.c_str());
  }
  ASN1_TIME* last = X509_gmtime_adj(nullptr, 0);
  ASN1_TIME* next = X509_gmtime_adj(nullptr, kValidDays * 24 * 3600);
  X509_CRL_set1_lastUpdate(crl.get(), last);
  X509_CRL_set1_nextUpdate(crl.get(), next);
  ASN1_TIME_free(last);
  ASN1_TIME_free(next);
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), ca.second.get(), EVP_sha256()) == 0) return Internal("signing the CRL failed: " + TakeOpenSslError());
  BIO* mem = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_CRL(mem, crl.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(mem, &data);
  Status st = WriteFileAtomic(crl_path, ByteSpan(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(n)));
  BIO_free(mem);
  BR_RETURN_IF_ERROR(st);
  if (chmod(crl_path.c_str(), 0644) != 0) return ErrnoStatus("chmod " + crl_path, errno);
  int revoked = std::max(0, sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl.get())));
  std::printf("wrote %s (%d revoked)%s\n", crl_path.c_str(), revoked,
              ids.empty() ? "" : "; give it to the staging as --tls-crl and send it SIGHUP");
  return FsyncDir(dir);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  std::vector<std::string> ids, names, revoke, rotate, operators;
  po::options_description desc(
      "Usage: blockrep-keygen --out DIR --server-id ID [--server-id ID ...]\n"
      "       blockrep-keygen --out DIR --operator NAME [--operator NAME ...]\n"
      "       blockrep-keygen --out DIR --revoke ID [--revoke ID ...]\n"
      "       blockrep-keygen --out DIR --rotate-key ID [--rotate-key ID ...]\nOptions");
  desc.add_options()("help,h", "show this help")("out", po::value(&out), "directory for the files")(
      "server-id", po::value(&ids), "a server to issue an agent certificate and a data key for")(
      "revoke", po::value(&revoke), "a server whose agent certificate to revoke (adds it to DIR/ca.crl)")(
      "rotate-key", po::value(&rotate),
      "a server whose data key to rotate: a new key is appended to DIR/data-ID.key (copy the file to the agent "
      "and to wherever you recover; older points need the older keys it keeps)")(
      "staging-name", po::value(&names), "extra DNS name or IP for the staging certificate")(
      "operator", po::value(&operators),
      "an operator to issue a certificate for (operator-NAME.crt/.key, CN operator:NAME): blockrep-recover servers "
      "--staging shows every server's state with it, and nothing else");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (out.empty() || (ids.empty() && revoke.empty() && rotate.empty() && operators.empty()))
    return ReportFatal(kProg, InvalidArgument("--out DIR and at least one --server-id, --operator, --revoke or --rotate-key are required"));
  Status st = revoke.empty() ? Status::Ok() : Revoke(out, revoke);
  for (const std::string& id : rotate) {
    if (!st.ok()) break;
    st = wire::ValidateServerId(id);
    if (!st.ok()) break;
    std::string path = out + "/data-" + id + ".key";
    auto fresh = RotateDataKey(path);
    if (!fresh.ok()) {
      st = fresh.status();
      break;
    }
    auto all = LoadDataKeys(path);
    std::printf("rotated %s: new current key id %s, %zu key(s) held; the agent's next point is a full one under it\n",
                path.c_str(), KeyIdHex(fresh->key_id).c_str(), all.ok() ? all->size() : 0);
  }
  if (st.ok() && (!ids.empty() || !operators.empty())) st = Run(out, ids, names, operators);
  if (!st.ok()) return ReportFatal(kProg, st);
  return 0;
}
