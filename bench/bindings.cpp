// bindings: each language binding's own bench program against this run's echo service (P13).
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "patterns.hpp"

namespace hms::ffi::bench_tool {

namespace {

// The number after "key": in one line of JSON (the programs' own output; flat objects).
double jsonNumber(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\":");
  return at == std::string::npos ? 0 : std::atof(line.c_str() + at + key.size() + 3);
}

std::string jsonString(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\":\"");
  if (at == std::string::npos) return "";
  const auto from = at + key.size() + 4;
  return line.substr(from, line.find('"', from) - from);
}

std::optional<BindingResult> bindingBench(const Options& o, const std::string& self,
                                          const std::string& socket, const std::string& mode) {
  EchoServer server(o, self, socket, mode);
  if (!server.up()) return std::nullopt;
  BindingResult out;
  out.mode = mode;
  {
    EchoCaller caller(socket, mode);
    if (!caller.stub) return std::nullopt;
    Options so = o;
    so.iterations = std::max(2000, o.iterations / 10);
    bool failed = false;
    auto ns = timeLoop(so, [&](int i) {
      auto reply = caller.stub->call<&Echo::Client::echoRequest>([&](auto p) {
        auto d = p.initPayload(64);
        std::memset(d.begin(), i & 0xff, 64);
      });
      if (!reply) failed = true;
    });
    if (failed) {
      ++gChecksFailed;
      return std::nullopt;
    }
    out.typed = summarize("C++ typed call, " + mode, ns);
  }
  for (const auto& program : o.bindingPrograms) {
    const std::string cmd = program + " --socket " + socket + " --service hms.bench.echo." + mode +
                            " --wait " + mode + " --iterations " +
                            std::to_string(std::max(2000, o.iterations / 10)) + " --peer-cpu " +
                            (o.pin ? std::to_string(o.peerCpu) : std::string("-1"));
    FILE* f = ::popen(cmd.c_str(), "r");
    if (f == nullptr) {
      std::fprintf(stderr, "hms-ffi-bench: cannot run %s\n", program.c_str());
      ++gChecksFailed;
      continue;
    }
    char buf[1024];
    int rows = 0;
    while (std::fgets(buf, sizeof buf, f) != nullptr) {
      const std::string line = buf;
      BindingRow r;
      r.name = jsonString(line, "name");
      if (r.name.empty()) continue;
      r.p50 = jsonNumber(line, "p50_us");
      r.p90 = jsonNumber(line, "p90_us");
      r.p99 = jsonNumber(line, "p99_us");
      r.ratioToBaseline = jsonNumber(line, "ratio_p50_to_baseline");
      r.samples = int(jsonNumber(line, "samples"));
      r.callsPerSec = jsonNumber(line, "calls_per_sec");
      out.rows.push_back(r);
      ++rows;
    }
    const int status = ::pclose(f);
    if (status != 0 || rows == 0) {
      std::fprintf(stderr, "hms-ffi-bench: %s failed (status %d, %d rows)\n", program.c_str(),
                   status, rows);
      ++gChecksFailed;
    }
  }
  return out;
}

}  // namespace

std::vector<BindingResult> measureBindings(const Options& o, const std::string& self,
                                           const std::string& socket) {
  std::vector<BindingResult> bindings;
  Options bo = o;
  if (bo.bindingPrograms.empty()) {
    // This build's: bench/../bindings/go and bench/../cargo-target (bindings/build-programs.sh).
    namespace fs = std::filesystem;
    const fs::path build = fs::path(self).parent_path().parent_path();
    const fs::path src = HMS_FFI_SOURCE_DIR;
    for (const fs::path& p :
         {build / "bindings/go/hms-ffi-bench-go", build / "cargo-target/release/examples/bench",
          src / "bindings/python/bench/hms_ffi_bench_py.py",
          src / "bindings/ruby/bench/hms_ffi_bench_rb.rb",
          src / "bindings/php/bench/hms_ffi_bench_php"}) {
      if (fs::exists(p)) {
        bo.bindingPrograms.push_back(p.string());
      } else {
        std::fprintf(stderr, "hms-ffi-bench: %s is not built (bindings/build-programs.sh)\n",
                     p.c_str());
      }
    }
  }
  for (const char* mode : {"blocking", "adaptive"}) {
    if (auto r = bindingBench(bo, self, socket, mode)) bindings.push_back(std::move(*r));
  }
  return bindings;
}

}  // namespace hms::ffi::bench_tool
