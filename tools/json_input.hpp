// Where `call` and `pub` get their JSON: the command's JSON argument, or -d TEXT, -d @FILE or
// -d - (stdin), or else stdin when it is not a terminal. `pub --lines` reads it a line at a time.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hms::ffi::cli {

// The whole input. `argument` is the JSON argument if one was given, `data` the value of -d if
// given. With neither: stdin when it is not a terminal, else `fallback`; an input of nothing
// but white space is `fallback` too. False with `error` set for both given at once or an
// unreadable file.
bool readJsonInput(const std::string* argument, const std::string* data, std::string_view fallback,
                   std::string& out, std::string& error);

// Lines of a file descriptor (or of a text), one at a time as they arrive, so that a publisher
// fed by a pipe publishes each line when it comes. Waits in poll() with a short timeout so that
// Ctrl-C (Interrupts::received()) stops it.
class LineReader {
 public:
  enum class Next { kLine, kEnd, kInterrupted, kError };

  // Takes `fd` (closed by the destructor unless it is stdin).
  explicit LineReader(int fd) : fd_(fd) {}
  explicit LineReader(std::string text) : buffer_(std::move(text)), eof_(true) {}
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  ~LineReader();

  // The next line without its end of line; kError sets error().
  Next next(std::string& line);
  const std::string& error() const noexcept { return error_; }

 private:
  int fd_ = -1;
  std::string buffer_;
  bool eof_ = false;
  std::string error_;
};

// Opens the source of `pub --lines`: -d @FILE, -d - or stdin (no -d), or -d TEXT.
std::optional<std::string> openLineSource(const std::string* data,
                                          std::optional<LineReader>& reader);

}  // namespace hms::ffi::cli
