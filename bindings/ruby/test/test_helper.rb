# frozen_string_literal: true

require "minitest/autorun"
require "tmpdir"
require "fileutils"
require "timeout"
require "hms/ffi"

# Processes the tests start (broker, test services, examples) and how to wait on them.
module HmsTestSupport
  ROOT = File.expand_path("../../..", __dir__)
  BUILD = File.join(ROOT, "build", "release")
  BROKER = ENV.fetch("HMS_FFI_BROKER_BINARY", File.join(BUILD, "broker", "hms-ffid"))
  TEST_SERVICE = ENV.fetch("HMS_FFI_TEST_SERVICE_BINARY", File.join(BUILD, "tests", "hms-ffi-test-service"))
  GO_TEST_SERVICE = ENV.fetch("HMS_FFI_GO_TEST_SERVICE", File.join(BUILD, "bindings", "go", "hms-go-test-service"))
  CLI = ENV.fetch("HMS_FFI_CLI", File.join(BUILD, "tools", "hms-ffi"))
  ETL = ENV.fetch("HMS_FFI_ACH_ETL", File.join(BUILD, "examples", "hms-example-ach_etl_batch"))
  TEST_SCHEMA = File.join(ROOT, "tests", "support", "test.capnp")
  START_DEADLINE = 20.0
  CALL_DEADLINE = 20.0

  # A child process; its stdout lines are collected and can be waited for.
  class Child
    attr_reader :pid, :lines

    def initialize(argv, env: {}, stderr: nil)
      @lines = []
      @lock = Mutex.new
      @cond = ConditionVariable.new
      r, w = IO.pipe
      opts = { out: w, in: File::NULL }
      opts[:err] = stderr || w
      @pid = Process.spawn(env, *argv, **opts)
      w.close
      @reader = Thread.new do
        r.each_line do |l|
          @lock.synchronize do
            @lines << l.chomp
            @cond.broadcast
          end
        end
      ensure
        r.close
        @lock.synchronize do
          @eof = true
          @cond.broadcast
        end
      end
    end

    def output
      @lock.synchronize { @lines.join("\n") }
    end

    # Waits until a line matches `pattern`; raises after `deadline` seconds or at EOF.
    def wait_for(pattern, deadline = START_DEADLINE)
      t_end = now + deadline
      @lock.synchronize do
        loop do
          line = @lines.find { |l| pattern === l }
          return line if line
          raise "no line matching #{pattern.inspect} (eof) in:\n#{@lines.join("\n")}" if @eof

          left = t_end - now
          raise "no line matching #{pattern.inspect} within #{deadline}s in:\n#{@lines.join("\n")}" if left <= 0

          @cond.wait(@lock, left)
        end
      end
    end

    def count(pattern)
      @lock.synchronize { @lines.count { |l| pattern === l } }
    end

    # Waits for the exit (up to deadline seconds); returns the Process::Status or nil.
    def wait(deadline = CALL_DEADLINE)
      t_end = now + deadline
      loop do
        _, st = Process.waitpid2(@pid, Process::WNOHANG)
        if st
          @status = st
          @reader.join(5)
          return st
        end
        return nil if now > t_end

        sleep 0.02
      end
    rescue Errno::ECHILD
      @status
    end

    def kill(sig = "KILL")
      Process.kill(sig, @pid)
    rescue Errno::ESRCH
      nil
    end

    def stop
      return @status if @status

      kill("TERM")
      st = wait(5)
      return st if st

      kill("KILL")
      wait(5)
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end

  # A broker in a temp dir, with the processes started beside it.
  class Broker
    attr_reader :dir, :socket

    def initialize
      @dir = Dir.mktmpdir("hms-rb-")
      @socket = File.join(@dir, "broker.sock")
      @children = []
      @proc = Child.new([BROKER, "--socket", @socket, "--state-dir", File.join(@dir, "state"),
                         "--log-level", "warn"])
      t_end = now + START_DEADLINE
      until File.socket?(@socket)
        raise "broker did not start:\n#{@proc.output}" if now > t_end || @proc.wait(0)

        sleep 0.02
      end
    end

    def env(transport = :auto)
      e = { "HMS_FFI_SOCKET" => @socket }
      e["HMS_FFI_TRANSPORT"] = "socket" if transport == :socket
      e
    end

    # Connects, retrying on Unavailable for up to START_DEADLINE.
    def connect(transport: :auto, name: "ruby-test", **kw)
      t_end = now + START_DEADLINE
      begin
        Hms::Ffi.connect(socket_path: @socket, name: name, transport: transport, **kw)
      rescue Hms::Ffi::Unavailable
        raise if now > t_end

        sleep 0.05
        retry
      end
    end

    def spawn(argv, transport: :auto, env: {})
      c = Child.new(argv, env: self.env(transport).merge(env))
      @children << c
      c
    end

    def test_service(transport: :auto)
      c = spawn([TEST_SERVICE, "--socket", @socket], transport: transport)
      c.wait_for(/ready/)
      c
    end

    def go_test_service(transport: :auto, id: "hms.test.go")
      c = spawn([GO_TEST_SERVICE, "--socket", @socket, "--id", id], transport: transport)
      c.wait_for(/ready/)
      c
    end

    def close
      @children.reverse_each(&:stop)
      @proc.stop
      FileUtils.rm_rf(@dir)
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end

  def self.now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Waits until the block is truthy; fails after `deadline` seconds.
  def wait_until(deadline = CALL_DEADLINE, what = "condition")
    t_end = HmsTestSupport.now + deadline
    loop do
      v = yield
      return v if v
      raise Minitest::Assertion, "#{what} not met within #{deadline}s" if HmsTestSupport.now > t_end

      sleep 0.02
    end
  end

  # Binds, retrying on NotFound (a service that registered a moment ago).
  def bind_eventually(client, id, range = "*")
    wait_until(START_DEADLINE, "bind #{id}") do
      client.bind(id, range)
    rescue Hms::Ffi::NotFound
      nil
    end
  end
end
