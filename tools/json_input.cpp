#include "json_input.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>

#include "interrupts.hpp"

namespace hms::ffi::cli {

namespace {

bool readAll(int fd, std::string& out, std::string& error) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      out.append(buf, size_t(n));
    } else if (n == 0) {
      return true;
    } else if (errno != EINTR) {
      error = std::strerror(errno);
      return false;
    }
  }
}

bool readFile(const std::string& path, std::string& out, std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  const bool ok = readAll(fd, out, error);
  if (!ok) error = "cannot read " + path + ": " + error;
  ::close(fd);
  return ok;
}

bool blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

}  // namespace

bool readJsonInput(const std::string* argument, const std::string* data, std::string_view fallback,
                   std::string& out, std::string& error) {
  out.clear();
  if (argument != nullptr && data != nullptr) {
    error = "give the JSON as an argument or with -d, not both";
    return false;
  }
  if (argument != nullptr) {
    out = *argument;
  } else if (data != nullptr && data->starts_with("@")) {
    if (!readFile(data->substr(1), out, error)) return false;
  } else if (data != nullptr && *data != "-") {
    out = *data;
  } else if (data != nullptr || ::isatty(STDIN_FILENO) != 1) {
    if (!readAll(STDIN_FILENO, out, error)) {
      error = "cannot read stdin: " + error;
      return false;
    }
  }
  if (blank(out)) out = std::string(fallback);
  return true;
}

LineReader::~LineReader() {
  if (fd_ > STDIN_FILENO) ::close(fd_);
}

LineReader::Next LineReader::next(std::string& line) {
  for (;;) {
    if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
      line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return Next::kLine;
    }
    if (eof_) {
      if (buffer_.empty()) return Next::kEnd;
      line = std::move(buffer_);
      buffer_.clear();
      return Next::kLine;
    }
    if (Interrupts::received() != 0) return Next::kInterrupted;
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) {
      error_ = std::string("poll: ") + std::strerror(errno);
      return Next::kError;
    }
    if (ready <= 0) continue;
    char buf[65536];
    const ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n > 0) {
      buffer_.append(buf, size_t(n));
    } else if (n == 0) {
      eof_ = true;
    } else if (errno != EINTR && errno != EAGAIN) {
      error_ = std::string("read: ") + std::strerror(errno);
      return Next::kError;
    }
  }
}

std::optional<std::string> openLineSource(const std::string* data,
                                          std::optional<LineReader>& reader) {
  if (data == nullptr || *data == "-") {
    reader.emplace(STDIN_FILENO);
  } else if (data->starts_with("@")) {
    const std::string path = data->substr(1);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return "cannot open " + path + ": " + std::strerror(errno);
    reader.emplace(fd);
  } else {
    reader.emplace(*data);
  }
  return std::nullopt;
}

}  // namespace hms::ffi::cli
