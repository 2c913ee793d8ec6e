#include "stretch_reader.h"

#include <fcntl.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "blockrep/base/bytes.h"
#include "blockrep/base/check.h"
#include "blockrep/base/checksum.h"

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

struct Slot {
  RawBytes bytes;  // what the read got: the stretch, or less at the end of the pack
  Status status;
};

void ReadStretch(store::PackReader* packs, const Stretch& s, Slot* slot) {
  slot->bytes.clear();
  slot->status = s.invalid;
  if (!s.invalid.ok()) return;
  Result<File*> f = packs->Pack(s.pack);
  if (!f.ok()) {
    slot->status = f.status();
    return;
  }
  slot->bytes.resize(static_cast<size_t>(s.length));
  Result<size_t> got = (*f)->ReadAt(s.offset, slot->bytes.data(), slot->bytes.size());
  if (!got.ok()) {
    slot->bytes.clear();
    slot->status = DataLoss("pack " + std::to_string(s.pack) + " offset " + std::to_string(s.offset) + ": " +
                            got.status().message());
    return;
  }
  slot->bytes.resize(*got);
}

// Entry `e` of stretch `s`, from what was read of it.
Status Serve(const Stretch& s, const Slot& slot, const IndexEntry& e, ByteSpan* out) {
  BR_RETURN_IF_ERROR(slot.status);
  BR_CHECK(e.pack == s.pack && e.pack_offset >= s.offset);  // Plan put it there
  const uint64_t at = e.pack_offset - s.offset;
  if (at > slot.bytes.size() || e.record_bytes > slot.bytes.size() - at)
    return DataLoss("pack " + std::to_string(e.pack) + " offset " + std::to_string(e.pack_offset) +
                    ": unexpected end of file at offset " + std::to_string(s.offset + slot.bytes.size()));
  *out = ByteSpan(slot.bytes.data() + at, e.record_bytes);
  if (Checksum64(*out) != e.checksum)
    return DataLoss("record in pack " + std::to_string(e.pack) + " at offset " + std::to_string(e.pack_offset) +
                    " fails its checksum");
  return Status::Ok();
}

}  // namespace

Status StretchReader::Read(const std::vector<const store::IndexEntry*>& entries, const RecordFn& fn) {
  uint64_t total_bytes = 0;
  const std::vector<Stretch> plan = Plan(entries, &total_bytes);
  auto hand_over = [&](const Stretch& s, const Slot& slot) -> Status {
    for (size_t i = s.first; i < s.last; ++i) {
      ByteSpan record;
      Status st = Serve(s, slot, *entries[i], &record);
      BR_RETURN_IF_ERROR(fn(i, st, st.ok() ? record : ByteSpan()));
    }
    return Status::Ok();
  };
  Advisor advisor(packs_, plan);
  if (total_bytes < threaded_bytes_min_) {
    Slot slot;
    for (size_t k = 0; k < plan.size(); ++k) {
      advisor.Before(k);
      ReadStretch(packs_, plan[k], &slot);
      BR_RETURN_IF_ERROR(hand_over(plan[k], slot));
    }
    return Status::Ok();
  }

  // The reading thread fills slot k % kSlots with stretch k once the caller is done with stretch
  // k - kSlots; the caller takes stretch k once it is read.
  Slot slots[kSlots];
  std::mutex mu;
  std::condition_variable cv;
  size_t read = 0, taken = 0;  // guarded by mu: stretches read; stretches the caller is done with
  bool stop = false;           // guarded by mu: the caller returns early
  std::thread reader([&] {
    for (size_t k = 0; k < plan.size(); ++k) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || k - taken < kSlots; });
        if (stop) return;
      }
      advisor.Before(k);
      ReadStretch(packs_, plan[k], &slots[k % kSlots]);
      {
        std::lock_guard<std::mutex> lock(mu);
        read = k + 1;
      }
      cv.notify_all();
    }
  });
  // However the caller's loop ends (fn's error included), the thread is stopped and joined before
  // the slots it writes go away.
  struct Joiner {
    std::mutex& mu;
    std::condition_variable& cv;
    bool& stop;
    std::thread& thread;
    ~Joiner() {
      {
        std::lock_guard<std::mutex> lock(mu);
        stop = true;
      }
      cv.notify_all();
      thread.join();
    }
  } joiner{mu, cv, stop, reader};
  for (size_t k = 0; k < plan.size(); ++k) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return read > k; });
    }
    BR_RETURN_IF_ERROR(hand_over(plan[k], slots[k % kSlots]));
    {
      std::lock_guard<std::mutex> lock(mu);
      taken = k + 1;
    }
    cv.notify_all();
  }
  return Status::Ok();
}

}  // namespace blockrep::recovery
