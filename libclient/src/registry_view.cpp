#include "registry_view.hpp"

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <string>

#include "hms/ffi/registry.capnp.h"

namespace hms::ffi::detail {

namespace {

ServiceInfo toServiceInfo(wire::ServiceEntry::Reader e) {
  ServiceInfo s;
  auto d = e.getDescriptor();
  s.key = e.getKey();
  s.id = d.getId().cStr();
  s.version =
      Version{d.getVersion().getMajor(), d.getVersion().getMinor(), d.getVersion().getPatch()};
  s.interfaceId = d.getInterfaceId();
  s.interfaceName = d.getInterfaceName().cStr();
  for (auto m : d.getMethods()) {
    s.methods.push_back(MethodInfo{m.getName().cStr(), m.getOrdinal(), m.getParamSchemaId(),
                                   m.getResultSchemaId(), m.getStream()});
  }
  s.displayName = d.getDisplayName().cStr();
  s.description = d.getDescription().cStr();
  s.ringBytes = d.getRingBytes();
  s.providerClientId = e.getProviderClientId();
  s.providerPid = pid_t(e.getProviderPid());
  s.providerUid = uid_t(e.getProviderUid());
  s.providerName = e.getProviderName().cStr();
  return s;
}

}  // namespace

Result<std::shared_ptr<RegistryView>> parseRegistryView(const FlatWords& words,
                                                        uint64_t generation) {
  auto view = std::make_shared<RegistryView>();
  view->generation = generation;
  if (!words.empty()) {
    try {
      capnp::FlatArrayMessageReader reader(asWords(words), controlReaderOptions());
      auto snap = reader.getRoot<wire::RegistrySnapshot>();
      // Each list read once: every read counts against the traversal limit.
      const auto services = snap.getServices();
      const auto topics = snap.getTopics();
      // Every entry the broker writes takes words of its own; a list of empty structs takes
      // none, and may claim a million of them (found by fuzz/registry_snapshot_fuzz.cpp: seconds
      // and hundreds of MiB to build their views).
      if (uint64_t(services.size()) + topics.size() > words.size()) {
        return Status(StatusCode::kDataLoss,
                      "registry snapshot is malformed: it claims more entries than it has words");
      }
      for (auto e : services) view->services.push_back(toServiceInfo(e));
      for (auto e : topics) {
        TopicInfo t;
        t.key = e.getKey();
        t.id = e.getId().cStr();
        t.typeId = e.getTypeId();
        t.typeName = e.getTypeName().cStr();
        t.displayName = e.getDisplayName().cStr();
        t.description = e.getDescription().cStr();
        t.slots = e.getSlotCount();
        t.maxMessageBytes = e.getMaxMessageBytes();
        t.publisherClientId = e.getPublisherClientId();
        t.publisherPid = pid_t(e.getPublisherPid());
        t.publisherUid = uid_t(e.getPublisherUid());
        t.publisherName = e.getPublisherName().cStr();
        t.subscribers = e.getSubscribers();
        view->topics.push_back(std::move(t));
      }
    } catch (const kj::Exception& e) {
      return Status(StatusCode::kDataLoss,
                    std::string("registry snapshot is malformed: ") + e.getDescription().cStr());
    }
  }
  std::sort(view->services.begin(), view->services.end(), [](const auto& a, const auto& b) {
    return a.id != b.id ? a.id < b.id : a.version > b.version;
  });
  std::sort(view->topics.begin(), view->topics.end(),
            [](const auto& a, const auto& b) { return a.id < b.id; });
  return view;
}

}  // namespace hms::ffi::detail
