#include "descent.h"

#include "blockrep/base/check.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstdlib>

#include "restore.h"  // CheckChainHead

namespace blockrep::recovery {

Result<SealLink> ParseExpectPoint(const std::string& text) {
  SealLink out;
  size_t colon = text.find(':');
  std::string id = text.substr(0, colon);
  char* end = nullptr;
  unsigned long long v = id.empty() ? 0 : std::strtoull(id.c_str(), &end, 10);
  if (id.empty() || *end != '\0' || id[0] == '-' || v == 0)
    return InvalidArgument("--expect-point " + text + ": expected a point id (1 or more), optionally :MAC");
  out.point_id = v;
  if (colon != std::string::npos) {
    Bytes mac;
    if (!HexDecode(text.substr(colon + 1), &mac) || mac.size() != out.mac.size() || !(std::any_of(mac.begin(), mac.end(), [](uint8_t b) { return b != 0; })))
      return InvalidArgument("--expect-point " + text + ": the MAC after ':' must be 64 hex digits "
                             "(last-acked-seal-mac in the agent's state directory, file last-point)");
    std::copy(mac.begin(), mac.end(), out.mac.begin());
  }
  return out;
}

Status CheckDescent(const store::Manifest& m, const SealLink& expect, const KeyChain& keys, const SealOf& seal_of) {
  const uint64_t expect_point = expect.point_id;
  if (expect_point == 0) return Status::Ok();
  BR_RETURN_IF_ERROR(CheckChainHead(m, expect_point));
  const std::string who = "server '" + m.server_id + "': ";
  auto retained = [&](uint64_t id) -> const store::PointInfo* {
    for (const store::PointInfo& p : m.points)
      if (p.id == id) return &p;
    return nullptr;
  };
  const store::PointInfo* at = &m.points.back();
  const SealLink* expected = nullptr;  // the link that led here, whose MAC this point's seal must have
  SealLink link;
  // Each step goes to a strictly smaller id, so the walk ends within the chain's length.
  for (size_t steps = 0; steps <= m.points.size(); ++steps) {
    auto seal = seal_of(*at);
    if (!seal.ok()) return seal.status().Annotate(who + "point " + std::to_string(at->id) + "'s seal");
    const KeyChain::Derived& key = keys.ForSeal(*seal);
    if (!key.seal_keys->Authentic(*seal))
      return DataLoss(who + "point " + std::to_string(at->id) +
                      "'s seal is not authentic (not sealed with this key file's keys): its link cannot be trusted");
    if (expected != nullptr && expected->KnowsMac() &&
        CRYPTO_memcmp(expected->mac.data(), seal->mac.data(), seal->mac.size()) != 0)
      return DataLoss(who + "the chain forked: a later point follows a point " + std::to_string(at->id) +
                      " other than the one stored under that id (store rolled back and written again); "
                      "nothing was restored");
    if (at->id == expect_point) {
      if (expect.KnowsMac() && CRYPTO_memcmp(expect.mac.data(), seal->mac.data(), seal->mac.size()) != 0)
        return DataLoss(who + "the chain forked: its point " + std::to_string(expect_point) +
                        " is another than the one the agent saw acknowledged (its seal MAC differs from "
                        "--expect-point's); the store was rolled back and written again; nothing was restored");
      return Status::Ok();
    }
    link = seal->prev;
    if (link.point_id < expect_point)
      return DataLoss(who + "point " + std::to_string(at->id) + " follows point " + std::to_string(link.point_id) +
                      ": the chain does not descend from point " + std::to_string(expect_point) +
                      " (--expect-point); the store was rolled back and written again; nothing was restored");
    const store::PointInfo* next = retained(link.point_id);
    if (next == nullptr && link.point_id == expect_point) {  // expired, but the link names it
      if (expect.KnowsMac() && link.KnowsMac() && CRYPTO_memcmp(expect.mac.data(), link.mac.data(), link.mac.size()) != 0)
        return DataLoss(who + "the chain forked: point " + std::to_string(at->id) + " follows a point " +
                        std::to_string(expect_point) + " other than the one the agent saw acknowledged; nothing was restored");
      return Status::Ok();
    }
    if (next == nullptr)
      return DataLoss(who + "cannot show that the chain descends from point " + std::to_string(expect_point) +
                      ": point " + std::to_string(at->id) + " follows point " + std::to_string(link.point_id) +
                      ", which has expired (pass a later --expect-point, e.g. the newest point the agent "
                      "saw acknowledged)");
    at = next;
    expected = &link;
  }
  BR_UNREACHABLE(who + "the seal links loop: ids strictly decrease (VolumeSeal::Read)");
}

}  // namespace blockrep::recovery
