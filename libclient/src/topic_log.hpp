// The log of one publish/subscribe topic (layout: shm_layout.hpp, "topic segments"): the
// publisher's and the subscribers' sides. The public Publisher and Subscription (topics.cpp) are
// built on it; docs/pubsub.md has the design.
//
// Guarantees: a subscriber sees messages in publication order. Under kBlockPublisher it sees
// every message published after it attached, each read in place: the publisher does not rewrite
// a slot before every open block_publisher cursor has passed it. Under kDropOldest the publisher
// never waits for it; the subscriber copies each message out, checks the slot was not rewritten
// meanwhile, and is told exactly how many messages it missed. A closed cursor (a subscriber that
// left or died) holds nobody back. The subscriber side trusts nothing it reads in the log: every
// size is bounds-checked and a violation is kCorrupt.
// Threads: one thread at a time per TopicPublisher and per TopicSubscriber.
#pragma once

#include <cstdint>
#include <vector>

#include "hms/ffi/status.hpp"
#include "ring.hpp"
#include "shm_layout.hpp"
#include "wait.hpp"

namespace hms::ffi::detail {

struct TopicGeometry {
  uint32_t slotCount = 0;  // a power of two, at least 2
  uint32_t slotBytes = 0;  // a multiple of 64, header included

  uint64_t segmentBytes() const noexcept {
    return kTopicHeaderBytes + uint64_t(slotCount) * slotBytes;
  }
  // The largest message a slot holds, in words.
  uint32_t maxWords() const noexcept { return uint32_t((slotBytes - sizeof(TopicSlotHeader)) / 8); }
  // INVALID_ARGUMENT unless the counts are as above (and the log stays under 4 GiB).
  Status validate() const;
};

// Writes the header of a new, zero-filled log.
void initTopicLog(uint8_t* base, const TopicGeometry& g) noexcept;
// Checks a log mapped by someone who did not create it: magic, layout version, geometry, size.
Result<TopicGeometry> checkTopicLog(const uint8_t* base, uint64_t mappedBytes);
// Writes a new, zero-filled cursor page: `policy`, first message to read `next`.
void initCursor(SubscriberCursor* c, SlowConsumerPolicy policy, uint64_t next) noexcept;

class TopicPublisher {
 public:
  TopicPublisher(uint8_t* log, const TopicGeometry& g) noexcept;

  // The cursors of the topic's subscribers, as they attach and leave. A cursor whose `next` is
  // still 0 is attached here: it starts `history` messages back (at most slotCount - 1, and no
  // further than the first message), and its subscriber is woken.
  void addSubscriber(SubscriberCursor* c);
  void removeSubscriber(SubscriberCursor* c);

  // Space for the next message, zeroed, to build in place; then publish() or abandon().
  struct Loan {
    uint64_t seq = 0;
    uint64_t* words = nullptr;
    uint32_t capacityWords = 0;
  };
  // Waits while a block_publisher subscriber has not read the message the slot still holds.
  // DEADLINE_EXCEEDED naming how far behind the slowest subscriber is.
  Status loan(const WaitPolicy& policy, int64_t deadlineNs, Loan& out);
  // loan() without waiting: false (nothing loaned) when it would have to wait, with `blocker`
  // (if given) set to the subscriber it would wait for.
  bool tryLoan(Loan& out, SubscriberCursor** blocker = nullptr) noexcept;
  // Gives a loaned slot back unpublished (the message it held before is gone: readers of it
  // count it as missed). The next loan() hands out the same sequence again.
  void abandon(const Loan& loan) noexcept;
  // Publishes the loaned message of `words` words (SYNC POINT WRITE) and wakes the subscribers
  // that sleep (each on its own cursor page): commit() then announce().
  void publish(const Loan& loan, uint32_t words) noexcept;
  // Makes the loaned message whole in its slot and takes the next sequence, telling nobody yet:
  // the next loan follows it. Subscribers read up to the last announce().
  void commit(const Loan& loan, uint32_t words) noexcept;
  // Makes every message committed so far visible at once: one store of the count, one fence,
  // one wake per subscriber that sleeps. Before any wait for a block_publisher subscriber (it
  // can only free the slots of messages it sees).
  void announce() noexcept;

  // Marks the log closed (subscribers read what is left, then see the end) and wakes them all.
  void close() noexcept;

  uint64_t published() const noexcept { return published_; }
  const TopicGeometry& geometry() const noexcept { return g_; }
  size_t subscribers() const noexcept { return cursors_.size(); }

 private:
  struct Attached {
    SubscriberCursor* cursor;
    bool blocks;        // kBlockPublisher, as the cursor said when it was added
    uint64_t seenNext;  // its `next` when last read: read again only when that is not enough
  };
  bool mayRewrite(uint64_t seq, SubscriberCursor** blocker) noexcept;

  TopicHeader* header_;
  uint8_t* slots_;
  TopicGeometry g_;
  uint64_t published_ = 0;  // committed: the last sequence handed out and made whole
  uint64_t announced_ = 0;  // own copy of header_->published
  std::vector<Attached> cursors_;
};

class TopicSubscriber {
 public:
  // `log` mapped read-only; `cursor` read-write, initialised with initCursor.
  TopicSubscriber(const uint8_t* log, const TopicGeometry& g, SubscriberCursor* cursor);

  struct Message {
    uint64_t seq = 0;
    const uint64_t* words = nullptr;  // in the log (block_publisher) or a private copy
    uint32_t wordCount = 0;
  };
  // The next message, or kEmpty. `missed` is set to the messages dropped just before it
  // (drop_oldest; always 0 under block_publisher). The message stays valid until release().
  RingStatus next(Message& m, uint64_t& missed);
  // Done with the message from next(). The cursor moves past it in batches (every
  // kReleaseBatch messages, and whenever next() finds nothing to read): the publisher may then
  // reuse the slots, and is woken if it waits for this subscriber.
  void release() noexcept;
  // Moves the shared cursor to where this subscriber is now (and wakes a waiting publisher).
  void flush() noexcept;

  // Whether a message is there to read (for waits). False until the publisher attached the
  // cursor.
  bool hasNext() noexcept;
  WakeWord& wake() noexcept;  // the word to sleep on while !hasNext()
  // The publisher closed the log, or the broker saw it leave or die (kEndClosed/kEndDead);
  // kEndOpen while it publishes.
  uint32_t publisherState() const noexcept;
  bool publisherClosed() const noexcept { return publisherState() != kEndOpen; }
  // Leaves: the cursor holds the publisher back no more, and a publisher waiting on it wakes.
  void close() noexcept;
  uint64_t dropped() const noexcept { return dropped_; }
  // The most messages it was seen behind the publisher (counting the one then read), at most the
  // log's slots; sampled each time it reads the log's count (metrics).
  uint64_t maxLag() const noexcept { return maxLag_; }
  uint32_t slotCount() const noexcept { return g_.slotCount; }

 private:
  RingStatus readCopy(uint64_t seq, Message& m);
  // block_publisher: message next_, whose slot cannot be rewritten before the cursor passes it.
  RingStatus readInPlace(Message& m);
  bool attached() noexcept;  // loads the start the publisher gave the cursor, once it has

  const TopicHeader* header_;
  const uint8_t* slots_;
  TopicGeometry g_;
  SubscriberCursor* cursor_;
  SlowConsumerPolicy policy_;
  uint64_t next_;                // where this subscriber is (0: not attached yet)
  uint64_t stored_ = 0;          // what cursor_->next says (next_ once flushed)
  uint64_t knownPublished_ = 0;  // block_publisher: the log's count when last read
  uint32_t batch_;               // release batch: min(kReleaseBatch, slotCount / 4), at least 1
  uint64_t reading_ = 0;         // the sequence next() handed out, 0 when none
  uint64_t dropped_ = 0;
  uint64_t maxLag_ = 0;
  std::vector<uint64_t> copy_;  // drop_oldest: the message being read
};

}  // namespace hms::ffi::detail
