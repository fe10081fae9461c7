// The contract store (docs/contracts.md): every contract the broker has accepted, kept in
// SQLite under the broker's state dir so that contracts survive a broker restart, `hms-ffi
// describe` shows an offline service, and compatibility is checked against the history.
// Only the broker's thread uses it (not thread-safe). Never on the data path.
#pragma once

#include <capnp/common.h>

#include <memory>
#include <string>
#include <vector>

#include "codec.hpp"
#include "hms/ffi/control.capnp.h"
#include "hms/ffi/status.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace hms::ffi::broker {

// One stored contract: a flat (single segment, segment table included) wire::Contract message.
using FlatContract = detail::FlatWords;

class ContractStore {
 public:
  // Opens (creating if missing, mode 0700 for the dir, 0600 for the file) `stateDir`/contracts.db
  // in WAL mode, or an in-memory store for ":memory:". FAILED_PRECONDITION naming the file and
  // what to do when the dir cannot be created, the database is corrupt (or not a database),
  // locked by another process (still, after a busy timeout of a second), not writable, or written
  // by a newer hms-ffid (its schema version is higher than this build knows).
  static Result<std::unique_ptr<ContractStore>> open(const std::string& stateDir);
  // Finalizes the statements and closes the database (a WAL store is checkpointed then).
  ~ContractStore();
  ContractStore(const ContractStore&) = delete;
  ContractStore& operator=(const ContractStore&) = delete;

  // Stores `contract` atomically (one transaction). The key is (descriptor.id, version): a
  // contract already stored under it is replaced, keeping its firstSeenUnixMs.
  Status put(wire::Contract::Reader contract);
  // Every stored contract, sorted by service id then version (lowest first), each checked to be
  // a readable wire::Contract (with the control reader options) stored under its own key; a row
  // that is not is FAILED_PRECONDITION naming the file and the row.
  Result<std::vector<FlatContract>> loadAll();
  // "/path/contracts.db", or ":memory:".
  const std::string& path() const { return path_; }

 private:
  ContractStore() = default;
  Status initialize();

  sqlite3* db_ = nullptr;  // owned: closed by the destructor, after the statements
  // Prepared by open() for the store's life; owned: finalized by the destructor.
  sqlite3_stmt* selectFirstSeen_ = nullptr;
  sqlite3_stmt* upsert_ = nullptr;
  sqlite3_stmt* selectAll_ = nullptr;
  std::string path_;
};

// The default state dir: $STATE_DIRECTORY (the first, when systemd's StateDirectory= set it),
// else /var/lib/hms-ffi as root, else $XDG_STATE_HOME/hms-ffi (when absolute,
// as the XDG spec wants), else $HOME/.local/state/hms-ffi (the passwd entry's home when HOME is
// unset); empty when there is no home either, which open() refuses with what to do.
std::string defaultStateDir();

}  // namespace hms::ffi::broker
