#include "blockrep/net/tls.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "blockrep/base/check.h"
#include "blockrep/base/fs.h"

namespace blockrep {

std::string TakeOpenSslError() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(e);
    if (!out.empty()) out += "; ";
    out += reason != nullptr ? reason : buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

std::string SerialHex(const ASN1_INTEGER* serial) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  char* hex = bn != nullptr ? BN_bn2hex(bn) : nullptr;
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

Status TlsContext::LoadCrl(const TlsFiles& files) {
  FILE* f = std::fopen(files.crl.c_str(), "r");
  if (f == nullptr) return ErrnoStatus("CRL " + files.crl, errno).Annotate("--tls-crl (blockrep-keygen --revoke writes ca.crl)");
  X509_CRL* crl = PEM_read_X509_CRL(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (crl == nullptr) return InvalidArgument("--tls-crl " + files.crl + " is not a PEM CRL: " + TakeOpenSslError());
  // Signed by our CA, or every client would fail verification with an obscure error.
  X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
  X509_OBJECT* ca = nullptr;
  STACK_OF(X509_OBJECT)* objs = X509_STORE_get0_objects(store);
  for (int i = 0; i < sk_X509_OBJECT_num(objs); ++i) {
    X509_OBJECT* o = sk_X509_OBJECT_value(objs, i);
    if (X509_OBJECT_get_type(o) == X509_LU_X509) ca = o;
  }
  EVP_PKEY* ca_key = ca != nullptr ? X509_get0_pubkey(X509_OBJECT_get0_X509(ca)) : nullptr;
  if (ca_key == nullptr || X509_CRL_verify(crl, ca_key) != 1) {
    X509_CRL_free(crl);
    return InvalidArgument("--tls-crl " + files.crl + " is not signed by the CA in " + files.ca +
                           " (write it with blockrep-keygen --revoke in that CA's directory)");
  }
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl);
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i)
    revoked_.push_back(SerialHex(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i))));
  int added = X509_STORE_add_crl(store, crl);
  X509_CRL_free(crl);
  if (added != 1) return Internal("cannot use CRL " + files.crl + ": " + TakeOpenSslError());
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);  // the client's certificate (the CA is ours)
  return Status::Ok();
}

Result<std::unique_ptr<TlsContext>> TlsContext::Create(const TlsFiles& files, bool server) {
  for (const std::string* f : {&files.cert, &files.key, &files.ca}) {
    if (f->empty())
      return InvalidArgument(std::string("TLS needs --tls-cert, --tls-key and --tls-ca ") +
                             "(create them with blockrep-keygen)");
    if (!PathExists(*f))
      return NotFound("TLS file " + *f + " does not exist (create it with blockrep-keygen)");
  }
  std::unique_ptr<TlsContext> t(new TlsContext());
  t->server_ = server;
  t->ctx_ = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (t->ctx_ == nullptr) return Internal("SSL_CTX_new: " + TakeOpenSslError());
  SSL_CTX_set_min_proto_version(t->ctx_, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(t->ctx_, files.cert.c_str()) != 1)
    return InvalidArgument("cannot use certificate " + files.cert + ": " + TakeOpenSslError());
  if (SSL_CTX_use_PrivateKey_file(t->ctx_, files.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return InvalidArgument("cannot use private key " + files.key + ": " + TakeOpenSslError());
  if (SSL_CTX_check_private_key(t->ctx_) != 1)
    return InvalidArgument("private key " + files.key + " does not match certificate " +
                           files.cert);
  if (SSL_CTX_load_verify_locations(t->ctx_, files.ca.c_str(), nullptr) != 1)
    return InvalidArgument("cannot load CA certificate " + files.ca + ": " + TakeOpenSslError());
  int mode = SSL_VERIFY_PEER;
  if (server) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(t->ctx_, mode, nullptr);
  // No session tickets: every connection authenticates with certificates.
  SSL_CTX_set_num_tickets(t->ctx_, 0);
  if (server && !files.crl.empty()) BR_RETURN_IF_ERROR(t->LoadCrl(files));
  return t;
}

// The one BIO between OpenSSL and a session's buffers, both ways. What SSL writes is appended to
// the session's `outgoing_` (no memory BIO to copy it out of again, nothing left behind after a
// call); what it reads is taken from the session's pushed or lent ciphertext. With none there,
// a read asks to be retried, as a memory BIO with an EOF return of -1 does: the peer's close
// reaches the channel from the socket, not from here.
struct TlsBio {
  static TlsSession* Of(BIO* b) { return static_cast<TlsSession*>(BIO_get_data(b)); }
  static int Write(BIO* b, const char* data, int len) {
    BIO_clear_retry_flags(b);
    if (len <= 0) return 0;
    RawBytes& out = Of(b)->outgoing_;
    size_t base = out.size();
    out.resize(base + static_cast<size_t>(len));  // RawBytes: not an element-wise insert
    std::memcpy(out.data() + base, data, static_cast<size_t>(len));
    return len;
  }
  static int Read(BIO* b, char* to, int len) {
    BIO_clear_retry_flags(b);
    if (len <= 0) return 0;
    size_t n = Of(b)->TakeCiphertext(reinterpret_cast<uint8_t*>(to), static_cast<size_t>(len));
    if (n == 0) {
      BIO_set_retry_read(b);
      return -1;
    }
    return static_cast<int>(n);
  }
  static long Ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;  // written is as good as sent: the channel sends outgoing_
      case BIO_CTRL_PENDING:
        return static_cast<long>(Of(b)->unread_ciphertext());
      default:
        return 0;  // WPENDING (nothing waits in the BIO), EOF (not from here), kTLS and the rest: no
    }
  }
  static int Create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }
  static const BIO_METHOD* Method() {
    static BIO_METHOD* const method = [] {
      int index = BIO_get_new_index();
      BIO_METHOD* m = index < 0 ? nullptr : BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "blockrep TLS buffers");
      if (m != nullptr &&
          (BIO_meth_set_write(m, Write) != 1 || BIO_meth_set_read(m, Read) != 1 || BIO_meth_set_ctrl(m, Ctrl) != 1 ||
           BIO_meth_set_create(m, Create) != 1)) {
        BIO_meth_free(m);
        m = nullptr;
      }
      return m;
    }();
    return method;
  }
};

Result<std::unique_ptr<TlsSession>> TlsSession::Create(TlsContext* ctx, const std::string& peer_host) {
  std::unique_ptr<TlsSession> s(new TlsSession());
  s->server_ = ctx->server();
  s->ssl_ = SSL_new(ctx->ctx());
  if (s->ssl_ == nullptr) return Internal("SSL_new: " + TakeOpenSslError());
  const BIO_METHOD* method = TlsBio::Method();
  BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
  if (bio == nullptr) return Internal("cannot create the TLS session's BIO: " + TakeOpenSslError());
  BIO_set_data(bio, s.get());
  SSL_set_bio(s->ssl_, bio, bio);  // one BIO both ways: SSL_set_bio takes its one reference
  if (s->server_) {
    SSL_set_accept_state(s->ssl_);
  } else {
    SSL_set_connect_state(s->ssl_);
    in6_addr addr6{};
    in_addr addr4{};
    bool is_ip = inet_pton(AF_INET, peer_host.c_str(), &addr4) == 1 ||
                 inet_pton(AF_INET6, peer_host.c_str(), &addr6) == 1;
    if (is_ip) {
      X509_VERIFY_PARAM* param = SSL_get0_param(s->ssl_);
      if (X509_VERIFY_PARAM_set1_ip_asc(param, peer_host.c_str()) != 1)
        return Internal("cannot set expected staging IP " + peer_host);
    } else {
      if (SSL_set1_host(s->ssl_, peer_host.c_str()) != 1)
        return Internal("cannot set expected staging host name " + peer_host);
      SSL_set_tlsext_host_name(s->ssl_, peer_host.c_str());
    }
  }
  return s;
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

Status TlsSession::ErrorFor(int rc, const char* what) {
  int err = SSL_get_error(ssl_, rc);  // an alert for the peer, if any, is in outgoing_ already
  if (err == SSL_ERROR_ZERO_RETURN) return Unavailable("peer closed the TLS session");
  std::string detail = TakeOpenSslError();
  long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK)
    detail += " (" + std::string(X509_verify_cert_error_string(verify)) + ")";
  if (err == SSL_ERROR_SYSCALL && detail == "unknown TLS error") detail = "connection closed";
  // Who the peer is, or whether it accepts us, does not change by retrying: those are operator
  // errors (certificates, CAs, signatures: "decrypt error" is the alert for a certificate signed
  // by another CA under the same name). Everything else (a bad record MAC, a decode error, a cut) is the transport's doing:
  // the data was damaged or lost on the way, and a new connection sends it again.
  bool identity = verify != X509_V_OK || detail.find("certificate") != std::string::npos ||
                  detail.find("unknown ca") != std::string::npos ||
                  detail.find("decrypt error") != std::string::npos ||  // alert: a signature did not verify
                  (!handshake_done_ && detail.find("handshake failure") != std::string::npos);
  if (!identity) return Unavailable(std::string(what) + ": " + detail + " (damaged or cut in transit)");
  return Unauthenticated(std::string(what) + ": " + detail);
}

Result<bool> TlsSession::Handshake() {
  if (handshake_done_) return true;
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    handshake_done_ = true;
    return true;
  }
  int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
  return ErrorFor(rc, "TLS handshake failed");
}

size_t TlsSession::TakeCiphertext(uint8_t* to, size_t max) {
  size_t n = std::min(max, incoming_.size() - incoming_start_);
  if (n > 0) {
    std::memcpy(to, incoming_.data() + incoming_start_, n);
    incoming_start_ += n;
    if (incoming_start_ == incoming_.size()) {
      incoming_.clear();
      incoming_start_ = 0;
    }
  }
  size_t lent = std::min(max - n, lent_.size() - lent_done_);
  if (lent > 0) {
    std::memcpy(to + n, lent_.data() + lent_done_, lent);
    lent_done_ += lent;
  }
  return n + lent;
}

Status TlsSession::PushCiphertext(ByteSpan data) {
  BR_CHECK_MSG(lent_.empty(), "TlsSession::PushCiphertext while ciphertext is lent: bytes would be read out of order");
  if (incoming_start_ > 0) {
    incoming_.erase(incoming_.begin(), incoming_.begin() + static_cast<ptrdiff_t>(incoming_start_));
    incoming_start_ = 0;
  }
  size_t base = incoming_.size();
  incoming_.resize(base + data.size());
  if (!data.empty()) std::memcpy(incoming_.data() + base, data.data(), data.size());
  return Status::Ok();
}

void TlsSession::LendCiphertext(ByteSpan data) {
  BR_CHECK_MSG(lent_.empty(), "TlsSession::LendCiphertext twice without KeepUnread");
  lent_ = data;
  lent_done_ = 0;
}

void TlsSession::KeepUnread() {
  ByteSpan rest = lent_.subspan(lent_done_);
  lent_ = ByteSpan();
  lent_done_ = 0;
  if (!rest.empty()) {
    BR_CHECK(PushCiphertext(rest).ok());  // cannot fail: nothing is lent now
  } else if (incoming_.empty() && incoming_.capacity() > kIncomingKeepBytes) {
    RawBytes().swap(incoming_);  // a burst that found TLS busy is over: an idle session stays small
  }
}

Status TlsSession::ReadPlaintext(RawBytes* out, size_t max) {
  size_t got = 0;
  while (got < max) {
    size_t base = out->size();
    // One TLS record's plaintext at most (16 KiB), or what OpenSSL already holds decrypted, so the
    // buffer grows by what is read, not by a guess (RawBytes: growing it clears nothing).
    size_t pending = static_cast<size_t>(SSL_pending(ssl_));
    size_t want = std::min<size_t>(max - got, pending > 0 ? pending : 16384);
    out->resize(base + want);
    ERR_clear_error();
    int n = SSL_read(ssl_, out->data() + base, static_cast<int>(want));
    if (n <= 0) {
      out->resize(base);
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::Ok();
      return ErrorFor(n, "TLS read failed");
    }
    out->resize(base + static_cast<size_t>(n));
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status TlsSession::WritePlaintext(ByteSpan data) {
  size_t done = 0;
  while (done < data.size()) {
    ERR_clear_error();
    int n = SSL_write(ssl_, data.data() + done, static_cast<int>(data.size() - done));
    if (n <= 0) return ErrorFor(n, "TLS write failed");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

void TlsSession::Shutdown() {
  SSL_shutdown(ssl_);  // close_notify lands in outgoing_
}

std::string TlsSession::PeerSerialHex() const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return "";
  std::string out = SerialHex(X509_get0_serialNumber(cert));
  X509_free(cert);
  return out;
}

std::string TlsSession::PeerCommonName() const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return "";
  // Exactly one CN, taken whole: a CN with an embedded NUL ("web1\0evil") or a second CN gives
  // "", which no server-id matches, instead of a prefix or a pick.
  X509_NAME* name = X509_get_subject_name(cert);
  std::string cn;
  int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (at >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, at) < 0) {
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n > 0 && static_cast<size_t>(n) == std::strlen(reinterpret_cast<char*>(utf8))) cn.assign(reinterpret_cast<char*>(utf8), n);
    OPENSSL_free(utf8);
  }
  X509_free(cert);
  return cn;
}

}  // namespace blockrep
