// TLS 1.3 with mutual certificate authentication, as a pure in-memory engine: ciphertext goes in
// and out through an in-memory BIO of our own, so all socket I/O stays on io_uring. What OpenSSL
// writes lands in `outgoing()` at once (the BIO appends to it: nothing is left in a BIO after an
// SSL_* call), which the channel sends; what it reads comes from ciphertext pushed or lent to the
// session.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct asn1_string_st ASN1_INTEGER;

namespace blockrep {

struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
  // Server only: a CRL signed by `ca` (blockrep-keygen --revoke); certificates it lists are refused.
  // Empty: none.
  std::string crl;
};

class TlsContext {
 public:
  // Server: requires a client certificate signed by `ca`. Client: requires the server's
  // certificate to be signed by `ca` and to match the host it dials.
  static Result<std::unique_ptr<TlsContext>> Create(const TlsFiles& files, bool server);
  ~TlsContext();
  SSL_CTX* ctx() { return ctx_; }
  bool server() const { return server_; }
  // Serial numbers (hex) the CRL revokes; empty without one.
  const std::vector<std::string>& revoked_serials() const { return revoked_; }

 private:
  TlsContext() = default;
  Status LoadCrl(const TlsFiles& files);
  SSL_CTX* ctx_ = nullptr;
  bool server_ = false;
  std::vector<std::string> revoked_;
};

class TlsSession {
 public:
  // `peer_host` (client only) is checked against the server certificate's names.
  static Result<std::unique_ptr<TlsSession>> Create(TlsContext* ctx, const std::string& peer_host);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Advances the handshake; true once it is complete.
  Result<bool> Handshake();
  bool handshake_done() const { return handshake_done_; }

  // Ciphertext received from the socket, copied.
  Status PushCiphertext(ByteSpan data);
  // Ciphertext received from the socket, lent: TLS reads it in place (one copy fewer than
  // PushCiphertext) until KeepUnread(), which copies what it has not read yet, so that the lender
  // may reuse its buffer. One loan at a time.
  void LendCiphertext(ByteSpan data);
  void KeepUnread();
  // Appends decrypted bytes to `out` (at most `max` more). A clean close_notify from the peer is
  // reported as kUnavailable "peer closed".
  Status ReadPlaintext(RawBytes* out, size_t max);
  Status WritePlaintext(ByteSpan data);
  // Queues close_notify.
  void Shutdown();

  // Ciphertext waiting for the socket; the channel consumes it from the front.
  RawBytes& outgoing() { return outgoing_; }

  // The common name of the verified peer certificate ("" before the handshake).
  std::string PeerCommonName() const;
  // Its serial number in hex ("" before the handshake).
  std::string PeerSerialHex() const;

 private:
  TlsSession() = default;
  friend struct TlsBio;
  // An emptied receive buffer larger than this is given back (idle sessions: BRIEF P6).
  static constexpr size_t kIncomingKeepBytes = 64u << 10;
  Status ErrorFor(int rc, const char* what);
  // The read BIO's source: the unread part of `incoming_` (from `incoming_start_`), then of the
  // loan. Returns the bytes copied into `to`.
  size_t TakeCiphertext(uint8_t* to, size_t max);
  size_t unread_ciphertext() const { return incoming_.size() - incoming_start_ + (lent_.size() - lent_done_); }
  SSL* ssl_ = nullptr;  // owns the BIO (TlsBio, in tls.cc), which points back here
  RawBytes outgoing_;
  RawBytes incoming_;
  size_t incoming_start_ = 0;
  ByteSpan lent_;
  size_t lent_done_ = 0;
  bool handshake_done_ = false;
  bool server_ = false;
};

// A certificate serial number in upper-case hex, as CRLs and logs name it.
std::string SerialHex(const ASN1_INTEGER* serial);

// One line describing the last OpenSSL error(s) on this thread, and clears the queue.
std::string TakeOpenSslError();

}  // namespace blockrep
