#include "stretch_reader.h"

#include <fcntl.h>

#include <algorithm>
#include <string>
#include <thread>

#include "blockrep/base/bytes.h"
#include "blockrep/base/check.h"
#include "blockrep/base/checksum.h"
#include "span_queue.h"

namespace blockrep::recovery {
namespace {

using store::IndexEntry;

// Bytes [offset, offset + length) of a pack, holding entries [first, last) of the caller's list.
struct Stretch {
  uint32_t pack = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  size_t first = 0, last = 0;
  Status invalid;  // an entry no pack can hold: reported for it, nothing read
};

// Where each read should stop: a record closer than kReadGapMax to the next one is read with it,
// as long as the stretch stays within kWindowBytes (or one record, if that is larger).
std::vector<Stretch> Plan(const std::vector<const IndexEntry*>& entries, uint64_t* total_bytes) {
  constexpr uint64_t kWindowBytes = store::PackReader::kWindowBytes;
  std::vector<uint64_t> read_until(entries.size());
  for (size_t i = entries.size(); i-- > 0;) {
    const IndexEntry& e = *entries[i];
    uint64_t end = e.pack_offset + e.record_bytes;
    read_until[i] = end;
    if (i + 1 < entries.size() && entries[i + 1]->pack == e.pack && entries[i + 1]->pack_offset >= e.pack_offset &&
        entries[i + 1]->pack_offset <= end + StretchReader::kReadGapMax &&
        read_until[i + 1] - e.pack_offset <= kWindowBytes)
      read_until[i] = std::max(end, read_until[i + 1]);
  }
  std::vector<Stretch> plan;
  *total_bytes = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const IndexEntry& e = *entries[i];
    if (e.record_bytes > store::kRecordBytesMax || e.pack_offset > store::kPackBytesMax) {
      Stretch bad;
      bad.first = i;
      bad.last = i + 1;
      bad.invalid = DataLoss("pack " + std::to_string(e.pack) + " offset " + std::to_string(e.pack_offset) +
                             ": a record of " + std::to_string(e.record_bytes) + " bytes there cannot exist");
      plan.push_back(std::move(bad));
      continue;
    }
    if (!plan.empty()) {
      const Stretch& s = plan.back();
      // Subtraction form: no sum here can overflow, whatever the entry says.
      if (s.invalid.ok() && s.pack == e.pack && e.pack_offset >= s.offset && e.pack_offset - s.offset <= s.length &&
          e.record_bytes <= s.length - (e.pack_offset - s.offset)) {
        plan.back().last = i + 1;
        continue;
      }
    }
    Stretch s;
    s.pack = e.pack;
    s.offset = e.pack_offset;
    s.length = std::clamp<uint64_t>(read_until[i] > e.pack_offset ? read_until[i] - e.pack_offset : 0, e.record_bytes,
                                    std::max<uint64_t>(kWindowBytes, e.record_bytes));
    s.first = i;
    s.last = i + 1;
    *total_bytes += s.length;
    plan.push_back(std::move(s));
  }
  return plan;
}

// Announces the stretches ahead of the one about to be read, up to kAdviseAheadBytes.
class Advisor {
 public:
  Advisor(store::PackReader* packs, const std::vector<Stretch>& plan) : packs_(packs), plan_(plan) {}
  void Before(size_t k) {
    for (; next_ < plan_.size() && ahead_bytes_ < StretchReader::kAdviseAheadBytes; ++next_) {
      const Stretch& s = plan_[next_];
      if (!s.invalid.ok()) continue;
      // Advice only: a pack that cannot be opened is reported by the read.
      Result<int> fd = packs_->Fd(s.pack);
      if (fd.ok()) (void)posix_fadvise(*fd, static_cast<off_t>(s.offset), static_cast<off_t>(s.length), POSIX_FADV_WILLNEED);
      ahead_bytes_ += s.length;
    }
    ahead_bytes_ -= std::min(ahead_bytes_, plan_[k].length);
  }

 private:
  store::PackReader* const packs_;
  const std::vector<Stretch>& plan_;
  size_t next_ = 0;
  uint64_t ahead_bytes_ = 0;  // announced and not yet read
};

// Reads stretch `s` into `data`: all of it, or less at the end of the pack.
// A recycled buffer keeps its size, so resizing it does not zero-fill what the read overwrites.
Status ReadStretch(store::PackReader* packs, const Stretch& s, Bytes* data) {
  Result<File*> f = s.invalid.ok() ? packs->Pack(s.pack) : Result<File*>(s.invalid);
  if (!f.ok()) {
    data->clear();
    return f.status();
  }
  data->resize(static_cast<size_t>(s.length));
  Result<size_t> got = (*f)->ReadAt(s.offset, data->data(), data->size());
  if (!got.ok()) {
    data->clear();
    return DataLoss("pack " + std::to_string(s.pack) + " offset " + std::to_string(s.offset) + ": " +
                    got.status().message());
  }
  data->resize(*got);
  return Status::Ok();
}

// Entry `e` of stretch `s`, from what was read of it.
Status Serve(const Stretch& s, const Status& read, ByteSpan data, const IndexEntry& e, ByteSpan* out) {
  BR_RETURN_IF_ERROR(read);
  BR_CHECK(e.pack == s.pack && e.pack_offset >= s.offset);  // Plan put it there
  const uint64_t at = e.pack_offset - s.offset;
  if (at > data.size() || e.record_bytes > data.size() - at)
    return DataLoss("pack " + std::to_string(e.pack) + " offset " + std::to_string(e.pack_offset) +
                    ": unexpected end of file at offset " + std::to_string(s.offset + data.size()));
  *out = data.subspan(at, e.record_bytes);
  if (Checksum64(*out) != e.checksum)
    return DataLoss("record in pack " + std::to_string(e.pack) + " at offset " + std::to_string(e.pack_offset) +
                    " fails its checksum");
  return Status::Ok();
}

}  // namespace

Status StretchReader::Read(const std::vector<const store::IndexEntry*>& entries, const RecordFn& fn) {
  uint64_t total_bytes = 0;
  const std::vector<Stretch> plan = Plan(entries, &total_bytes);
  auto hand_over = [&](size_t k, const Status& read, ByteSpan data) -> Status {
    for (size_t i = plan[k].first; i < plan[k].last; ++i) {
      ByteSpan record;
      Status st = Serve(plan[k], read, data, *entries[i], &record);
      BR_RETURN_IF_ERROR(fn(i, st, st.ok() ? record : ByteSpan()));
    }
    return Status::Ok();
  };
  Advisor advisor(packs_, plan);
  if (total_bytes < threaded_bytes_min_) {
    Bytes data;
    for (size_t k = 0; k < plan.size(); ++k) {
      advisor.Before(k);
      Status read = ReadStretch(packs_, plan[k], &data);
      BR_RETURN_IF_ERROR(hand_over(k, read, data));
    }
    return Status::Ok();
  }
  // The reading thread hands stretches over through a bounded queue (about kSlots of them), and
  // the caller gives the buffers back once it is done with each.
  SpanQueue queue(kSlots * store::PackReader::kWindowBytes);
  std::thread reader([&] {
    for (size_t k = 0; k < plan.size(); ++k) {
      advisor.Before(k);
      SpanQueue::Item item{k, Status::Ok(), queue.TakeBuffer()};
      item.status = ReadStretch(packs_, plan[k], &item.data);
      if (!queue.Push(std::move(item))) break;  // the caller stopped
    }
    queue.Finish(Status::Ok());
  });
  Status result = queue.Consume(
      [&](const SpanQueue::Item& item) { return hand_over(item.index, item.status, ByteSpan(item.data)); });
  reader.join();
  return result;
}

}  // namespace blockrep::recovery
