// A bounded hand-off of byte spans from one producer thread to one consumer, so that the network
// side of a long read from a staging (requests, TLS, frames) runs on one core while the caller
// opens and writes the spans that came before on the other. Buffers go back and forth, so a
// restore does not fault in fresh pages for every span.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/check.h"
#include "blockrep/base/status.h"

namespace blockrep::recovery {

class SpanQueue {
 public:
  struct Item {
    size_t index = 0;  // which span
    Status status;     // the read's
    Bytes data;
  };

  explicit SpanQueue(size_t bytes_max) : bytes_max_(bytes_max) { BR_CHECK(bytes_max > 0); }

  // Producer: a buffer to fill (one the consumer is done with, when there is one).
  Bytes TakeBuffer() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return Bytes();
    Bytes b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  // Producer: waits while the queue holds bytes_max or more; false once the consumer stopped.
  bool Push(Item item) {
    std::unique_lock<std::mutex> lock(mu_);
    room_.wait(lock, [&] { return stopped_ || bytes_ < bytes_max_; });
    if (stopped_) return false;
    bytes_ += item.data.size();
    items_.push_back(std::move(item));
    ready_.notify_one();
    return true;
  }
  // Producer: no more items; `final` is how the reading ended.
  void Finish(Status final) {
    std::lock_guard<std::mutex> lock(mu_);
    final_ = std::move(final);
    done_ = true;
    ready_.notify_one();
  }

  // Consumer: the next item, or nullopt once the producer finished and everything was taken.
  std::optional<Item> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [&] { return done_ || !items_.empty(); });
    if (items_.empty()) return std::nullopt;
    Item it = std::move(items_.front());
    items_.pop_front();
    bytes_ -= it.data.size();
    room_.notify_one();
    return it;
  }
  void Recycle(Bytes buffer) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kFreeBuffersMax) free_.push_back(std::move(buffer));
  }
  // Consumer: gives up; the producer's next Push returns false.
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    room_.notify_one();
  }
  // Consumer: fn(item) for every item in turn, each buffer given back after it; the first error
  // of fn stops the producer (its next Push returns false) and is returned. Join the producer after.
  template <typename Fn>
  Status Consume(Fn&& fn) {
    while (std::optional<Item> item = Pop()) {
      Status st = fn(*item);
      Recycle(std::move(item->data));
      if (!st.ok()) {
        Stop();
        return st;
      }
    }
    return Status::Ok();
  }
  // After the producer finished (its thread joined).
  const Status& final_status() const { return final_; }

 private:
  static constexpr size_t kFreeBuffersMax = 64;
  const size_t bytes_max_;
  std::mutex mu_;
  std::condition_variable ready_, room_;
  std::deque<Item> items_;
  std::vector<Bytes> free_;
  size_t bytes_ = 0;
  bool done_ = false, stopped_ = false;
  Status final_;
};

}  // namespace blockrep::recovery
