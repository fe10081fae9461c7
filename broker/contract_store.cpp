#include "contract_store.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <pwd.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "codec.hpp"

namespace hms::ffi::broker {

namespace {

// Bump on any change of the table's shape, and teach initialize() to migrate from the old one.
constexpr int kSchemaVersion = 1;
// How long a statement waits for another connection's lock before it fails with SQLITE_BUSY.
// Short: the only other writer there should be is a second broker, and that is an error.
constexpr int kBusyTimeoutMs = 1000;

constexpr char kMoveAside[] =
    "move it aside (with its -wal and -shm files, if any) to start with an empty store, or run "
    "hms-ffid with --state-dir :memory: to keep contracts in memory only";

std::string versionText(int64_t major, int64_t minor, int64_t patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

// The error for `rc`, met while opening the store at `path`, with what to do about it; `why` is
// SQLite's message unless given.
Status openError(sqlite3* db, int rc, const std::string& path, std::string why = {}) {
  if (why.empty()) why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string message;
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
      message = path + " is not a valid contract store (file is not a database); " + kMoveAside;
      break;
    case SQLITE_CORRUPT:
      message = path + " is not a valid contract store (" + why + "); " + kMoveAside;
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      message = path + " is locked by another process (still locked after waiting " +
                std::to_string(kBusyTimeoutMs) +
                " ms); stop the other hms-ffid (or whatever else writes to it), or give this "
                "one another --state-dir";
      break;
    case SQLITE_READONLY:
      message = path + " is read-only (" + why +
                "); make it and its directory writable by the user hms-ffid runs as, or run "
                "hms-ffid with --state-dir :memory: to keep contracts in memory only";
      break;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      message =
          path + " cannot be opened (" + why +
          "); make it and its directory readable and writable by the user hms-ffid runs "
          "as, give hms-ffid another --state-dir, or run it with --state-dir :memory: to keep "
          "contracts in memory only";
      break;
    case SQLITE_FULL:
      message = path + " cannot be written (" + why + "); free some space on its file system";
      break;
    default:
      message = path + " cannot be used as the contract store (" + why + "); " + kMoveAside;
      break;
  }
  return Status(StatusCode::kFailedPrecondition, std::move(message));
}

// The error for `rc`, met by `what` on an open store.
Status storeError(sqlite3* db, int rc, const std::string& path, const char* what) {
  std::string message = "contract store " + path + ": " + what + ": " + sqlite3_errmsg(db);
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return Status(StatusCode::kResourceExhausted, std::move(message));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status(StatusCode::kUnavailable, std::move(message));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status(StatusCode::kFailedPrecondition,
                    std::move(message) + "; stop hms-ffid and " + kMoveAside);
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
      return Status(StatusCode::kFailedPrecondition, std::move(message));
    default:
      return Status(StatusCode::kInternal, std::move(message));
  }
}

// mkdir -p with mode 0700 for every directory it creates (an existing one is left as it is).
Status makeStateDir(const std::string& dir) {
  for (size_t end = dir.find('/', 1);; end = dir.find('/', end + 1)) {
    const std::string prefix = dir.substr(0, end);
    if (::mkdir(prefix.c_str(), 0700) != 0) {
      const int err = errno;
      struct stat st;
      if (::stat(prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return Status(StatusCode::kFailedPrecondition,
                      "cannot create the state directory " + dir + " (" + prefix + ": " +
                          (err == EEXIST ? "exists and is not a directory" : std::strerror(err)) +
                          "); create it writable by the user hms-ffid runs as, give hms-ffid "
                          "another --state-dir, or run it with --state-dir :memory: to keep "
                          "contracts in memory only");
      }
    }
    if (end == std::string::npos) return Status();
  }
}

// SQLite creates a database file with mode 0644 less the umask; the store is created 0600 here
// first (SQLite takes an empty file for an empty database, and gives its -wal and -shm files the
// database's mode).
Status createPrivateFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
    return Status();
  }
  if (errno == EEXIST) return Status();
  return Status(StatusCode::kFailedPrecondition,
                "cannot create the contract store " + path + " (" + std::strerror(errno) +
                    "); make its directory writable by the user hms-ffid runs as, give hms-ffid "
                    "another --state-dir, or run it with --state-dir :memory: to keep contracts "
                    "in memory only");
}

// Runs `sql`, and reads the first column of its first row as text (empty when there is none).
int queryText(sqlite3* db, const char* sql, std::string* out) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    *out = text ? text : "";
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    out->clear();
    rc = SQLITE_OK;
  }
  sqlite3_finalize(stmt);
  return rc;
}

int queryInt(sqlite3* db, const char* sql, int64_t* out) {
  std::string text;
  const int rc = queryText(db, sql, &text);
  if (rc == SQLITE_OK) *out = std::strtoll(text.c_str(), nullptr, 10);
  return rc;
}

int exec(sqlite3* db, const char* sql) {
  return sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
}

// Leaves a prepared statement ready for its next use, however the use ended.
class StatementUse {
 public:
  explicit StatementUse(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StatementUse() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StatementUse(const StatementUse&) = delete;
  StatementUse& operator=(const StatementUse&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

// Rolls back the transaction that is still open when it goes out of scope.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  ~Transaction() {
    if (!sqlite3_get_autocommit(db_)) exec(db_, "ROLLBACK");
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

 private:
  sqlite3* db_;
};

void bindText(sqlite3_stmt* stmt, int index, capnp::Text::Reader text) {
  // The text outlives the statement's step: SQLITE_STATIC avoids a copy.
  sqlite3_bind_text(stmt, index, text.cStr(), int(text.size()), SQLITE_STATIC);
}

// Why `flat`, stored under (`id`, `version`), is not a contract the broker can read back, or
// empty when it is one.
std::string checkStoredContract(const FlatContract& flat, const std::string& id, int64_t major,
                                int64_t minor, int64_t patch) {
  try {
    capnp::FlatArrayMessageReader reader(detail::asWords(flat), detail::controlReaderOptions());
    const auto words = detail::asWords(flat);
    if (reader.getEnd() != words.end()) {
      return "it has " + std::to_string(words.end() - reader.getEnd()) + " words after the message";
    }
    auto contract = reader.getRoot<wire::Contract>();
    (void)contract.totalSize();  // walks every pointer: a bad one throws here, not later
    auto d = contract.getDescriptor();
    auto v = d.getVersion();
    if (d.getId() != id.c_str() || v.getMajor() != major || v.getMinor() != minor ||
        v.getPatch() != patch) {
      return std::string("it holds the contract of ") + d.getId().cStr() + " " +
             versionText(v.getMajor(), v.getMinor(), v.getPatch());
    }
  } catch (const kj::Exception& e) {
    return e.getDescription().cStr();
  }
  return {};
}

std::string sqlQuoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

}  // namespace

Result<std::unique_ptr<ContractStore>> ContractStore::open(const std::string& stateDir) {
  std::unique_ptr<ContractStore> store(new ContractStore());
  if (stateDir == ":memory:") {
    store->path_ = stateDir;
  } else {
    if (stateDir.empty()) {
      return Status(StatusCode::kFailedPrecondition,
                    "no state directory for the contract store (none given, and no home "
                    "directory to put one in); give hms-ffid a --state-dir, or run it with "
                    "--state-dir :memory: to keep contracts in memory only");
    }
    if (auto s = makeStateDir(stateDir); !s) return s;
    store->path_ = stateDir + (stateDir.back() == '/' ? "" : "/") + "contracts.db";
    if (auto s = createPrivateFile(store->path_); !s) return s;
  }
  const int rc =
      sqlite3_open_v2(store->path_.c_str(), &store->db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return openError(store->db_, rc, store->path_);
  if (auto s = store->initialize(); !s) return s;
  return {std::move(store)};
}

Status ContractStore::initialize() {
  const bool inMemory = path_ == ":memory:";
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  // Nothing but this code writes the file: refuse what could corrupt it (writable_schema, ...).
  sqlite3_db_config(db_, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  std::string text;
  int rc;
  if (!inMemory) {
    // WAL with synchronous=NORMAL: a commit survives the process being killed (it is in the WAL
    // once written), though not a power loss before the next checkpoint.
    if ((rc = queryText(db_, "PRAGMA journal_mode=WAL", &text)) != SQLITE_OK) {
      return openError(db_, rc, path_);
    }
    if (text != "wal") {
      return Status(StatusCode::kFailedPrecondition,
                    path_ + " cannot be switched to WAL mode (it stays in '" + text +
                        "' mode); make it and its directory writable by the user hms-ffid runs "
                        "as, or run hms-ffid with --state-dir :memory: to keep contracts in "
                        "memory only");
    }
    if ((rc = exec(db_, "PRAGMA synchronous=NORMAL")) != SQLITE_OK) {
      return openError(db_, rc, path_);
    }
  }
  if ((rc = queryText(db_, "PRAGMA quick_check", &text)) != SQLITE_OK) {
    return openError(db_, rc, path_);
  }
  if (text != "ok") {
    // "*** in database main ***\nOn tree page 33 cell 0: ...": one line, without the banner.
    constexpr std::string_view kBanner = "*** in database main ***\n";
    if (text.starts_with(kBanner)) text.erase(0, kBanner.size());
    std::replace(text.begin(), text.end(), '\n', ' ');
    return Status(
        StatusCode::kFailedPrecondition,
        path_ + " is not a valid contract store (it is corrupt: " + text + "); " + kMoveAside);
  }
  if (sqlite3_db_readonly(db_, "main") == 1) {
    return openError(db_, SQLITE_READONLY, path_, "this user cannot write it");
  }
  // A write transaction now, so that a store locked by another process is an error at startup,
  // not at the first registration.
  if ((rc = exec(db_, "BEGIN IMMEDIATE")) != SQLITE_OK) return openError(db_, rc, path_);
  Transaction transaction(db_);
  int64_t version = 0;
  if ((rc = queryInt(db_, "PRAGMA user_version", &version)) != SQLITE_OK) {
    return openError(db_, rc, path_);
  }
  if (version > kSchemaVersion) {
    return Status(StatusCode::kFailedPrecondition,
                  path_ + " was written by a newer hms-ffid (store schema version " +
                      std::to_string(version) + ", this one knows up to " +
                      std::to_string(kSchemaVersion) + "); run the newer hms-ffid, or " +
                      kMoveAside);
  }
  if (version == 0) {
    int64_t tables = 0;
    if ((rc = queryInt(db_, "SELECT count(*) FROM sqlite_schema", &tables)) != SQLITE_OK) {
      return openError(db_, rc, path_);
    }
    if (tables != 0) {
      const std::string why = " is not a valid contract store (it is a database of another kind); ";
      return Status(StatusCode::kFailedPrecondition, path_ + why + kMoveAside);
    }
    rc = exec(db_,
              "CREATE TABLE contracts ("
              "  service_id TEXT NOT NULL,"
              "  major INTEGER NOT NULL,"
              "  minor INTEGER NOT NULL,"
              "  patch INTEGER NOT NULL,"
              "  interface_id INTEGER NOT NULL,"
              "  display_name TEXT NOT NULL,"
              "  provider_name TEXT NOT NULL,"
              "  first_seen_ms INTEGER NOT NULL,"
              "  last_seen_ms INTEGER NOT NULL,"
              "  contract BLOB NOT NULL,"  // a flat wire::Contract, firstSeenUnixMs included
              "  PRIMARY KEY (service_id, major, minor, patch)"
              ");"
              "PRAGMA user_version = 1;");
    static_assert(kSchemaVersion == 1, "write the new version above");
    if (rc != SQLITE_OK) return openError(db_, rc, path_);
  }
  if ((rc = exec(db_, "COMMIT")) != SQLITE_OK) return openError(db_, rc, path_);

  const std::pair<const char*, sqlite3_stmt**> statements[] = {
      {"SELECT first_seen_ms FROM contracts"
       " WHERE service_id = ?1 AND major = ?2 AND minor = ?3 AND patch = ?4",
       &selectFirstSeen_},
      {"INSERT INTO contracts (service_id, major, minor, patch, interface_id, display_name,"
       "  provider_name, first_seen_ms, last_seen_ms, contract)"
       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
       " ON CONFLICT (service_id, major, minor, patch) DO UPDATE SET"
       "  interface_id = excluded.interface_id, display_name = excluded.display_name,"
       "  provider_name = excluded.provider_name, last_seen_ms = excluded.last_seen_ms,"
       "  contract = excluded.contract",
       &upsert_},
      {"SELECT service_id, major, minor, patch, contract FROM contracts"
       " ORDER BY service_id, major, minor, patch",
       &selectAll_},
  };
  for (auto [sql, stmt] : statements) {
    if ((rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr)) !=
        SQLITE_OK) {
      return openError(db_, rc, path_);
    }
  }
  return Status();
}

ContractStore::~ContractStore() {
  for (sqlite3_stmt* stmt : {selectFirstSeen_, upsert_, selectAll_}) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

Status ContractStore::put(wire::Contract::Reader contract) {
  try {
    auto d = contract.getDescriptor();
    auto v = d.getVersion();
    int rc = exec(db_, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) return storeError(db_, rc, path_, "begin a transaction");
    Transaction transaction(db_);

    int64_t firstSeen = contract.getFirstSeenUnixMs();
    {
      StatementUse use(selectFirstSeen_);
      bindText(selectFirstSeen_, 1, d.getId());
      sqlite3_bind_int64(selectFirstSeen_, 2, v.getMajor());
      sqlite3_bind_int64(selectFirstSeen_, 3, v.getMinor());
      sqlite3_bind_int64(selectFirstSeen_, 4, v.getPatch());
      rc = sqlite3_step(selectFirstSeen_);
      if (rc == SQLITE_ROW) {
        firstSeen = sqlite3_column_int64(selectFirstSeen_, 0);
      } else if (rc != SQLITE_DONE) {
        return storeError(db_, rc, path_, "read a stored contract");
      }
    }

    // The blob carries the kept firstSeen too, so that it and the column never disagree.
    capnp::MallocMessageBuilder builder;
    builder.setRoot(contract);
    builder.getRoot<wire::Contract>().setFirstSeenUnixMs(firstSeen);
    const kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
    if (flat.size() >= detail::controlReaderOptions().traversalLimitInWords) {
      return Status(StatusCode::kInvalidArgument,
                    "the contract of " + std::string(d.getId().cStr()) + " is " +
                        std::to_string(flat.size() * sizeof(capnp::word)) +
                        " bytes, too large to be read back");
    }

    StatementUse use(upsert_);
    bindText(upsert_, 1, d.getId());
    sqlite3_bind_int64(upsert_, 2, v.getMajor());
    sqlite3_bind_int64(upsert_, 3, v.getMinor());
    sqlite3_bind_int64(upsert_, 4, v.getPatch());
    sqlite3_bind_int64(upsert_, 5, int64_t(d.getInterfaceId()));  // SQLite has no UInt64
    bindText(upsert_, 6, d.getDisplayName());
    bindText(upsert_, 7, contract.getProviderName());
    sqlite3_bind_int64(upsert_, 8, firstSeen);
    sqlite3_bind_int64(upsert_, 9, contract.getLastSeenUnixMs());
    sqlite3_bind_blob64(upsert_, 10, flat.begin(), flat.asBytes().size(), SQLITE_STATIC);
    if ((rc = sqlite3_step(upsert_)) != SQLITE_DONE) {
      return storeError(db_, rc, path_, "store a contract");
    }
    if ((rc = exec(db_, "COMMIT")) != SQLITE_OK) {
      return storeError(db_, rc, path_, "commit a contract");
    }
    return Status();
  } catch (const kj::Exception& e) {
    return Status(StatusCode::kInvalidArgument,
                  std::string("cannot store a malformed contract: ") + e.getDescription().cStr());
  }
}

Result<std::vector<FlatContract>> ContractStore::loadAll() {
  // One statement: one read transaction, so one consistent snapshot of the table.
  StatementUse use(selectAll_);
  std::vector<FlatContract> out;
  for (;;) {
    const int rc = sqlite3_step(selectAll_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return storeError(db_, rc, path_, "read the stored contracts");
    const auto* idText = reinterpret_cast<const char*>(sqlite3_column_text(selectAll_, 0));
    const std::string id = idText ? idText : "";
    const int64_t major = sqlite3_column_int64(selectAll_, 1);
    const int64_t minor = sqlite3_column_int64(selectAll_, 2);
    const int64_t patch = sqlite3_column_int64(selectAll_, 3);
    const void* blob = sqlite3_column_blob(selectAll_, 4);
    const size_t bytes = size_t(sqlite3_column_bytes(selectAll_, 4));

    std::string why;
    FlatContract flat;
    if (bytes == 0 || bytes % sizeof(capnp::word) != 0) {
      why = "its " + std::to_string(bytes) + " bytes are not a whole number of words";
    } else {
      flat.resize(bytes / sizeof(capnp::word));  // a copy, for the alignment capnp needs
      std::memcpy(flat.data(), blob, bytes);
      why = checkStoredContract(flat, id, major, minor, patch);
    }
    if (!why.empty()) {
      return Status(
          StatusCode::kFailedPrecondition,
          path_ + ": the stored contract of " + id + " " + versionText(major, minor, patch) +
              " is not a readable contract (" + why + "); delete that row (sqlite3 " + path_ +
              " \"DELETE FROM contracts WHERE service_id = " + sqlQuoted(id) +
              " AND major = " + std::to_string(major) + " AND minor = " + std::to_string(minor) +
              " AND patch = " + std::to_string(patch) + "\"), or " + kMoveAside);
    }
    out.push_back(std::move(flat));
  }
  return out;
}

std::string defaultStateDir() {
  // A systemd unit's StateDirectory= (hms-ffid.service: /var/lib/hms-ffi, owned by its user).
  if (const char* sd = std::getenv("STATE_DIRECTORY"); sd && sd[0] == '/') {
    const std::string dirs = sd;
    return dirs.substr(0, dirs.find(':'));
  }
  if (::geteuid() == 0) return "/var/lib/hms-ffi";
  // The XDG base directory spec: a relative $XDG_STATE_HOME is invalid and must be ignored.
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && xdg[0] == '/') {
    return std::string(xdg) + "/hms-ffi";
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return std::string(home) + "/.local/state/hms-ffi";
  }
  if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_dir && *pw->pw_dir) {
    return std::string(pw->pw_dir) + "/.local/state/hms-ffi";
  }
  return {};  // open() says what to do
}

}  // namespace hms::ffi::broker
