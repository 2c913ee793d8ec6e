// Fuzzes the handshake messages (HELLO, HELLO_OK, RESUME_POINT, ERROR) and the server-id check
// the staging applies to a HELLO before it looks at certificates or the store.
#include "blockrep/net/wire.h"
#include "roundtrip.h"

using namespace blockrep;
using namespace blockrep::wire;
using fuzz::RoundTrip;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Hello hello;
  hello.server_id = "db-01.example";
  hello.version_min = 2;
  fuzz::WriteSeed("hello", fuzz::WithSelector(0, hello.Encode()));
  fuzz::WriteSeed("hello-ok", fuzz::WithSelector(1, HelloOk{kVersion, 12, 13, 12}.Encode()));
  fuzz::WriteSeed("resume", fuzz::WithSelector(2, ResumePoint{13}.Encode()));
  fuzz::WriteSeed("error", fuzz::WithSelector(3, ErrorMsg{ErrorCode::kIdentity, "certificate is for web1"}.Encode()));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [selector, p] = fuzz::Select(data, size);
  switch (selector % 4) {
    case 0: {
      RoundTrip<Hello>(p);
      auto h = Hello::Decode(p);
      if (h.ok() && ValidateServerId(h->server_id).ok()) {
        // An accepted id is short, printable and cannot escape the store's servers/ directory.
        FUZZ_CHECK(!h->server_id.empty() && h->server_id.size() <= kMaxServerIdLen);
        FUZZ_CHECK(h->server_id.find('/') == std::string::npos && h->server_id != "." && h->server_id != "..");
      }
      break;
    }
    case 1: RoundTrip<HelloOk>(p); break;
    case 2: RoundTrip<ResumePoint>(p); break;
    case 3: RoundTrip<ErrorMsg>(p); break;
  }
  return 0;
}
