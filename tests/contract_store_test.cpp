// The contract store (broker/contract_store.hpp): what it keeps, across reopening and a SIGKILL
// of its writer, and how it refuses a database it cannot trust or use.
#include "contract_store.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hms/cdf/debate.capnp.h"
#include "hms/ffi/control.capnp.h"
#include "schema_nodes.hpp"

namespace hms::ffi::broker {
namespace {

namespace fs = std::filesystem;

// A private directory (mkdtemp, 0700) for one test, removed with all it holds at the end.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/hms-ffi-contract-store-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error(std::string("mkdtemp: ") + strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

const std::vector<capnp::Schema>& debateSchemas() {
  static const auto schemas =
      detail::reachableSchemas(capnp::Schema::from<hms::cdf::DebateService>());
  return schemas;
}

struct Spec {
  std::string id = "hms.cdf.debate";
  uint32_t major = 1, minor = 0, patch = 0;
  std::string provider = "debate-1";
  int64_t firstSeen = 1000;
  int64_t lastSeen = 1000;
};

// A realistic contract: the DebateService interface and every node it reaches.
std::unique_ptr<capnp::MallocMessageBuilder> makeContract(const Spec& spec) {
  auto message = std::make_unique<capnp::MallocMessageBuilder>();
  auto contract = message->initRoot<wire::Contract>();
  auto d = contract.initDescriptor();
  d.setId(spec.id);
  auto v = d.initVersion();
  v.setMajor(spec.major);
  v.setMinor(spec.minor);
  v.setPatch(spec.patch);
  d.setInterfaceId(capnp::typeId<hms::cdf::DebateService>());
  d.setInterfaceName("hms.cdf.DebateService");
  d.setDisplayName("Policy debate");
  d.setRingBytes(1 << 16);
  const auto& schemas = debateSchemas();
  detail::copyNodes(schemas, contract.initNodes(unsigned(schemas.size())));
  contract.setProviderName(spec.provider);
  contract.setFirstSeenUnixMs(spec.firstSeen);
  contract.setLastSeenUnixMs(spec.lastSeen);
  return message;
}

wire::Contract::Reader rootOf(capnp::MallocMessageBuilder& message) {
  return message.getRoot<wire::Contract>().asReader();
}

Status put(ContractStore& store, const Spec& spec) {
  auto message = makeContract(spec);
  return store.put(rootOf(*message));
}

// A loaded contract with the reader it needs kept alive.
struct Loaded {
  explicit Loaded(const FlatContract& flat)
      : reader(detail::asWords(flat)),
        contract(reader.getRoot<wire::Contract>()) {}
  capnp::FlatArrayMessageReader reader;
  wire::Contract::Reader contract;
};

std::string versionOf(wire::Contract::Reader c) {
  auto v = c.getDescriptor().getVersion();
  return std::string(c.getDescriptor().getId().cStr()) + " " + std::to_string(v.getMajor()) + "." +
         std::to_string(v.getMinor()) + "." + std::to_string(v.getPatch());
}

void expectSameNodes(wire::Contract::Reader expected, wire::Contract::Reader actual) {
  auto a = expected.getNodes();
  auto b = actual.getNodes();
  ASSERT_EQ(a.size(), b.size());
  for (unsigned i = 0; i < a.size(); ++i) {
    auto wa = capnp::canonicalize(a[i]);
    auto wb = capnp::canonicalize(b[i]);
    EXPECT_TRUE(wa.asBytes() == wb.asBytes()) << "node " << i << " differs";
  }
}

// Opens a store that must open; fails the test (and returns null) otherwise.
std::unique_ptr<ContractStore> openOk(const std::string& stateDir) {
  auto store = ContractStore::open(stateDir);
  EXPECT_TRUE(store.ok()) << store.status().toString();
  return store.ok() ? std::move(*store) : nullptr;
}

void expectFailedPrecondition(const Status& status, const std::string& path) {
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status.toString();
  EXPECT_NE(status.message().find(path), std::string::npos) << status.message();
}

// Runs `sql` on `path` over a connection of the test's own (not the store's).
void sqlOn(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr),
            SQLITE_OK);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
      << (error ? error : "") << " in " << sql;
  sqlite3_free(error);
  sqlite3_close(db);
}

// Runs `check` in a child process, as the unprivileged user nobody when this process is root
// (for whom permissions do not apply); returns what `check` returns (empty: it passed), "SKIP"
// when privileges cannot be dropped.
std::string inChild(const std::function<std::string()>& check) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return std::string("pipe: ") + strerror(errno);
  const pid_t pid = ::fork();
  if (pid < 0) return std::string("fork: ") + strerror(errno);
  if (pid == 0) {
    ::close(fds[0]);
    std::string result;
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
         ::setresuid(65534, 65534, 65534) != 0)) {
      result = "SKIP";
    } else {
      result = check();
    }
    (void)!::write(fds[1], result.data(), result.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string result;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    result.append(buf, size_t(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "the child did not exit cleanly";
  return result;
}

// What a failed open says, or "" when it succeeded; for checks run in a child.
std::string openFailure(const std::string& stateDir) {
  auto store = ContractStore::open(stateDir);
  if (store.ok()) return "";
  return std::string(statusCodeName(store.status().code())) + ": " + store.status().message();
}

TEST(ContractStore, LoadAll_ReturnsWhatWasPut_InTheSameStore) {
  TempDir dir;
  auto store = openOk(dir.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(store->path(), dir / "contracts.db");
  auto message = makeContract({});
  ASSERT_TRUE(store->put(rootOf(*message))) << "put";

  auto all = store->loadAll();
  ASSERT_TRUE(all.ok()) << all.status().toString();
  ASSERT_EQ(all->size(), 1u);
  Loaded loaded((*all)[0]);
  EXPECT_EQ(versionOf(loaded.contract), "hms.cdf.debate 1.0.0");
  EXPECT_EQ(loaded.contract.getProviderName(), "debate-1");
  EXPECT_EQ(loaded.contract.getDescriptor().getInterfaceId(),
            capnp::typeId<hms::cdf::DebateService>());
  EXPECT_EQ(loaded.contract.getFirstSeenUnixMs(), 1000);
  expectSameNodes(rootOf(*message), loaded.contract);
}

TEST(ContractStore, LoadAll_ReturnsWhatWasPut_AfterCloseAndReopen) {
  TempDir dir;
  auto message = makeContract({.provider = "provider-a", .firstSeen = 111, .lastSeen = 222});
  {
    auto store = openOk(dir.path());
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->put(rootOf(*message)));
  }
  auto store = openOk(dir.path());
  ASSERT_TRUE(store);
  auto all = store->loadAll();
  ASSERT_TRUE(all.ok()) << all.status().toString();
  ASSERT_EQ(all->size(), 1u);
  Loaded loaded((*all)[0]);
  EXPECT_EQ(versionOf(loaded.contract), "hms.cdf.debate 1.0.0");
  EXPECT_EQ(loaded.contract.getDescriptor().getDisplayName(), "Policy debate");
  EXPECT_EQ(loaded.contract.getDescriptor().getRingBytes(), 1u << 16);
  EXPECT_EQ(loaded.contract.getProviderName(), "provider-a");
  EXPECT_EQ(loaded.contract.getFirstSeenUnixMs(), 111);
  EXPECT_EQ(loaded.contract.getLastSeenUnixMs(), 222);
  expectSameNodes(rootOf(*message), loaded.contract);
}

TEST(ContractStore, Open_CreatesTheStateDirAndItsParents_PrivateToTheUser) {
  TempDir dir;
  const std::string stateDir = dir / "a/b/state";
  auto store = openOk(stateDir);
  ASSERT_TRUE(store);
  ASSERT_TRUE(put(*store, {}));
  for (const std::string& d : {dir / "a", dir / "a/b", stateDir}) {
    struct stat st;
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 07777, 0700u) << d;
  }
  struct stat st;
  ASSERT_EQ(::stat((stateDir + "/contracts.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // The WAL and its index hold the same data: just as private.
  ASSERT_EQ(::stat((stateDir + "/contracts.db-wal").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u);
}

TEST(ContractStore, Put_KeepsFirstSeenAndUpdatesTheRest_WhenTheKeyIsStoredAlready) {
  TempDir dir;
  {
    auto store = openOk(dir.path());
    ASSERT_TRUE(store);
    ASSERT_TRUE(put(*store, {.provider = "first", .firstSeen = 1000, .lastSeen = 1000}));
    ASSERT_TRUE(put(*store, {.provider = "second", .firstSeen = 5000, .lastSeen = 5000}));
    auto all = store->loadAll();
    ASSERT_TRUE(all.ok()) << all.status().toString();
    ASSERT_EQ(all->size(), 1u);
    Loaded loaded((*all)[0]);
    EXPECT_EQ(loaded.contract.getFirstSeenUnixMs(), 1000);
    EXPECT_EQ(loaded.contract.getLastSeenUnixMs(), 5000);
    EXPECT_EQ(loaded.contract.getProviderName(), "second");
    ASSERT_TRUE(put(*store, {.provider = "third", .firstSeen = 9000, .lastSeen = 9000}));
  }
  auto store = openOk(dir.path());
  ASSERT_TRUE(store);
  auto all = store->loadAll();
  ASSERT_TRUE(all.ok()) << all.status().toString();
  ASSERT_EQ(all->size(), 1u);
  Loaded loaded((*all)[0]);
  EXPECT_EQ(loaded.contract.getFirstSeenUnixMs(), 1000);
  EXPECT_EQ(loaded.contract.getLastSeenUnixMs(), 9000);
  EXPECT_EQ(loaded.contract.getProviderName(), "third");
}

TEST(ContractStore, LoadAll_SortsByIdThenNumericVersion) {
  TempDir dir;
  auto store = openOk(dir.path());
  ASSERT_TRUE(store);
  for (const Spec& spec : std::vector<Spec>{{.id = "hms.b", .major = 1},
                                            {.id = "hms.a", .major = 2},
                                            {.id = "hms.a", .major = 1, .minor = 10},
                                            {.id = "hms.a", .major = 1, .minor = 2, .patch = 3},
                                            {.id = "hms.a", .major = 1, .minor = 2},
                                            {.id = "hms.a", .major = 10}}) {
    ASSERT_TRUE(put(*store, spec));
  }
  auto all = store->loadAll();
  ASSERT_TRUE(all.ok()) << all.status().toString();
  std::vector<std::string> order;
  for (const auto& flat : *all) order.push_back(versionOf(Loaded(flat).contract));
  EXPECT_EQ(order, (std::vector<std::string>{"hms.a 1.2.0", "hms.a 1.2.3", "hms.a 1.10.0",
                                             "hms.a 2.0.0", "hms.a 10.0.0", "hms.b 1.0.0"}));
}

TEST(ContractStore, Open_KeepsContractsInMemoryAndWritesNoFile_ForMemory) {
  TempDir dir;
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path());
  {
    auto store = openOk(":memory:");
    ASSERT_TRUE(store);
    EXPECT_EQ(store->path(), ":memory:");
    ASSERT_TRUE(put(*store, {.patch = 1}));
    ASSERT_TRUE(put(*store, {.patch = 0}));
    auto all = store->loadAll();
    ASSERT_TRUE(all.ok()) << all.status().toString();
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ(versionOf(Loaded((*all)[0]).contract), "hms.cdf.debate 1.0.0");
  }
  fs::current_path(cwd);
  EXPECT_TRUE(fs::is_empty(dir.path()));
  // A second in-memory store is a new, empty one.
  auto store = openOk(":memory:");
  ASSERT_TRUE(store);
  auto all = store->loadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
}

TEST(ContractStore, Open_FailsNamingTheFileAndWhatToDo_WhenTheFileIsNotADatabase) {
  TempDir dir;
  const std::string path = dir / "contracts.db";
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 512; ++i) out << "this is not a database";
  }
  auto store = ContractStore::open(dir.path());
  ASSERT_FALSE(store.ok());
  expectFailedPrecondition(store.status(), path);
  const std::string m = store.status().message();
  EXPECT_NE(m.find("not a database"), std::string::npos) << m;
  EXPECT_NE(m.find("move it aside"), std::string::npos) << m;
  EXPECT_NE(m.find("--state-dir :memory:"), std::string::npos) << m;
}

// Writes a store of `count` contracts to `dir` and closes it (the WAL is checkpointed then).
void writeStore(const std::string& dir, uint32_t count) {
  auto store = openOk(dir);
  ASSERT_TRUE(store);
  for (uint32_t i = 0; i < count; ++i) ASSERT_TRUE(put(*store, {.patch = i}));
}

// A damaged database is refused at open (quick_check) or, at the latest, by loadAll.
void expectRefused(const std::string& stateDir, const std::string& path) {
  auto store = ContractStore::open(stateDir);
  if (!store.ok()) {
    expectFailedPrecondition(store.status(), path);
    EXPECT_NE(store.status().message().find("move it aside"), std::string::npos)
        << store.status().message();
    return;
  }
  auto all = (*store)->loadAll();
  ASSERT_FALSE(all.ok()) << "a damaged store loaded " << all->size() << " contracts";
  expectFailedPrecondition(all.status(), path);
}

TEST(ContractStore, OpenOrLoadAll_FailsClearly_WhenAPageInTheMiddleIsGarbage) {
  TempDir dir;
  const std::string path = dir / "contracts.db";
  writeStore(dir.path(), 20);
  ASSERT_FALSE(fs::exists(path + "-wal"));
  const auto size = fs::file_size(path);
  constexpr size_t kPage = 4096;  // SQLite's default page size
  ASSERT_GE(size, 8 * kPage);
  {
    std::fstream io(path, std::ios::binary | std::ios::in | std::ios::out);
    io.seekp(std::streamoff(size / kPage / 2 * kPage));
    const std::string garbage(kPage, '\xa5');
    io.write(garbage.data(), std::streamsize(garbage.size()));
  }
  expectRefused(dir.path(), path);
}

TEST(ContractStore, OpenOrLoadAll_FailsClearly_WhenTheFileIsTruncated) {
  TempDir dir;
  const std::string path = dir / "contracts.db";
  writeStore(dir.path(), 20);
  fs::resize_file(path, fs::file_size(path) / 2);
  expectRefused(dir.path(), path);
}

TEST(ContractStore, Open_FailsSayingItIsLocked_WhenAnotherConnectionHoldsTheWriteLock) {
  TempDir dir;
  const std::string path = dir / "contracts.db";
  writeStore(dir.path(), 1);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &other, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);

  auto store = ContractStore::open(dir.path());
  ASSERT_FALSE(store.ok());
  expectFailedPrecondition(store.status(), path);
  EXPECT_NE(store.status().message().find("locked"), std::string::npos) << store.status().message();

  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  auto again = openOk(dir.path());
  ASSERT_TRUE(again);
  auto all = again->loadAll();
  ASSERT_TRUE(all.ok()) << all.status().toString();
  EXPECT_EQ(all->size(), 1u);
}

TEST(ContractStore, Open_FailsSayingItCannotCreateTheDir_WhenTheStateDirIsUnderARegularFile) {
  TempDir dir;
  { std::ofstream(dir / "file") << "a regular file"; }
  const std::string stateDir = dir / "file/state";
  auto store = ContractStore::open(stateDir);
  ASSERT_FALSE(store.ok());
  expectFailedPrecondition(store.status(), stateDir);
  EXPECT_NE(store.status().message().find("cannot create"), std::string::npos)
      << store.status().message();
}

TEST(ContractStore, Open_FailsSayingItCannotCreateTheFile_WhenTheStateDirIsNotWritable) {
  TempDir dir;
  const std::string stateDir = dir / "state";
  ASSERT_EQ(::mkdir(stateDir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);  // reachable by nobody, when root drops to it
  ASSERT_EQ(::chmod(stateDir.c_str(), 0555), 0);
  const std::string failure = inChild([&] { return openFailure(stateDir); });
  ::chmod(stateDir.c_str(), 0700);
  if (failure == "SKIP") GTEST_SKIP() << "cannot drop root privileges to test permissions";
  EXPECT_NE(failure.find("FAILED_PRECONDITION"), std::string::npos) << failure;
  EXPECT_NE(failure.find(stateDir + "/contracts.db"), std::string::npos) << failure;
  EXPECT_NE(failure.find("writable"), std::string::npos) << failure;
}

TEST(ContractStore, Open_FailsSayingWhatToDo_WhenTheDatabaseIsNotWritable) {
  TempDir dir;
  const std::string stateDir = dir / "state";
  writeStore(stateDir, 1);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(stateDir.c_str(), 0555), 0);
  ASSERT_EQ(::chmod((stateDir + "/contracts.db").c_str(), 0444), 0);
  const std::string failure = inChild([&] { return openFailure(stateDir); });
  ::chmod(stateDir.c_str(), 0700);
  if (failure == "SKIP") GTEST_SKIP() << "cannot drop root privileges to test permissions";
  EXPECT_NE(failure.find("FAILED_PRECONDITION"), std::string::npos) << failure;
  EXPECT_NE(failure.find(stateDir + "/contracts.db"), std::string::npos) << failure;
  EXPECT_NE(failure.find("writable"), std::string::npos) << failure;
}

TEST(ContractStore, Open_FailsNamingTheVersion_WhenANewerBrokerWroteTheStore) {
  TempDir dir;
  const std::string path = dir / "contracts.db";
  writeStore(dir.path(), 1);
  sqlOn(path, "PRAGMA user_version = 7");
  auto store = ContractStore::open(dir.path());
  ASSERT_FALSE(store.ok());
  expectFailedPrecondition(store.status(), path);
  EXPECT_NE(store.status().message().find("newer hms-ffid (store schema version 7"),
            std::string::npos)
      << store.status().message();
}

TEST(ContractStore, Open_Fails_WhenTheFileIsADatabaseOfSomethingElse) {
  TempDir dir;
  const std::string path = dir / "contracts.db";
  sqlOn(path, "CREATE TABLE notes (text TEXT)");
  auto store = ContractStore::open(dir.path());
  ASSERT_FALSE(store.ok());
  expectFailedPrecondition(store.status(), path);
}

TEST(ContractStore, Open_FailsSayingWhatToDo_WhenThereIsNoStateDir) {
  auto store = ContractStore::open("");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("--state-dir"), std::string::npos);
}

TEST(ContractStore, LoadAll_FailsNamingTheRow_WhenAStoredBlobIsNotAContract) {
  const char* const kBlobs[] = {
      "x'0102030405'",                                                    // not whole words
      "x'00000000010000000000000000000000'",                              // a null root
      "x'00000000ffffff7f0000000000000000'",                              // a segment past the end
      "x'0000000002000000ffffffffffffffff0000000000000000'",              // a wild root pointer
      "(SELECT contract FROM contracts WHERE service_id = 'hms.other')",  // another's contract
  };
  for (const char* blob : kBlobs) {
    SCOPED_TRACE(blob);
    TempDir dir;
    const std::string path = dir / "contracts.db";
    {
      auto store = openOk(dir.path());
      ASSERT_TRUE(store);
      ASSERT_TRUE(put(*store, {.minor = 2, .patch = 3}));
      ASSERT_TRUE(put(*store, {.id = "hms.other"}));
    }
    sqlOn(path, std::string("UPDATE contracts SET contract = ") + blob +
                    " WHERE service_id = 'hms.cdf.debate'");
    auto store = openOk(dir.path());
    ASSERT_TRUE(store);
    auto all = store->loadAll();
    ASSERT_FALSE(all.ok());
    expectFailedPrecondition(all.status(), path);
    EXPECT_NE(all.status().message().find("hms.cdf.debate 1.2.3"), std::string::npos)
        << all.status().message();
  }
}

// A broker killed by SIGKILL in the middle of storing loses nothing it had stored: every row
// loads, complete, and every put that returned is there.
TEST(ContractStore, StoredContracts_SurviveSigkillOfTheWriter) {
  TempDir dir;
  constexpr uint32_t kReported = 200;
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto store = ContractStore::open(dir.path());
    if (!store.ok()) ::_exit(2);
    for (uint32_t i = 0; i < 1'000'000; ++i) {
      // A new row, and a rewrite of the first one: both kinds of write get interrupted.
      if (!put(**store, {.patch = i, .firstSeen = i, .lastSeen = i})) ::_exit(3);
      if (!put(**store, {.patch = 0, .provider = "again", .firstSeen = i, .lastSeen = i})) {
        ::_exit(3);
      }
      if (i + 1 == kReported) {
        const char done = 1;
        if (::write(fds[1], &done, 1) != 1) ::_exit(4);
      }
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  char done = 0;
  ssize_t n;
  do {
    n = ::read(fds[0], &done, 1);
  } while (n < 0 && errno == EINTR);
  ::close(fds[0]);
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_EQ(n, 1) << "the writer stopped before it had stored " << kReported
                  << " contracts (exit status " << status << ")";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  auto store = openOk(dir.path());
  ASSERT_TRUE(store);
  auto all = store->loadAll();
  ASSERT_TRUE(all.ok()) << all.status().toString();
  ASSERT_GE(all->size(), size_t(kReported));
  auto expected = makeContract({});
  for (size_t i = 0; i < all->size(); ++i) {
    Loaded loaded((*all)[i]);
    EXPECT_EQ(loaded.contract.getDescriptor().getVersion().getPatch(), i);
    EXPECT_EQ(loaded.contract.getNodes().size(), debateSchemas().size());
    expectSameNodes(rootOf(*expected), loaded.contract);
    if (i == 0) {
      EXPECT_EQ(loaded.contract.getFirstSeenUnixMs(), 0);  // the first put's, kept
      EXPECT_EQ(loaded.contract.getProviderName(), "again");
      EXPECT_GE(loaded.contract.getLastSeenUnixMs(), kReported - 1);
    }
  }
}

TEST(ContractStore, DefaultStateDir_IsStateDirectoryElseVarLibAsRootElseXdgStateHomeElseHome) {
  if (::geteuid() == 0) {
    EXPECT_EQ(defaultStateDir(), "/var/lib/hms-ffi");
  }
  // The rest as an ordinary user, in a child so that the environment it changes is its own.
  const std::string failure = inChild([]() -> std::string {
    ::setenv("HOME", "/home/alice", 1);
    ::setenv("XDG_STATE_HOME", "/xdg/state", 1);
    if (defaultStateDir() != "/xdg/state/hms-ffi") return "XDG: " + defaultStateDir();
    ::setenv("XDG_STATE_HOME", "relative/state", 1);  // invalid by the XDG spec: ignored
    if (defaultStateDir() != "/home/alice/.local/state/hms-ffi") {
      return "relative XDG: " + defaultStateDir();
    }
    ::unsetenv("XDG_STATE_HOME");
    if (defaultStateDir() != "/home/alice/.local/state/hms-ffi")
      return "HOME: " + defaultStateDir();
    // Under systemd, StateDirectory= (the first of several) comes before all of them.
    ::setenv("STATE_DIRECTORY", "/var/lib/hms-ffi:/var/lib/other", 1);
    if (defaultStateDir() != "/var/lib/hms-ffi") return "STATE_DIRECTORY: " + defaultStateDir();
    return "";
  });
  if (failure == "SKIP") GTEST_SKIP() << "cannot drop root privileges";
  EXPECT_EQ(failure, "");
}

}  // namespace
}  // namespace hms::ffi::broker
