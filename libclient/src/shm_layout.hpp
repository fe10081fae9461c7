// The shared-memory layouts of HMS-FFI, defined once; the broker and the library both use them.
//
// Every struct here is trivially copyable and standard layout, holds no pointer (only offsets)
// and has its size and offsets static_asserted. Shared words are accessed with std::atomic_ref
// and an explicit memory order (see atomics.hpp). Each field's comment names its single writer.
// Bump the layout version of a segment on any incompatible change: attach refuses a mismatch.
//
// A channel (one per caller<->service pair) is three memfds:
//
//   control page (4096), made by the broker, mapped writable by both ends:
//     ChannelHeader: sizes, end states, and each ring's RingControl (head, wake words)
//   request ring data (R bytes), made by the caller, its producer: writable there only; sealed
//     (F_SEAL_FUTURE_WRITE) before the service gets it, which maps it read-only
//   response ring data (R bytes), made by the service, its producer: the same the other way
//
// So no process ever builds into memory its peer can write; what a consumer must write (its
// head, its wake word) is on the control page, and every producer checks what it reads there.
//
// A ring is a byte ring of records, single producer / single consumer. A record starts on a
// 32-byte boundary and never wraps; the producer writes a padding record to skip the tail end.
//
//    0        4        6        8                16               24       26       28       32
//   +--------+--------+--------+----------------+----------------+--------+--------+--------+
//   | length | kind   | flags  | callId         | deadlineNs     | method | status | words  |
//   +--------+--------+--------+----------------+----------------+--------+--------+--------+
//   [ TraceContext, 32 bytes, if flags & kRecordHasTrace ]
//   [ Cap'n Proto message: one segment of `words` words, built and read in place ]
//
// `length` is the record's size in bytes (a multiple of 32) with, in its low 5 bits, the lap of the
// ring the record was written in (position / ring size, mod 32); written last with release order.
// A record is committed when its word is not 0 and carries the lap the consumer expects: the
// consumer never writes the ring's data, so its cursor may rest on last lap's record. The producer
// zeroes what it wrote before it reuses the space, which is what lets it hand the space to Cap'n
// Proto as an already-zeroed segment.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hms::ffi::detail {

inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::size_t kPageBytes = 4096;

// ---- wake words ----------------------------------------------------------------------------

// A futex word a consumer sleeps on. The sleeper writes 1 before FUTEX_WAIT; a producer that
// reads 1 after publishing (and only then) swaps it to 0 and makes the FUTEX_WAKE syscall.
struct alignas(kCacheLine) WakeWord {
  uint32_t sleeping;  // writer: the sleeper (1), any waker (0)
  uint32_t pad0;
  uint64_t wakes;  // writer: wakers (relaxed counter of FUTEX_WAKE syscalls, for stats)
  uint8_t pad1[kCacheLine - 16];
};
static_assert(sizeof(WakeWord) == kCacheLine);
static_assert(std::is_trivially_copyable_v<WakeWord> && std::is_standard_layout_v<WakeWord>);

// ---- rings ---------------------------------------------------------------------------------

struct alignas(kCacheLine) RingControl {
  uint64_t head;  // writer: consumer. Bytes consumed so far (monotonic, mod 2^64).
  uint8_t pad0[kCacheLine - 8];
  WakeWord consumerWake;  // the consumer sleeps here while the ring is empty (response rings;
                          // a service sleeps on its doorbell instead)
  WakeWord producerWake;  // the producer sleeps here while the ring is full
  uint64_t records;       // writer: producer. Records committed (relaxed, for stats).
  uint64_t bytes;         // writer: producer. Bytes committed (relaxed, for stats).
  uint8_t pad1[kCacheLine - 16];
};
static_assert(sizeof(RingControl) == 4 * kCacheLine);
static_assert(offsetof(RingControl, consumerWake) == kCacheLine);
static_assert(offsetof(RingControl, producerWake) == 2 * kCacheLine);

enum RecordKind : uint16_t {
  kRecordPadding = 1,       // skip to the end of the ring
  kRecordRequest = 2,       // a call; expects a kRecordResponse with the same callId (or, with
                            // kRecordStream, items and an end; with kRecordOneWay, nothing)
  kRecordResponse = 3,      // status + results (OK) or wire::RpcError (not OK)
  kRecordCancel = 4,        // caller -> service: stop call `callId`; no message (words = 0)
  kRecordStreamItem = 5,    // service -> caller: one item of stream `callId` (the results type)
  kRecordStreamEnd = 6,     // service -> caller: stream `callId` ended with `status`
                            // (an empty message when OK, a wire::RpcError otherwise)
  kRecordTopicMessage = 7,  // publisher -> subscriber over a socket: message `callId` (its
                            // sequence) of a topic; `deadlineNs` holds how many messages the
                            // subscriber missed just before it (drop_oldest)
};
inline constexpr uint16_t kRecordKindLast = kRecordTopicMessage;
inline constexpr uint16_t kRecordHasTrace = 1u << 0;
inline constexpr uint16_t kRecordOneWay = 1u << 1;  // request: answer nothing
inline constexpr uint16_t kRecordStream = 1u << 2;  // request: answer with a stream

struct RecordHeader {
  uint32_t length;     // writer: producer, last, release. Bytes of the whole record | lap tag.
  uint16_t kind;       // RecordKind
  uint16_t flags;      // kRecordHasTrace, kRecordOneWay, kRecordStream
  uint64_t callId;     // chosen by the caller, echoed by the response
  int64_t deadlineNs;  // absolute CLOCK_MONOTONIC ns; 0 = none
  uint16_t method;     // method ordinal (requests)
  uint16_t status;     // StatusCode (responses)
  uint32_t words;      // size of the Cap'n Proto segment that follows
};
static_assert(sizeof(RecordHeader) == 32);
static_assert(offsetof(RecordHeader, callId) == 8);
static_assert(offsetof(RecordHeader, words) == 28);
static_assert(std::is_trivially_copyable_v<RecordHeader> &&
              std::is_standard_layout_v<RecordHeader>);

// W3C trace context, as carried in a record when kRecordHasTrace is set.
struct TraceContextWire {
  uint8_t traceId[16];
  uint8_t spanId[8];
  uint8_t traceFlags;
  uint8_t pad[7];
};
static_assert(sizeof(TraceContextWire) == 32);

inline constexpr uint32_t kRecordAlign = 32;
inline constexpr uint32_t kRecordOverhead = sizeof(RecordHeader) + sizeof(TraceContextWire);

// ---- channel segment ----------------------------------------------------------------------

inline constexpr uint64_t kChannelMagic = 0x4e48'4346'4653'4d48ULL;  // "HMSFFCHN"
inline constexpr uint32_t kChannelLayoutVersion = 2;

enum EndState : uint32_t {
  kEndOpen = 0,     // zero-initialised: open
  kEndClosed = 1,   // the end closed the channel in order
  kEndDead = 2,     // the broker saw the end's process go (exit, crash, kill -9)
  kEndCorrupt = 3,  // the end found the channel corrupt and closed it (DATA_LOSS)
};

struct ChannelHeader {
  // Written once by the broker before any client sees the segment; read-only afterwards.
  uint64_t magic;
  uint32_t layoutVersion;
  uint32_t headerBytes;  // bytes of the control page (the rings are memfds of their own)
  uint64_t channelId;
  uint64_t segmentBytes;
  uint32_t ringBytes;        // each ring; a power of two
  uint32_t maxMessageBytes;  // largest Cap'n Proto message a record may carry
  uint32_t callerPid;
  uint32_t servicePid;
  uint8_t pad0[kCacheLine - 48];

  uint32_t callerState;   // writer: caller, or the broker when the caller dies. EndState.
  uint32_t serviceState;  // writer: service, or the broker when the service dies. EndState.
  uint8_t pad1[kCacheLine - 8];

  RingControl request;   // producer: caller, consumer: service
  RingControl response;  // producer: service, consumer: caller
};
static_assert(offsetof(ChannelHeader, callerState) == kCacheLine);
static_assert(offsetof(ChannelHeader, request) == 2 * kCacheLine);
static_assert(sizeof(ChannelHeader) <= kPageBytes);
static_assert(std::is_trivially_copyable_v<ChannelHeader> &&
              std::is_standard_layout_v<ChannelHeader>);

inline constexpr uint32_t kMinRingBytes = 4096;
inline constexpr uint32_t kMaxRingBytes = 1u << 30;
inline constexpr uint32_t kDefaultRingBytes = 1u << 20;

// A record never wraps, so a ring can always place a record of up to half its size: the largest
// message is what fits in half the ring after the record overhead.
constexpr uint32_t maxMessageBytesForRing(uint32_t ringBytes) {
  return (ringBytes / 2 - kRecordOverhead) & ~7u;
}
// The control page; each ring's data is a memfd of ringBytes of its own.
constexpr uint64_t channelSegmentBytes(uint32_t) {
  return kPageBytes;
}

// ---- doorbell segment (one per serving client) --------------------------------------------

inline constexpr uint64_t kDoorbellMagic = 0x4c42'4446'4653'4d48ULL;  // "HMSFFDBL"
inline constexpr uint32_t kDoorbellLayoutVersion = 2;

struct DoorbellSegment {
  uint64_t magic;          // writer: broker, at creation
  uint32_t layoutVersion;  // writer: broker, at creation
  uint32_t pad0;
  uint8_t pad1[kCacheLine - 16];
  WakeWord wake;       // the service's dispatcher sleeps here; every caller's producer may wake it
  WakeWord replyWake;  // the client's completion thread sleeps here; every service that
                       // answers it on shared memory may wake it
};
static_assert(offsetof(DoorbellSegment, wake) == kCacheLine);
static_assert(offsetof(DoorbellSegment, replyWake) == 2 * kCacheLine);
inline constexpr uint64_t kDoorbellBytes = kPageBytes;

// ---- registry segment ---------------------------------------------------------------------
//
// The broker publishes the registry as a wire::RegistrySnapshot in one of two slots. Each slot is
// a seqlock: its `seq` is odd while the broker writes it. `current` names the generation most
// recently published; its slot is generation & 1.

inline constexpr uint64_t kRegistryMagic = 0x4745'5246'4653'4d48ULL;  // "HMSFFREG"
inline constexpr uint32_t kRegistryLayoutVersion = 1;
inline constexpr uint64_t kDefaultRegistryBytes = 4ull << 20;

struct alignas(kCacheLine) RegistrySlotHeader {
  uint64_t seq;     // writer: broker. Odd while writing. SYNC POINT WRITE (release) at the end.
  uint64_t words;   // writer: broker. Size of the snapshot message in the slot.
  uint64_t offset;  // writer: broker, at creation. Byte offset of the slot from the segment start.
  uint64_t capacity;  // writer: broker, at creation. Bytes of the slot.
  uint8_t pad[kCacheLine - 32];
};

struct RegistryHeader {
  uint64_t magic;          // writer: broker, at creation
  uint32_t layoutVersion;  // writer: broker, at creation
  uint32_t brokerPid;      // writer: broker, at creation
  uint64_t segmentBytes;   // writer: broker, at creation
  uint8_t pad0[kCacheLine - 24];
  uint64_t current;  // writer: broker. Generation last published. SYNC POINT WRITE (release).
  uint8_t pad1[kCacheLine - 8];
  RegistrySlotHeader slots[2];
};
static_assert(offsetof(RegistryHeader, current) == kCacheLine);
static_assert(offsetof(RegistryHeader, slots) == 2 * kCacheLine);
static_assert(sizeof(RegistryHeader) <= kPageBytes);
static_assert(std::is_trivially_copyable_v<RegistryHeader>);

// ---- topic segments (publish/subscribe) ----------------------------------------------------
//
// A topic's log: one publisher writes each message into the next of `slotCount` fixed-size slots
// (message n, counting from 1, in slot (n - 1) % slotCount); every subscriber maps the log
// read-only and reads the messages in place. Each subscriber has its own cursor segment, which
// it maps read-write and the publisher maps read-write too (for the wake word), so a subscriber
// can move only its own cursor and can never change what the others read.
//
//   log:    | TopicHeader (4096) | slot 0 | slot 1 | ... | slot slotCount-1 |
//   slot:   | TopicSlotHeader (16) | Cap'n Proto message, one segment of `words` words |
//
// Slots are seqlocks: the publisher stores kSlotWriting into `seq` before it rewrites a slot and
// the message's sequence number (release) when it is done. A reader that finds the sequence it
// expects before and after reading has read one whole message; a block_publisher subscriber's
// slots are never rewritten before its cursor has passed them, a drop_oldest subscriber's may be
// (it copies the message out before checking).

inline constexpr uint64_t kTopicMagic = 0x4349'504f'5446'4d48ULL;  // "HMFTOPIC"
inline constexpr uint32_t kTopicLayoutVersion = 1;
inline constexpr uint64_t kSlotWriting = 1ull << 63;

struct TopicHeader {
  uint64_t magic;          // writer: creator, at creation
  uint32_t layoutVersion;  // writer: creator, at creation
  uint32_t slotCount;      // writer: creator, at creation. A power of two.
  uint32_t slotBytes;      // writer: creator, at creation. Multiple of 64, header included.
  uint32_t pad0;
  uint64_t segmentBytes;  // writer: creator, at creation
  uint8_t pad1[kCacheLine - 32];
  uint64_t published;       // writer: publisher. Messages published. SYNC POINT WRITE (release).
  uint32_t publisherState;  // writer: publisher (kEndOpen/kEndClosed); the broker when it dies
  uint32_t pad2;
  uint8_t pad3[kCacheLine - 16];
};
static_assert(offsetof(TopicHeader, published) == kCacheLine);
static_assert(sizeof(TopicHeader) <= kPageBytes);
static_assert(std::is_trivially_copyable_v<TopicHeader> && std::is_standard_layout_v<TopicHeader>);
inline constexpr uint64_t kTopicHeaderBytes = kPageBytes;

struct TopicSlotHeader {
  uint64_t seq;    // writer: publisher. Sequence of the message in the slot, kSlotWriting while
                   // rewriting it, 0 before the first. SYNC POINT WRITE (release) when done.
  uint32_t words;  // writer: publisher. Size of the message.
  uint32_t pad;
};
static_assert(sizeof(TopicSlotHeader) == 16);

enum class SlowConsumerPolicy : uint32_t { kBlockPublisher = 1, kDropOldest = 2 };

inline constexpr uint64_t kCursorMagic = 0x5253'5543'5446'4d48ULL;  // "HMFTCURS"
inline constexpr uint32_t kCursorLayoutVersion = 1;

struct SubscriberCursor {
  uint64_t magic;           // writer: creator, at creation
  uint32_t layoutVersion;   // writer: creator, at creation
  uint32_t policy;          // writer: creator, at creation (SlowConsumerPolicy)
  uint32_t state;           // writer: subscriber (kEndOpen/kEndClosed); the broker when it dies;
                            // the publisher when it finds it dead after a broker restart
  uint32_t publisherState;  // writer: the broker, when the publisher leaves or dies (EndState)
  uint32_t history;         // writer: creator, at creation. Messages back the cursor starts.
  uint8_t pad0[kCacheLine - 28];
  uint64_t next;     // Next sequence the subscriber will read: it is done with every one before.
                     // 0 until attached: the publisher sets it once (release) when it learns of
                     // the cursor (history counted back from what it has published), the
                     // subscriber after that. SYNC POINT WRITE (release), read (acquire) by both.
  uint64_t dropped;  // writer: subscriber. Messages it missed (drop_oldest).
  uint8_t pad1[kCacheLine - 16];
  WakeWord publisherWake;   // a publisher held back by this subscriber sleeps here
  WakeWord subscriberWake;  // the subscriber sleeps here while it has read everything (here, not
                            // in the log: the sleep protocol writes the word, the log is
                            // read-only to subscribers)
};
static_assert(offsetof(SubscriberCursor, next) == kCacheLine);
static_assert(offsetof(SubscriberCursor, publisherWake) == 2 * kCacheLine);
static_assert(offsetof(SubscriberCursor, subscriberWake) == 3 * kCacheLine);
static_assert(std::is_trivially_copyable_v<SubscriberCursor> &&
              std::is_standard_layout_v<SubscriberCursor>);
inline constexpr uint64_t kCursorBytes = kPageBytes;
// A subscriber moves its shared cursor every this many messages (fewer on a small log), and
// whenever it has read everything: one shared write and fence per batch, not per message.
inline constexpr uint32_t kReleaseBatch = 32;

}  // namespace hms::ffi::detail
