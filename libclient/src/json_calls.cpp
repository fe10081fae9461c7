// Contracts from the broker (getSchema, listContracts, getTopicSchema) and the JSON level built
// on them: JsonStub, JsonStream, JsonPublisher, JsonSubscription (hms/ffi/json.hpp).
#include <capnp/any.h>
#include <capnp/dynamic.h>
#include <capnp/schema-loader.h>
#include <kj/exception.h>

#include <thread>

#include "client_impl.hpp"
#include "hms/ffi/json.hpp"
#include "json_codec.hpp"
#include "ring_message.hpp"

namespace hms::ffi {

namespace {

using detail::ControlReply;

// Loads nodes the broker sends (checked by the broker at registration, and again here: the
// loader throws on a malformed node).
Result<std::shared_ptr<capnp::SchemaLoader>> loadNodes(
    capnp::List<capnp::schema::Node>::Reader nodes, const std::string& what) {
  auto loader = std::make_shared<capnp::SchemaLoader>();
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 for (auto n : nodes) loader->load(n);
               })) {
    return Status(
        StatusCode::kDataLoss,
        "the schema of " + what + " the broker sent does not load: " + e->getDescription().cStr());
  }
  return loader;
}

ContractInfo toContractInfo(wire::Contract::Reader c) {
  ContractInfo info;
  auto d = c.getDescriptor();
  info.id = d.getId().cStr();
  info.version =
      Version{d.getVersion().getMajor(), d.getVersion().getMinor(), d.getVersion().getPatch()};
  info.interfaceId = d.getInterfaceId();
  info.interfaceName = d.getInterfaceName().cStr();
  for (auto m : d.getMethods()) {
    info.methods.push_back(MethodInfo{m.getName().cStr(), m.getOrdinal(), m.getParamSchemaId(),
                                      m.getResultSchemaId(), m.getStream()});
  }
  info.displayName = d.getDisplayName().cStr();
  info.description = d.getDescription().cStr();
  info.providerName = c.getProviderName().cStr();
  info.firstSeen =
      std::chrono::system_clock::time_point(std::chrono::milliseconds(c.getFirstSeenUnixMs()));
  info.lastSeen =
      std::chrono::system_clock::time_point(std::chrono::milliseconds(c.getLastSeenUnixMs()));
  return info;
}

// A reply read from the broker may still throw on reading (a broker of another build).
template <class F>
auto readReply(F&& f) -> decltype(f()) {
  decltype(f()) out = Status(StatusCode::kInternal, "unreachable");
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { out = f(); })) {
    return Status(StatusCode::kDataLoss,
                  std::string("malformed reply from the broker: ") + e->getDescription().cStr());
  }
  return out;
}

// Builds `json` as the root of `builder` (ring space: a call's params or a topic's loan). The
// codec turns what it meets into INVALID_ARGUMENT; initRoot itself may still throw.
Status fillFromJson(capnp::MessageBuilder& builder, capnp::StructSchema type,
                    std::string_view json) {
  Status st;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 st = detail::jsonToStruct(json, builder.initRoot<capnp::DynamicStruct>(type));
               })) {
    st = Status(StatusCode::kInvalidArgument, e->getDescription().cStr());
  }
  return st;
}

}  // namespace

Result<ContractInfo> Client::contract(std::string_view id, const Version& version) const {
  auto reply = impl_->roundTrip([&](wire::Request::Builder req) {
    auto g = req.initGetSchema();
    g.setServiceId(std::string(id));
    auto v = g.initVersion();
    v.setMajor(version.major);
    v.setMinor(version.minor);
    v.setPatch(version.patch);
  });
  if (!reply.ok()) return reply.status();
  return readReply([&]() -> Result<ContractInfo> {
    auto c = reply->reply().getSchema();
    ContractInfo info = toContractInfo(c);
    auto loader = loadNodes(c.getNodes(), "service " + info.id + " " + info.version.toString());
    if (!loader.ok()) return loader.status();
    KJ_IF_MAYBE (schema, (*loader)->tryGet(info.interfaceId)) {
      if (!schema->getProto().isInterface()) {
        return Status(StatusCode::kDataLoss, "the contract of " + info.id +
                                                 " names a struct as "
                                                 "its interface");
      }
      info.schema = schema->asInterface();
    } else {
      return Status(StatusCode::kDataLoss,
                    "the contract of " + info.id + " lacks its interface's schema node");
    }
    info.loader = std::move(*loader);
    return info;
  });
}

Result<std::vector<ContractInfo>> Client::contracts(std::string_view prefix) const {
  std::vector<ContractInfo> out;
  uint32_t offset = 0;
  do {
    auto reply = impl_->roundTrip([&](wire::Request::Builder req) {
      auto l = req.initListContracts();
      l.setPrefix(std::string(prefix));
      l.setOffset(offset);
    });
    if (!reply.ok()) return reply.status();
    auto page = readReply([&]() -> Result<uint32_t> {
      auto list = reply->reply().getContracts();
      for (auto c : list.getContracts()) out.push_back(toContractInfo(c));
      return list.getNextOffset();
    });
    if (!page.ok()) return page.status();
    if (*page != 0 && *page <= offset) {
      return Status(StatusCode::kDataLoss, "the broker's contract list does not advance");
    }
    offset = *page;
  } while (offset != 0);
  return out;
}

Result<TopicSchemaInfo> Client::topicSchema(std::string_view id) const {
  auto reply =
      impl_->roundTrip([&](wire::Request::Builder req) { req.setGetTopicSchema(std::string(id)); });
  if (!reply.ok()) return reply.status();
  return readReply([&]() -> Result<TopicSchemaInfo> {
    auto t = reply->reply().getTopicSchema();
    TopicSchemaInfo info;
    info.topicId = t.getTopicId().cStr();
    info.typeId = t.getTypeId();
    auto loader = loadNodes(t.getNodes(), "topic " + info.topicId);
    if (!loader.ok()) return loader.status();
    KJ_IF_MAYBE (schema, (*loader)->tryGet(info.typeId)) {
      if (!schema->getProto().isStruct()) {
        return Status(StatusCode::kDataLoss,
                      "the message type of topic " + info.topicId + " is not a struct");
      }
      info.schema = schema->asStruct();
    } else {
      return Status(StatusCode::kDataLoss,
                    "the schema of topic " + info.topicId + " lacks its message type's node");
    }
    info.loader = std::move(*loader);
    return info;
  });
}

namespace {

LatencyHistogram toHistogram(wire::Histogram::Reader h) {
  LatencyHistogram out;
  auto idx = h.getBucketIndex();
  auto cnt = h.getBucketCount();
  for (uint i = 0; i < idx.size() && i < cnt.size(); ++i) {
    if (idx[i] < LatencyHistogram::kBuckets) out.buckets.emplace_back(idx[i], cnt[i]);
  }
  out.count = h.getCount();
  out.sumNs = h.getSumNs();
  out.maxNs = h.getMaxNs();
  return out;
}

}  // namespace

Result<MetricsSnapshot> Client::metrics() const {
  MetricsSnapshot snap;
  // Each page after the last entry of the one before (the broker reads its counters anew for
  // each page; a series added meanwhile is neither skipped nor repeated).
  uint8_t afterSection = 0;
  std::string afterName, afterMethod;
  for (bool firstPage = true;; firstPage = false) {
    auto reply = impl_->roundTrip([&](wire::Request::Builder req) {
      auto get = req.initGetMetrics();
      if (afterSection != 0) {
        auto after = get.initAfter();
        after.setSection(afterSection);
        after.setName(afterName);
        after.setMethod(afterMethod);
      }
    });
    if (!reply.ok()) return reply.status();
    auto got = readReply([&]() -> Result<bool> {
      auto page = reply->reply().getMetrics();
      // The gauges and the time of the first page (later pages are read a moment after).
      if (firstPage) {
        auto g = page.getGauges();
        snap.gauges.clients = g.getClients();
        snap.gauges.channels = g.getChannels();
        snap.gauges.services = g.getServices();
        snap.gauges.topics = g.getTopics();
        snap.gauges.subscriptions = g.getSubscriptions();
        snap.gauges.registryGeneration = g.getRegistryGeneration();
        snap.gauges.connectionsTotal = g.getConnectionsTotal();
        snap.gauges.reconnectsTotal = g.getReconnectsTotal();
        snap.gauges.metricsSlotsRefused = g.getMetricsSlotsRefused();
        snap.gauges.startedUnixMs = g.getStartedUnixMs();
        snap.takenUnixNs = page.getTakenUnixNs();
      }
      for (auto m : page.getMethods()) {
        MethodMetrics mm;
        mm.service = m.getService().cStr();
        mm.method = m.getMethod().cStr();
        auto calls = m.getCalls();
        auto handled = m.getHandled();
        for (uint k = 0; k < mm.calls.size(); ++k) {
          if (k < calls.size()) mm.calls[k] = calls[k];
          if (k < handled.size()) mm.handled[k] = handled[k];
        }
        mm.inFlight = m.getInFlight();
        mm.callDuration = toHistogram(m.getCallDuration());
        mm.handlerDuration = toHistogram(m.getHandlerDuration());
        snap.methods.push_back(std::move(mm));
      }
      for (auto t : page.getTopics()) {
        snap.topics.push_back(TopicMetrics{t.getTopic().cStr(), t.getPublished(),
                                           t.getPublishedBytes(), t.getDelivered(), t.getDropped(),
                                           t.getLagHighWater()});
      }
      for (auto r : page.getRings()) {
        snap.rings.push_back(RingMetrics{r.getService().cStr(), r.getRequestHighWater(),
                                         r.getRequestFull(), r.getResponseHighWater(),
                                         r.getResponseFull()});
      }
      const bool advanced =
          page.getMethods().size() + page.getTopics().size() + page.getRings().size() > 0;
      if (page.getMore() && !advanced) {
        return Status(StatusCode::kDataLoss, "the broker's metrics do not advance");
      }
      return page.getMore();
    });
    if (!got.ok()) return got.status();
    if (!*got) break;
    if (!snap.rings.empty()) {
      afterSection = 3, afterName = snap.rings.back().service, afterMethod.clear();
    } else if (!snap.topics.empty()) {
      afterSection = 2, afterName = snap.topics.back().topic, afterMethod.clear();
    } else {
      afterSection = 1, afterName = snap.methods.back().service;
      afterMethod = snap.methods.back().method;
    }
  }
  return snap;
}

// ---- JsonStub ---------------------------------------------------------------------------------

Result<JsonStub> Client::bindJson(std::string_view id, std::string_view range) {
  return bindJsonImpl(id, range, nullptr);
}

Result<JsonStub> Client::bindJsonFor(std::string_view id, std::string_view range,
                                     const Caller& caller) {
  return bindJsonImpl(id, range, &caller);
}

Result<JsonStub> Client::bindJsonImpl(std::string_view id, std::string_view range,
                                      const Caller* onBehalfOf) {
  auto s = resolve(id, range);
  if (!s.ok()) return s.status();
  auto ch = bindImpl(id, range, s->interfaceId, s->interfaceName, onBehalfOf);
  if (!ch.ok()) return ch.status();
  // The contract of exactly the version bound (a newer one may have come since resolve()).
  const ServiceInfo& bound = detail::boundService(**ch);
  auto c = contract(bound.id, bound.version);
  if (!c.ok()) return c.status();
  return JsonStub(std::move(*ch), std::make_shared<const ContractInfo>(std::move(*c)));
}

Result<std::string> Client::callJson(std::string_view id, std::string_view range,
                                     std::string_view method, std::string_view params,
                                     const CallOptions& options) {
  auto stub = bindJson(id, range);
  if (!stub.ok()) return stub.status();
  JsonCallOptions o;
  static_cast<CallOptions&>(o) = options;
  return stub->call(method, params, o);
}

JsonStub::~JsonStub() {
  if (raw_ != nullptr && ch_) detail::abandonCall(*ch_);
}

const ServiceInfo& JsonStub::service() const noexcept {
  return detail::boundService(*ch_);
}

Result<JsonStub::Method> JsonStub::method(std::string_view name, bool stream,
                                          const char* otherwise) const {
  auto m = method(name);
  if (m.ok() && m->stream != stream) {
    return Status(StatusCode::kFailedPrecondition,
                  "method " + std::string(name) + " of " + contract_->id +
                      (m->stream ? " is a server stream; " : " is not a server stream; ") +
                      otherwise);
  }
  return m;
}

Result<JsonStub::Method> JsonStub::method(std::string_view name) const {
  const ContractInfo& c = *contract_;
  KJ_IF_MAYBE (m, c.schema.findMethodByName(kj::StringPtr(std::string(name).c_str()))) {
    Method out;
    out.params = m->getParamType();
    out.results = m->getResultType();
    out.ref.found = true;
    out.ref.ordinal = m->getOrdinal();
    out.ref.paramSchemaId = out.params.getProto().getId();
    out.ref.resultSchemaId = out.results.getProto().getId();
    out.ref.name = std::string(name);
    for (const auto& info : c.methods) {
      if (info.ordinal == out.ref.ordinal) out.stream = info.stream;
    }
    return out;
  }
  std::string names;
  for (const auto& info : c.methods) names += (names.empty() ? "" : ", ") + info.name;
  return Status(StatusCode::kUnimplemented, "service " + c.id + " " + c.version.toString() +
                                                " has no method '" + std::string(name) +
                                                "'; its methods: " + names);
}

Status JsonStub::build(const Method& m, std::string_view params, const CallOptions& options) {
  auto builder = detail::beginCall(*ch_, m.ref, options);
  if (!builder.ok()) return builder.status();
  Status st = fillFromJson(**builder, m.params, params);
  if (!st) detail::abandonCall(*ch_);
  return st;
}

namespace {

// The results of `reader` as JSON; DATA_LOSS if the peer rewrites the message under us.
Result<std::string> toJson(capnp::MessageReader& reader, capnp::StructSchema type, bool pretty) {
  std::string out;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 out = detail::structToJson(reader.getRoot<capnp::DynamicStruct>(type),
                                            detail::JsonOptions{pretty});
               })) {
    return Status(StatusCode::kDataLoss,
                  std::string("the reply could not be read: ") + e->getDescription().cStr());
  }
  return out;
}

}  // namespace

Result<std::string> JsonStub::call(std::string_view name, std::string_view params,
                                   const JsonCallOptions& options) {
  auto m = method(name);
  if (!m.ok()) return m.status();
  if (m->stream) {
    return Status(StatusCode::kFailedPrecondition,
                  "method " + std::string(name) + " of " + contract_->id +
                      " is a server stream; open it as a stream (openStream, "
                      "hms_stub_open_stream_json, or the binding's stream call)");
  }
  if (auto s = build(*m, params, options); !s) return s;
  if (detail::inAsyncMode(*ch_)) {
    auto call = detail::sendAsync(ch_, false, nullptr);
    capnp::MessageReader* reader = nullptr;
    if (auto s = detail::awaitAsync(*call, reader); !s) return s;
    auto json = toJson(*reader, m->results, options.pretty);
    detail::releaseAsync(*call);
    return json;
  }
  auto reader = detail::finishCall(*ch_);
  if (!reader.ok()) return reader.status();
  auto json = toJson(**reader, m->results, options.pretty);
  detail::releaseReply(*ch_);
  return json;
}

Result<JsonCallHandle> JsonStub::callAsync(std::string_view name, std::string_view params,
                                           std::function<void(Result<std::string>)> done,
                                           const JsonCallOptions& options) {
  auto m = method(name);
  if (!m.ok()) return m.status();
  if (m->stream) {
    return Status(StatusCode::kFailedPrecondition,
                  "method " + std::string(name) + " of " + contract_->id +
                      " is a server stream; open it as a stream (openStream, "
                      "hms_stub_open_stream_json, or the binding's stream call)");
  }
  if (auto s = build(*m, params, options); !s) return s;
  // The callback keeps the contract alive: the results type lives in its loader.
  auto call =
      detail::sendAsync(ch_, false,
                        [done = std::move(done), type = m->results, pretty = options.pretty,
                         contract = contract_](const std::shared_ptr<detail::AsyncCall>& c) {
                          capnp::MessageReader* reader = nullptr;
                          if (auto st = detail::takeAsync(*c, reader); !st) {
                            done(st);
                            return;
                          }
                          auto json = toJson(*reader, type, pretty);
                          detail::releaseAsync(*c);
                          done(std::move(json));
                        });
  return JsonCallHandle(std::move(call));
}

Result<kj::ArrayPtr<capnp::word>> JsonStub::loanRaw(std::string_view name,
                                                    const CallOptions& options) {
  // A loan holds the channel's lease: another thread's loan waits in beginCall for it, this
  // thread's second one is refused there (FAILED_PRECONDITION).
  auto m = method(name, false, "the raw level makes calls only");
  if (!m.ok()) return m.status();
  for (int attempt = 0;; ++attempt) {
    auto builder = detail::beginCall(*ch_, m->ref, options);
    if (!builder.ok()) return builder.status();
    // beginCall's builder is the channel's RingMessageBuilder (ring slot or socket scratch).
    raw_ = static_cast<detail::RingMessageBuilder*>(*builder);
    auto space = raw_->loanRaw();
    // A reservation gives what the ring keeps clean ahead of its tail, twice the largest message
    // so far (a builder's message that outgrows it spills once, and the window grows). A raw
    // loan cannot spill: the first one widens the window to the largest message, under the
    // lease, and takes a new reservation.
    const uint32_t want = ch_->maxMessageBytes + detail::payloadOffset(detail::kRecordHasTrace);
    if (attempt > 0 || ch_->link != nullptr ||
        space.size() * sizeof(capnp::word) >= ch_->maxMessageBytes ||
        ch_->requests.reservationLimit() >= want) {
      return space;
    }
    ch_->requests.widenReservations(want);
    abandonRaw();
  }
}

void JsonStub::abandonRaw() {
  if (raw_ == nullptr) return;
  raw_ = nullptr;
  detail::abandonCall(*ch_);
}

Result<RawReply> JsonStub::sendRaw(size_t words) {
  if (raw_ == nullptr) {
    return Status(StatusCode::kFailedPrecondition, "no raw message is on loan (loanRaw first)");
  }
  if (auto s = raw_->setRawWords(words); !s) {
    abandonRaw();
    return s;
  }
  raw_ = nullptr;
  return sendAndWait();
}

Result<RawReply> JsonStub::sendAndWait() {
  auto segment = [](capnp::MessageReader& r) {
    return r.getSegment(0);  // ring messages are one segment
  };
  if (detail::inAsyncMode(*ch_)) {
    auto call = detail::sendAsync(ch_, false, nullptr);
    capnp::MessageReader* reader = nullptr;
    if (auto s = detail::awaitAsync(*call, reader); !s) return s;
    return RawReply(nullptr, call, segment(*reader));
  }
  auto reader = detail::finishCall(*ch_);
  if (!reader.ok()) return reader.status();
  return RawReply(ch_, nullptr, segment(**reader));
}

Status copySegment(kj::ArrayPtr<const capnp::word> segment, capnp::MessageBuilder& into,
                   std::string_view what) {
  Status st;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 kj::ArrayPtr<const capnp::word> segments[1] = {segment};
                 capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segments, 1));
                 into.setRoot(reader.getRoot<capnp::AnyStruct>());
               })) {
    st = Status(StatusCode::kInvalidArgument,
                std::string(what) + " is not a valid message: " + e->getDescription().cStr());
  }
  return st;
}

Status JsonStub::copy(const Method& m, kj::ArrayPtr<const capnp::word> params,
                      const CallOptions& options) {
  auto builder = detail::beginCall(*ch_, m.ref, options);
  if (!builder.ok()) return builder.status();
  Status st = copySegment(params, **builder, "the params");
  if (!st) detail::abandonCall(*ch_);
  return st;
}

Result<RawReply> JsonStub::callSegment(std::string_view name,
                                       kj::ArrayPtr<const capnp::word> params,
                                       const CallOptions& options) {
  auto m = method(name, false, "open it with openStreamSegment");
  if (!m.ok()) return m.status();
  if (auto s = copy(*m, params, options); !s) return s;
  return sendAndWait();
}

Result<JsonCallHandle> JsonStub::callSegmentAsync(std::string_view name,
                                                  kj::ArrayPtr<const capnp::word> params,
                                                  std::function<void(Result<RawReply>)> done,
                                                  const CallOptions& options) {
  auto m = method(name, false, "open it with openStreamSegment");
  if (!m.ok()) return m.status();
  if (auto s = copy(*m, params, options); !s) return s;
  auto call = detail::sendAsync(
      ch_, false, [done = std::move(done)](const std::shared_ptr<detail::AsyncCall>& c) {
        capnp::MessageReader* reader = nullptr;
        if (auto st = detail::takeAsync(*c, reader); !st) {
          done(st);
          return;
        }
        done(RawReply(nullptr, c, reader->getSegment(0)));  // ring messages are one segment
      });
  return JsonCallHandle(std::move(call));
}

Result<JsonStream> JsonStub::openStreamSegment(std::string_view name,
                                               kj::ArrayPtr<const capnp::word> params,
                                               const CallOptions& options) {
  auto m = method(name, true, "call it with callSegment");
  if (!m.ok()) return m.status();
  if (auto s = copy(*m, params, options); !s) return s;
  return JsonStream(detail::sendAsync(ch_, true, nullptr), m->results, false, contract_);
}

RawReply::~RawReply() {
  if (ch_) detail::releaseReply(*ch_);
  if (call_) detail::releaseAsync(*call_);
}

Status JsonCallHandle::cancel() {
  return call_ ? detail::cancelAsync(call_) : Status();
}

uint64_t JsonCallHandle::callId() const noexcept {
  return call_ ? detail::asyncCallId(*call_) : 0;
}

Status JsonStub::callOneWay(std::string_view name, std::string_view params,
                            const CallOptions& options) {
  auto m = method(name);
  if (!m.ok()) return m.status();
  if (auto s = build(*m, params, options); !s) return s;
  return detail::sendOneWay(*ch_);
}

Result<JsonStream> JsonStub::openStream(std::string_view name, std::string_view params,
                                        const JsonCallOptions& options) {
  auto m = method(name);
  if (!m.ok()) return m.status();
  if (!m->stream) {
    return Status(StatusCode::kFailedPrecondition,
                  "method " + std::string(name) + " of " + contract_->id +
                      " is not a server stream; make it a call (call, hms_stub_call_json, or "
                      "the binding's call)");
  }
  if (auto s = build(*m, params, options); !s) return s;
  return JsonStream(detail::sendAsync(ch_, true, nullptr), m->results, options.pretty, contract_);
}

// ---- JsonStream -------------------------------------------------------------------------------

JsonStream::JsonStream(std::shared_ptr<detail::AsyncCall> call, capnp::StructSchema itemType,
                       bool pretty, std::shared_ptr<const ContractInfo> contract)
    : call_(std::move(call)),
      itemType_(itemType),
      pretty_(pretty),
      contract_(std::move(contract)) {}

JsonStream::JsonStream(JsonStream&& o) noexcept
    : call_(std::move(o.call_)),
      itemType_(o.itemType_),
      pretty_(o.pretty_),
      contract_(std::move(o.contract_)),
      item_(std::move(o.item_)),
      rawItem_(o.rawItem_),
      status_(std::move(o.status_)),
      ended_(o.ended_) {}

JsonStream::~JsonStream() {
  if (call_ && !ended_) (void)detail::cancelAsync(call_);
}

bool JsonStream::next() {
  if (ended_ || !call_) return false;
  capnp::MessageReader* reader = nullptr;
  if (detail::streamNext(*call_, reader, status_)) {
    auto json = toJson(*reader, itemType_, pretty_);
    if (json.ok()) {
      item_ = std::move(*json);
      return true;
    }
    status_ = json.status();
    (void)detail::cancelAsync(call_);
  }
  ended_ = true;
  item_.clear();
  return false;
}

bool JsonStream::nextRaw() {
  if (ended_ || !call_) return false;
  capnp::MessageReader* reader = nullptr;
  if (detail::streamNext(*call_, reader, status_)) {
    rawItem_ = reader->getSegment(0);  // ring messages are one segment
    return true;
  }
  ended_ = true;
  rawItem_ = nullptr;
  return false;
}

Status JsonStream::cancel() {
  return call_ ? detail::cancelAsync(call_) : Status();
}

// ---- Topics -----------------------------------------------------------------------------------

Result<JsonPublisher> Client::advertiseJson(std::string_view id, TopicOptions options) {
  auto type = topicSchema(id);
  if (!type.ok()) return type.status();
  auto info = std::make_shared<const TopicSchemaInfo>(std::move(*type));
  auto core = detail::advertiseTopic(impl_, id, info->schema, std::move(options));
  if (!core.ok()) return core.status();
  return JsonPublisher(std::move(*core), std::move(info));
}

Result<JsonPublisher> Client::advertiseJson(std::string_view id, TopicSchemaInfo type,
                                            TopicOptions options) {
  if (!type.loader || type.schema.getProto().getId() == 0) {
    return Status(StatusCode::kInvalidArgument, "advertiseJson: the message type has no schema");
  }
  type.topicId = std::string(id);
  type.typeId = type.schema.getProto().getId();
  auto info = std::make_shared<const TopicSchemaInfo>(std::move(type));
  auto core = detail::advertiseTopic(impl_, id, info->schema, std::move(options));
  if (!core.ok()) return core.status();
  return JsonPublisher(std::move(*core), std::move(info));
}

JsonPublisher::~JsonPublisher() {
  if (raw_ != nullptr && core_) core_->abandon();
  if (core_) (void)core_->close();
}

Status JsonPublisher::publish(std::string_view message) {
  if (!core_) return Status(StatusCode::kFailedPrecondition, "publish() on a closed publisher");
  auto builder = core_->loan();
  if (!builder.ok()) return builder.status();
  Status st = fillFromJson(**builder, type_->schema, message);
  if (!st) {
    core_->abandon();
    return st;
  }
  return core_->publish();
}

Result<kj::ArrayPtr<capnp::word>> JsonPublisher::loanRaw() {
  if (!core_) return Status(StatusCode::kFailedPrecondition, "loanRaw() on a closed publisher");
  auto builder = core_->loan();
  if (!builder.ok()) return builder.status();
  // The log's loan is a RingMessageBuilder over the slot.
  raw_ = static_cast<detail::RingMessageBuilder*>(*builder);
  return raw_->loanRaw();
}

Status JsonPublisher::publishRaw(size_t words) {
  if (raw_ == nullptr || !core_) {
    return Status(StatusCode::kFailedPrecondition, "no raw message is on loan (loanRaw first)");
  }
  if (auto s = raw_->setRawWords(words); !s) {
    abandonRaw();
    return s;
  }
  raw_ = nullptr;
  return core_->publish();
}

void JsonPublisher::abandonRaw() {
  if (raw_ == nullptr || !core_) return;
  raw_ = nullptr;
  core_->abandon();
}

size_t JsonPublisher::subscribers() const noexcept {
  return core_ ? core_->subscribers() : 0;
}

Status JsonPublisher::close() {
  if (!core_) return Status();
  auto s = core_->close();
  core_.reset();
  return s;
}

Result<JsonSubscription> Client::subscribeJson(std::string_view id, SubscribeOptions options) {
  // The type comes from the broker, which knows it once a publisher has advertised the topic.
  const auto deadline = std::chrono::steady_clock::now() + options.waitForPublisher;
  auto type = topicSchema(id);
  while (!type.ok() && type.status().code() == StatusCode::kNotFound &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    type = topicSchema(id);
  }
  if (!type.ok()) return type.status();
  auto info = std::make_shared<const TopicSchemaInfo>(std::move(*type));
  auto core = detail::subscribeTopic(impl_, id, info->typeId, options);
  if (!core.ok()) return core.status();
  return JsonSubscription(std::move(*core), std::move(info));
}

JsonSubscription::~JsonSubscription() {
  if (core_) (void)core_->close();
}

Status JsonSubscription::next(std::chrono::nanoseconds timeout, bool pretty) {
  if (!core_) return Status(StatusCode::kFailedPrecondition, "next() on a closed subscription");
  capnp::MessageReader* reader = nullptr;
  if (auto s = core_->next(timeout, reader); !s) return s;
  auto json = toJson(*reader, type_->schema, pretty);
  if (!json.ok()) return json.status();
  message_ = std::move(*json);
  return Status();
}

Status JsonSubscription::nextRaw(std::chrono::nanoseconds timeout) {
  raw_ = {};
  if (!core_) return Status(StatusCode::kFailedPrecondition, "next() on a closed subscription");
  capnp::MessageReader* reader = nullptr;
  if (auto s = core_->next(timeout, reader); !s) return s;
  raw_ = reader->getSegment(0);  // log messages are one segment
  return Status();
}

uint64_t JsonSubscription::sequence() const noexcept {
  return core_ ? core_->sequence() : 0;
}

uint64_t JsonSubscription::missed() const noexcept {
  return core_ ? core_->missed() : 0;
}

Status JsonSubscription::close() {
  if (!core_) return Status();
  auto s = core_->close();
  core_.reset();
  return s;
}

}  // namespace hms::ffi
