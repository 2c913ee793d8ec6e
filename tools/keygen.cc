// blockrep-keygen: a quick-start PKI and data keys. Writes ca.crt/ca.key (reused when present),
// staging.crt/staging.key, and per server agent-ID.crt/agent-ID.key (TLS, CN = server-id) and
// data-ID.key (the AES data key, mode 0600). Never overwrites an existing file.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <memory>

#include "blockrep/cli.h"
#include "blockrep/options.h"
#include "blockrep/fs.h"
#include "blockrep/keyfile.h"
#include "blockrep/tls.h"
#include "blockrep/wire.h"

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

Status Run(const std::string& dir, const std::vector<std::string>& ids,
           const std::vector<std::string>& staging_names) {
  for (const auto& id : ids) BR_RETURN_IF_ERROR(wire::ValidateServerId(id));
  BR_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  bool created = false;
  BR_ASSIGN_OR_RETURN(auto ca, LoadOrCreateCa(dir, &created));
  std::printf("%s %s/ca.crt, %s/ca.key\n", created ? "wrote" : "reusing", dir.c_str(), dir.c_str());
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
    BR_RETURN_IF_ERROR(WriteNewDataKey(dir + "/data-" + id + ".key"));
    std::printf("wrote %s/agent-%s.crt, agent-%s.key, data-%s.key (mode 0600)\n", dir.c_str(), id.c_str(),
                id.c_str(), id.c_str());
  }
  return FsyncDir(dir);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  std::vector<std::string> ids, names;
  po::options_description desc("Usage: blockrep-keygen --out DIR --server-id ID [--server-id ID ...]\nOptions");
  desc.add_options()("help,h", "show this help")("out", po::value(&out), "directory for the files")(
      "server-id", po::value(&ids), "a server to issue an agent certificate and a data key for")(
      "staging-name", po::value(&names), "extra DNS name or IP for the staging certificate");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (out.empty() || ids.empty())
    return ReportFatal(kProg, InvalidArgument("--out DIR and at least one --server-id are required"));
  Status st = Run(out, ids, names);
  if (!st.ok()) return ReportFatal(kProg, st);
  return 0;
}
