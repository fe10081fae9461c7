#include "topic_log.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "atomics.hpp"

namespace hms::ffi::detail {

namespace {

TopicSlotHeader* slotAt(uint8_t* slots, const TopicGeometry& g, uint64_t seq) noexcept {
  return reinterpret_cast<TopicSlotHeader*>(slots + ((seq - 1) & (g.slotCount - 1)) * g.slotBytes);
}
const TopicSlotHeader* slotAt(const uint8_t* slots, const TopicGeometry& g, uint64_t seq) noexcept {
  return slotAt(const_cast<uint8_t*>(slots), g, seq);
}

// Copies `words` words out of a slot the publisher may be rewriting at the same moment: a
// seqlock read, checked by the caller against the slot's sequence afterwards (a torn copy is
// thrown away). Word by word with relaxed atomic loads, so that a racing write yields a stale
// value, not a torn word. Not instrumented by TSan: the race is the design, the check after it
// is what makes it safe, and Cap'n Proto's own writes to the slot are plain stores.
// The builtin, not loadRelaxed(): std::atomic_ref's inline functions are instrumented where they
// are not inlined into this one (TSan builds), which brought the report back.
__attribute__((no_sanitize("thread"), noinline)) void copyWords(const uint64_t* from, uint64_t* to,
                                                                uint32_t words) noexcept {
  for (uint32_t i = 0; i < words; ++i) to[i] = __atomic_load_n(from + i, __ATOMIC_RELAXED);
}

}  // namespace

Status TopicGeometry::validate() const {
  if (slotCount < 2 || (slotCount & (slotCount - 1)) != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "a topic's slot count must be a power of two, at least 2, not " +
                      std::to_string(slotCount));
  }
  if (slotBytes < 64 || slotBytes % 64 != 0) {
    return Status(
        StatusCode::kInvalidArgument,
        "a topic's slot size must be a multiple of 64 bytes, not " + std::to_string(slotBytes));
  }
  if (segmentBytes() > (uint64_t{1} << 32)) {
    return Status(StatusCode::kInvalidArgument,
                  "a topic's log must stay under 4 GiB (slots x slot size)");
  }
  return Status();
}

void initTopicLog(uint8_t* base, const TopicGeometry& g) noexcept {
  auto* h = reinterpret_cast<TopicHeader*>(base);
  h->magic = kTopicMagic;
  h->layoutVersion = kTopicLayoutVersion;
  h->slotCount = g.slotCount;
  h->slotBytes = g.slotBytes;
  h->segmentBytes = g.segmentBytes();
}

Result<TopicGeometry> checkTopicLog(const uint8_t* base, uint64_t mappedBytes) {
  if (mappedBytes < kTopicHeaderBytes) {
    return Status(StatusCode::kDataLoss, "the topic segment is smaller than its header");
  }
  const auto* h = reinterpret_cast<const TopicHeader*>(base);
  if (h->magic != kTopicMagic) {
    return Status(StatusCode::kDataLoss, "the segment is not a topic log (bad magic)");
  }
  if (h->layoutVersion != kTopicLayoutVersion) {
    return Status(StatusCode::kFailedPrecondition,
                  "the topic log has layout version " + std::to_string(h->layoutVersion) +
                      ", this library reads " + std::to_string(kTopicLayoutVersion) +
                      ": publisher and subscriber need the same HMS-FFI release");
  }
  TopicGeometry g{h->slotCount, h->slotBytes};
  if (auto s = g.validate(); !s) return Status(StatusCode::kDataLoss, s.message());
  if (h->segmentBytes != g.segmentBytes() || mappedBytes < g.segmentBytes()) {
    return Status(StatusCode::kDataLoss, "the topic log's size does not match its geometry");
  }
  return g;
}

void initCursor(SubscriberCursor* c, SlowConsumerPolicy policy, uint64_t next) noexcept {
  c->magic = kCursorMagic;
  c->layoutVersion = kCursorLayoutVersion;
  c->policy = uint32_t(policy);
  c->state = kEndOpen;
  c->next = next;
}

// ---- publisher -----------------------------------------------------------------------------

TopicPublisher::TopicPublisher(uint8_t* log, const TopicGeometry& g) noexcept
    : header_(reinterpret_cast<TopicHeader*>(log)),
      slots_(log + kTopicHeaderBytes),
      g_(g),
      published_(loadRelaxed(header_->published)),
      announced_(published_) {}

void TopicPublisher::addSubscriber(SubscriberCursor* c) {
  cursors_.push_back({c, c->policy == uint32_t(SlowConsumerPolicy::kBlockPublisher), 0});
  if (loadAcquire(c->next) == 0) {
    // A loan may be out (sequence published_ + 1 is being written): starting at most
    // slotCount - 1 back keeps clear of the slot it rewrites.
    const uint64_t back = std::min<uint64_t>({c->history, uint64_t(g_.slotCount) - 1, published_});
    // SYNC POINT WRITE, pairs with the acquire load in TopicSubscriber::attached().
    storeRelease(c->next, published_ + 1 - back);
    wakeIfSleeping(c->subscriberWake);
  }
}

void TopicPublisher::removeSubscriber(SubscriberCursor* c) {
  std::erase_if(cursors_, [c](const Attached& a) { return a.cursor == c; });
}

bool TopicPublisher::mayRewrite(uint64_t seq, SubscriberCursor** blocker) noexcept {
  if (seq <= g_.slotCount) return true;  // the slot has never held a message
  const uint64_t previous = seq - g_.slotCount;
  for (Attached& a : cursors_) {
    if (!a.blocks || a.seenNext > previous) continue;  // known to be past it: no shared read
    SubscriberCursor* c = a.cursor;
    if (loadAcquire(c->state) != kEndOpen) continue;  // left or died: holds nobody back
    // SYNC POINT READ, pairs with the release store in TopicSubscriber::flush(): once it is
    // past `previous` it has stopped reading the slot.
    a.seenNext = loadAcquire(c->next);
    if (a.seenNext <= previous) {
      *blocker = c;
      return false;
    }
  }
  return true;
}

bool TopicPublisher::tryLoan(Loan& out, SubscriberCursor** blocker) noexcept {
  const uint64_t seq = published_ + 1;
  SubscriberCursor* holder = nullptr;
  if (!mayRewrite(seq, &holder)) {
    if (blocker) *blocker = holder;
    return false;
  }
  TopicSlotHeader* slot = slotAt(slots_, g_, seq);
  // Readers that still look at the slot (drop_oldest) see it is being rewritten.
  storeRelaxed(slot->seq, kSlotWriting);
  std::atomic_thread_fence(std::memory_order_release);
  auto* words = reinterpret_cast<uint64_t*>(slot + 1);
  // Cap'n Proto builds in zeroed memory: clear what the slot's last message used.
  const uint32_t used = std::min(slot->words, g_.maxWords());
  for (uint32_t i = 0; i < used; ++i) storeRelaxed(words[i], uint64_t{0});
  out.seq = seq;
  out.words = words;
  out.capacityWords = g_.maxWords();
  return true;
}

Status TopicPublisher::loan(const WaitPolicy& policy, int64_t deadlineNs, Loan& out) {
  const uint64_t seq = published_ + 1;
  SubscriberCursor* c = nullptr;
  while (!tryLoan(out, &c)) {
    const bool moved = waitFor(c->publisherWake, policy, deadlineNs, [&] {
      return loadAcquire(c->next) > seq - g_.slotCount || loadAcquire(c->state) != kEndOpen;
    });
    if (!moved) {
      return Status(StatusCode::kDeadlineExceeded,
                    "a block_publisher subscriber is " +
                        std::to_string(seq - loadAcquire(c->next)) +
                        " messages behind and did not catch up before the deadline");
    }
  }
  return Status();
}

void TopicPublisher::commit(const Loan& loan, uint32_t words) noexcept {
  TopicSlotHeader* slot = slotAt(slots_, g_, loan.seq);
  storeRelaxed(slot->words, std::min(words, g_.maxWords()));  // drop_oldest readers read it racing
  storeRelease(slot->seq, loan.seq);  // SYNC POINT WRITE: the slot's message is whole
  published_ = loan.seq;
}

void TopicPublisher::publish(const Loan& loan, uint32_t words) noexcept {
  commit(loan, words);
  announce();
}

void TopicPublisher::announce() noexcept {
  if (announced_ == published_) return;
  announced_ = published_;
  // SYNC POINT WRITE, pairs with the acquire loads in TopicSubscriber::next()/hasNext().
  storeRelease(header_->published, published_);
  // One fence for all the subscribers (pairs with the fence in waitFor()); a syscall only for
  // one that announced it sleeps.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (const Attached& a : cursors_) {
    WakeWord& w = a.cursor->subscriberWake;
    if (loadRelaxed(w.sleeping) != 0 && exchangeAcqRel(w.sleeping, 0u) != 0) {
      addRelaxed(w.wakes, uint64_t{1});
      futexWakeAll(&w.sleeping);
    }
  }
}

void TopicPublisher::abandon(const Loan& loan) noexcept {
  TopicSlotHeader* slot = slotAt(slots_, g_, loan.seq);
  // Cap'n Proto may have written anywhere in it: zero it all (the next loan clears `words`).
  storeRelaxed(slot->words, g_.maxWords());
}

void TopicPublisher::close() noexcept {
  announce();  // what was committed is published: subscribers read it before the end
  storeRelease(header_->publisherState, uint32_t(kEndClosed));
  for (const Attached& a : cursors_) wakeAlways(a.cursor->subscriberWake);
}

// ---- subscriber ----------------------------------------------------------------------------

TopicSubscriber::TopicSubscriber(const uint8_t* log, const TopicGeometry& g,
                                 SubscriberCursor* cursor)
    : header_(reinterpret_cast<const TopicHeader*>(log)),
      slots_(log + kTopicHeaderBytes),
      g_(g),
      cursor_(cursor),
      policy_(SlowConsumerPolicy(cursor->policy)),
      next_(loadAcquire(cursor->next)),
      stored_(next_),
      batch_(std::clamp<uint32_t>(g.slotCount / 4, 1, kReleaseBatch)) {
  if (policy_ == SlowConsumerPolicy::kDropOldest) copy_.resize(g_.maxWords());
}

bool TopicSubscriber::attached() noexcept {
  if (next_ != 0) return true;
  // SYNC POINT READ, pairs with the release store in TopicPublisher::addSubscriber().
  next_ = loadAcquire(cursor_->next);
  stored_ = next_;
  return next_ != 0;
}

bool TopicSubscriber::hasNext() noexcept {
  return attached() && loadAcquire(const_cast<uint64_t&>(header_->published)) >= next_;
}

WakeWord& TopicSubscriber::wake() noexcept {
  return cursor_->subscriberWake;
}

uint32_t TopicSubscriber::publisherState() const noexcept {
  const uint32_t own = loadAcquire(const_cast<uint32_t&>(header_->publisherState));
  if (own != kEndOpen) return own;
  return loadAcquire(cursor_->publisherState);  // the broker's word, when the publisher died
}

void TopicSubscriber::close() noexcept {
  reading_ = 0;
  storeRelease(cursor_->state, uint32_t(kEndClosed));
  wakeAlways(cursor_->publisherWake);
}

RingStatus TopicSubscriber::next(Message& m, uint64_t& missed) {
  missed = 0;
  if (reading_ != 0) release();  // next() without release(): done with the last one
  auto done = [&](RingStatus st) {
    if (missed != 0) {
      dropped_ += missed;
      storeRelaxed(cursor_->dropped, dropped_);
    }
    return st;
  };
  if (!attached()) return RingStatus::kEmpty;
  if (policy_ == SlowConsumerPolicy::kBlockPublisher && knownPublished_ >= next_) {
    // Known to be there (its slot cannot be rewritten before this cursor passes it): no read
    // of the log's shared count.
    return readInPlace(m);
  }
  for (;;) {
    // SYNC POINT READ, pairs with the release store in TopicPublisher::publish().
    const uint64_t published = loadAcquire(const_cast<uint64_t&>(header_->published));
    // No publisher gets near 2^63 messages (kSlotWriting): a count there is a hostile or broken
    // log, and one near 2^64 would wrap next_ to 0 and keep this loop going forever.
    if (published >= kSlotWriting) return done(RingStatus::kCorrupt);
    if (published < next_) {
      flush();  // caught up: the publisher may have everything back
      return done(RingStatus::kEmpty);
    }
    knownPublished_ = published;
    maxLag_ = std::max(maxLag_, std::min<uint64_t>(published - next_ + 1, g_.slotCount));
    if (policy_ == SlowConsumerPolicy::kBlockPublisher) return readInPlace(m);
    // drop_oldest: what the publisher has lapped is gone; count it and go on from the oldest
    // message still in the log.
    if (published - next_ >= g_.slotCount) {
      const uint64_t oldest = published - g_.slotCount + 1;
      missed += oldest - next_;
      next_ = oldest;
    }
    if (readCopy(next_, m) == RingStatus::kOk) {
      reading_ = next_;
      return done(RingStatus::kOk);
    }
    // Rewritten while we copied it: it is lost too; look at the log again.
    ++missed;
    ++next_;
  }
}

RingStatus TopicSubscriber::readInPlace(Message& m) {
  const auto* slot = slotAt(slots_, g_, next_);
  if (loadAcquire(const_cast<uint64_t&>(slot->seq)) != next_) return RingStatus::kCorrupt;
  const uint32_t words = slot->words;
  if (words > g_.maxWords()) return RingStatus::kCorrupt;
  m = Message{next_, reinterpret_cast<const uint64_t*>(slot + 1), words};
  reading_ = next_;
  return RingStatus::kOk;
}

RingStatus TopicSubscriber::readCopy(uint64_t seq, Message& m) {
  const auto* slot = slotAt(slots_, g_, seq);
  // SYNC POINT READ, pairs with the release store of `seq` in TopicPublisher::publish().
  const uint64_t before = loadAcquire(const_cast<uint64_t&>(slot->seq));
  if (before != seq) return RingStatus::kEmpty;  // lapped, or being rewritten: lost
  const uint32_t words = std::min(loadRelaxed(const_cast<uint32_t&>(slot->words)), g_.maxWords());
  copyWords(reinterpret_cast<const uint64_t*>(slot + 1), copy_.data(), words);
  // Pairs with the release fence in TopicPublisher::loan(): a rewrite that began before the copy
  // ended shows here as a changed sequence.
  std::atomic_thread_fence(std::memory_order_acquire);
  if (loadRelaxed(const_cast<uint64_t&>(slot->seq)) != seq) return RingStatus::kEmpty;
  m = Message{seq, copy_.data(), words};
  return RingStatus::kOk;
}

void TopicSubscriber::release() noexcept {
  if (reading_ == 0) return;
  next_ = reading_ + 1;
  reading_ = 0;
  if (next_ - stored_ >= batch_) flush();
}

void TopicSubscriber::flush() noexcept {
  if (next_ == stored_) return;
  stored_ = next_;
  // SYNC POINT WRITE, pairs with the acquire load in TopicPublisher::mayRewrite().
  storeRelease(cursor_->next, next_);
  wakeIfSleeping(cursor_->publisherWake);
}

}  // namespace hms::ffi::detail
