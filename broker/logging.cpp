#include "logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

#include "audit.hpp"
#include "journal_sink.hpp"

namespace hms::ffi::broker {
namespace {

// %* in a pattern: the message as the inside of a JSON string.
class JsonMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string quoted;
    detail::appendJsonString(quoted, std::string_view(msg.payload.data(), msg.payload.size()));
    // Without the quotes appendJsonString puts around it: the pattern has them.
    dest.append(quoted.data() + 1, quoted.data() + quoted.size() - 1);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessage>();
  }
};

}  // namespace

bool validLogFormat(const std::string& format) {
  return format == "auto" || format == "text" || format == "json" || format == "journal";
}

namespace {

// The default logger writes through `route`, whose one sink is standard error or the journal;
// swapping it is safe while other threads log (dist_sink locks).
struct Route {
  std::shared_ptr<spdlog::sinks::dist_sink_mt> dist;
  std::shared_ptr<spdlog::sinks::sink> stderrSink;
  std::shared_ptr<spdlog::sinks::sink> journalSink;
};
Route& route() {
  static Route r = [] {
    Route made;
    made.stderrSink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    made.dist = std::make_shared<spdlog::sinks::dist_sink_mt>(
        std::vector<spdlog::sink_ptr>{made.stderrSink});
    return made;
  }();
  return r;
}

}  // namespace

void initLogging() {
  auto logger = std::make_shared<spdlog::logger>("hms-ffid", route().dist);
  spdlog::set_default_logger(std::move(logger));
}

std::string resolveLogFormat(const std::string& format) {
  if (format != "auto") return format;
  return detail::stderrIsJournal() ? "journal" : "text";
}

void setLogFormat(const std::string& requested) {
  Route& r = route();
  const std::string format = resolveLogFormat(requested);
  if (format == "journal") {
    if (!r.journalSink) r.journalSink = std::make_shared<detail::JournalSink>("hms-ffid");
    r.dist->set_sinks({r.journalSink});
    return;
  }
  r.dist->set_sinks({r.stderrSink});
  if (format == "json") {
    auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    f->add_flag<JsonMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","pid":%P,"message":"%*"})");
    spdlog::set_formatter(std::move(f));
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
}

}  // namespace hms::ffi::broker
