# frozen_string_literal: true

require_relative "lib/hms/ffi/version"

Gem::Specification.new do |s|
  s.name = "hms-ffi"
  s.version = Hms::Ffi::VERSION
  s.summary = "Ruby binding of HMS-FFI, the shared-memory IPC broker (over libhmsffi.so.1)"
  s.description = "Call and serve HMS-FFI services from Ruby: JSON-level calls (sync, async, " \
                  "one-way, streams), services served with blocks on Ruby threads, " \
                  "exceptions per status code."
  s.authors = ["HMS-FFI"]
  s.license = "MIT OR Apache-2.0"
  s.required_ruby_version = ">= 3.0"
  s.files = Dir["lib/**/*.rb"] + Dir["examples/*.rb"] + ["README.md", "hms-ffi.gemspec"]
  s.require_paths = ["lib"]
  s.add_dependency "ffi", ">= 1.15"
  s.add_development_dependency "minitest", ">= 5.14"
end
