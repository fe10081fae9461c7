// The contract store (docs/contracts.md): every contract the broker has accepted, kept in
// SQLite under the broker's state dir so that contracts survive a broker restart, `hms-ffi
// describe` shows an offline service, and compatibility is checked against the history.
// Only the broker's thread uses it (not thread-safe). Never on the data path.
#pragma once

#include <capnp/common.h>

#include <memory>
#include <string>
#include <vector>

#include "hms/ffi/control.capnp.h"
#include "hms/ffi/status.hpp"

struct sqlite3;

namespace hms::ffi::broker {

// One stored contract: a flat (single segment, segment table included) wire::Contract message.
using FlatContract = std::vector<capnp::word>;

class ContractStore {
 public:
  // Opens (creating if missing, mode 0700 for the dir, 0600 for the file) `stateDir`/contracts.db
  // in WAL mode, or an in-memory store for ":memory:". FAILED_PRECONDITION naming the file and
  // what to do when the dir cannot be created, the database is corrupt (or not a database),
  // locked by another process, or not writable.
  static Result<std::unique_ptr<ContractStore>> open(const std::string& stateDir);
  ~ContractStore();
  ContractStore(const ContractStore&) = delete;
  ContractStore& operator=(const ContractStore&) = delete;

  // Stores `contract` atomically (one transaction). The key is (descriptor.id, version): a
  // contract already stored under it is replaced, keeping its firstSeenUnixMs.
  Status put(wire::Contract::Reader contract);
  // Every stored contract, sorted by service id then version (lowest first).
  Result<std::vector<FlatContract>> loadAll();
  // "/path/contracts.db", or ":memory:".
  const std::string& path() const { return path_; }

 private:
  ContractStore() = default;
  sqlite3* db_ = nullptr;
  std::string path_;
};

// The default state dir: /var/lib/hms-ffi as root, else $XDG_STATE_HOME/hms-ffi, else
// $HOME/.local/state/hms-ffi.
std::string defaultStateDir();

}  // namespace hms::ffi::broker
