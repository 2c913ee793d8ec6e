// An operator's session (wire::Role::kOperator): `blockrep-recover servers --staging` asks for
// every server's figures — what /metrics shows, over the agents' own TLS, for a certificate whose
// CN is "operator:NAME" (blockrep-keygen --operator NAME). It reads no manifest, index or pack, and
// writes nothing.
#include "blockrep/base/cli.h"
#include "server.h"
#include "session.h"

namespace blockrep::staging {

Status Server::OnOperatorHello(Session& s) {
  const std::string cn = s.ch->tls().PeerCommonName();
  const std::string prefix = wire::kOperatorCnPrefix;
  if (cn.compare(0, prefix.size(), prefix) != 0 || !wire::ValidateServerId(cn.substr(prefix.size())).ok()) {
    Fail(s, wire::ErrorCode::kIdentity,
         PermissionDenied("the certificate '" + Printable(cn, 80) +
                          "' is not an operator's (blockrep-keygen --operator NAME issues one, CN operator:NAME)"));
    return Status::Ok();
  }
  s.fleet_view = true;
  s.hello_done = true;
  s.server_id = cn;
  Log(kProg, "session " + std::to_string(s.id) + ": operator '" + cn.substr(prefix.size()) + "' connected from " + s.peer);
  SendFrame(s, wire::MsgType::kHelloOk, wire::HelloOk{}.Encode());
  return Status::Ok();
}

Status Server::OnFleetRequest(Session& s, ByteSpan payload) {
  BR_RETURN_IF_ERROR(wire::DecodeEmpty(payload, "FLEET_REQUEST"));
  wire::Fleet fleet;
  for (auto& [id, st] : servers_) {
    if (fleet.servers.size() == wire::Fleet::kServersMax) break;
    RefreshFigures(st);
    const ServerState::Figures& f = st.figures;
    wire::FleetEntry e;
    e.server_id = id;
    e.connected = st.active;
    if (f.report_utc_ns != 0) {
      e.state = f.report.state;
      e.lag_ms = f.report.lag_ms;
      e.backlog_bytes = f.report.backlog_bytes;
      e.rpo_target_ms = f.report.rpo_target_ms;
      e.report_utc_ns = f.report_utc_ns;
    }
    e.last_heard_utc_ns = f.last_heard_utc_ns;
    e.points = f.retained_points;
    e.last_point_ns = f.last_point_ns;
    e.last_consistent_ns = f.last_consistent_ns;
    e.stored_bytes = st.pack_bytes;
    e.pack_files = st.pack_count;
    e.last_drill_ns = f.last_drill_ns;
    e.last_drill_pass = static_cast<int8_t>(f.last_drill_pass);
    fleet.servers.push_back(std::move(e));
  }
  SendFrame(s, wire::MsgType::kFleet, fleet.Encode());
  return Status::Ok();
}

}  // namespace blockrep::staging
