#!/usr/bin/ruby
# frozen_string_literal: true

# hms_ffi_bench_rb.rb measures the Ruby binding for hms-ffi-bench (P13 in
# ../shared/design/PERFORMANCE.md), as bindings/go/cmd/hms-ffi-bench-go does for Go: a JSON-level
# call echoing 64 bytes to the bench's echo service, in slices, each just after a slice of Ruby's
# own blocking Unix-socket ping-pong of 64 bytes with a child process, so that both are measured
# in the same placement. It prints one JSON object per row on stdout; hms-ffi-bench runs it
# (--patterns bindings --binding-programs PATH) and reports the ratio.
#
#   hms_ffi_bench_rb.rb --socket PATH --service ID --wait blocking|adaptive --iterations N [--peer-cpu C]
#   hms_ffi_bench_rb.rb --uds-echo [--peer-cpu C]  (the ping-pong's peer, on fd 3; run by the first)
#
# The peer is pinned to --peer-cpu with taskset (hms-ffi-bench passes the CPU its echo service
# runs on), so that the baseline crosses CPUs as the calls do. $HMS_FFI_LIBRARY defaults to the
# release build's library in this tree.

require "optparse"

SLICES = 10
MSG_BYTES = 64

def fail!(message)
  warn "hms-ffi-bench-rb: #{message}"
  exit 1
end

opts = { socket: "", service: "hms.bench.echo.adaptive", wait: "adaptive", iterations: 20_000,
         uds_echo: false, peer_cpu: -1 }
begin
  OptionParser.new do |p|
    p.on("--socket PATH", String) { |v| opts[:socket] = v }
    p.on("--service ID", String) { |v| opts[:service] = v }
    p.on("--wait MODE", String) { |v| opts[:wait] = v }
    p.on("--iterations N", Integer) { |v| opts[:iterations] = v }
    p.on("--uds-echo") { opts[:uds_echo] = true }
    p.on("--peer-cpu C", Integer) { |v| opts[:peer_cpu] = v }
  end.parse!(ARGV)
rescue OptionParser::ParseError => e
  fail!(e.message)
end

# The peer: blocking reads and writes of 64 bytes on fd 3 until EOF (pinned by taskset already).
if opts[:uds_echo]
  io = IO.for_fd(3, autoclose: false)
  buf = String.new(capacity: MSG_BYTES)
  chunk = String.new(capacity: MSG_BYTES)
  loop do
    buf.clear
    while buf.bytesize < MSG_BYTES
      begin
        io.sysread(MSG_BYTES - buf.bytesize, chunk)
      rescue EOFError, SystemCallError
        exit 0
      end
      buf << chunk
    end
    begin
      io.syswrite(buf)
    rescue SystemCallError
      exit 0
    end
  end
end

unless %w[adaptive blocking].include?(opts[:wait])
  fail!("--wait takes blocking or adaptive, not #{opts[:wait].inspect}")
end

if ENV.fetch("HMS_FFI_LIBRARY", "").empty?
  ENV["HMS_FFI_LIBRARY"] = File.expand_path("../../../build/release/libclient/libhmsffi.so.1", __dir__)
end
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "base64"
require "json"
require "rbconfig"
require "socket"
require "hms/ffi"

def percentile(ns, q)
  return 0.0 if ns.empty?

  s = ns.sort
  s[(q * (s.size - 1)).to_i] / 1000.0
end

def summarize(name, ns)
  { "lang" => "ruby", "name" => name, "samples" => ns.size, "p50_us" => percentile(ns, 0.5),
    "p90_us" => percentile(ns, 0.9), "p99_us" => percentile(ns, 0.99) }
end

def timed(n)
  out = Array.new(n)
  i = 0
  while i < n
    t = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
    yield
    out[i] = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) - t
    i += 1
  end
  out
end

peer_cpu = opts[:peer_cpu]
begin
  # Ruby's own baseline: a socketpair with a child process echoing on its end.
  mine, theirs = UNIXSocket.pair(:STREAM)
  cmd = [RbConfig.ruby, File.expand_path(__FILE__), "--uds-echo", "--peer-cpu", peer_cpu.to_s]
  cmd = ["taskset", "-c", peer_cpu.to_s] + cmd if peer_cpu >= 0
  child = Process.spawn(*cmd, 3 => theirs, in: File::NULL, out: File::NULL, err: :err)
  theirs.close
rescue SystemCallError, IOError => e
  fail!("starting the ping-pong peer: #{e.message}")
end
msg = ("\x07" * MSG_BYTES).b
back = String.new(capacity: MSG_BYTES)
chunk = String.new(capacity: MSG_BYTES)
uds = lambda do
  mine.syswrite(msg)
  back.clear
  while back.bytesize < MSG_BYTES
    mine.sysread(MSG_BYTES - back.bytesize, chunk)
    back << chunk
  end
  raise IOError, "the ping-pong came back different" unless back == msg
end

payload = Base64.strict_encode64((0...MSG_BYTES).map { |i| i & 0xff }.pack("C*"))
params = { "payload" => payload }
client = nil
stub = nil
begin
  client = Hms::Ffi.connect(socket_path: opts[:socket].empty? ? nil : opts[:socket],
                            name: "bench-ruby", wait_mode: opts[:wait].to_sym)
  stub = client.bind(opts[:service], "*")
rescue Hms::Ffi::Error, LoadError, StandardError => e
  fail!(e.respond_to?(:describe) ? e.describe : e.message)
end
call = lambda do
  reply = stub.call("echo", params)
  got = reply.is_a?(Hash) ? reply["payload"] : nil
  raise IOError, "the echo came back with #{got.inspect} instead of the payload" unless got == payload
end

per = [opts[:iterations] / SLICES, 100].max
run = lambda do |what, fn|
  timed(per) { fn.call }
rescue Hms::Ffi::Error => e
  fail!("#{what}: #{e.describe}")
rescue StandardError => e
  fail!("#{what}: #{e.class}: #{e.message}")
end

# Warm-up of both.
run.call("uds", uds)
run.call("call", call)
all_uds = []
all_call = []
ratios = []
SLICES.times do
  u = run.call("uds", uds)
  c = run.call("call", call)
  all_uds.concat(u)
  all_call.concat(c)
  ratios << percentile(c, 0.5) / percentile(u, 0.5)
end
mine.close
Process.wait(child)
client.close
ratios.sort!

base = summarize("ruby UDS ping-pong (blocking)", all_uds)
row = summarize("ruby JSON call, #{opts[:wait]}", all_call)
ratio = ratios[ratios.size / 2]
row["ratio_p50_to_baseline"] = ratio if ratio.positive? && ratio.finite?
$stdout.puts JSON.generate(base)
$stdout.puts JSON.generate(row)
$stdout.flush
