# frozen_string_literal: true

require_relative "test_helper"
require "open3"

# A service written in Ruby (hms.test.rb, TestService of tests/support/test.capnp), called from
# Ruby and from the C++ CLI, over each transport; and Ruby calling the Go test service.
module ServiceTests
  include HmsTestSupport

  def setup
    @broker = HmsTestSupport::Broker.new
    @server_client = @broker.connect(transport: transport, name: "ruby-service")
    @service = @server_client.serve("hms.test.rb", "1.0.0", TEST_SCHEMA, "TestService",
                                    stream_methods: [:count], concurrency: 8,
                                    display_name: "Ruby test service")
    @seen = Queue.new
    @sleeping = Queue.new
    @service.on(:echo) { |req, _ctx| { seq: req["seq"], payload: req["payload"] } }
    @callers = Queue.new
    @service.on(:whoami) do |_req, ctx|
      @callers << ctx.caller
      { pid: Process.pid, version: "1.0.0", callerPid: ctx.caller_pid }
    end
    @service.on(:sleep) do |req, ctx|
      @seen << ctx
      @sleeping << [ctx.time_left, ctx.caller_name, ctx.caller_uid]
      t_end = HmsTestSupport.now + (req["ms"].to_i / 1000.0)
      sleep 0.005 while HmsTestSupport.now < t_end && !ctx.cancelled?
      if ctx.cancelled?
        # Out of time or cancelled: say which, as a handler should (the caller's own deadline and
        # this answer race; either way the caller must see DEADLINE_EXCEEDED for a deadline).
        left = ctx.time_left
        raise Hms::Ffi::DeadlineExceeded, "out of time" if left && left <= 0

        raise Hms::Ffi::Cancelled, "gave up"
      end

      { timeLeftMs: ((ctx.time_left || 0) * 1000).to_i, calls: 1 }
    end
    @service.on(:fail) do |req, _ctx|
      code = req["code"].to_i
      case code
      when 0 then raise ArgumentError, "a plain Ruby error"
      when 99 then next({ bogus: 1 }) # results that do not fit
      else raise Hms::Ffi::Error.class_for(code).new(req["message"], details: { hint: "asked to fail", code: code })
      end
    end
    @service.on_stream(:count) do |req, _ctx, out|
      from = req["from"].to_i
      req["n"].to_i.times do |i|
        raise Hms::Ffi::Aborted.new("failing at #{i}", details: { at: i }) if req["failAt"].to_i.positive? && i == req["failAt"].to_i

        out << { value: from + i }
        sleep(req["delayUs"].to_i / 1e6) if req["delayUs"].to_i.positive?
      end
    end
    @workers = @service.run(threads: 4, wait: false)
    @client = @broker.connect(transport: transport, name: "ruby-caller")
    @stub = bind_eventually(@client, "hms.test.rb")
  end

  def teardown
    @client&.close
    @service&.stop
    @workers&.each { |t| t.join(10) }
    @server_client&.close
    @broker&.close
  end

  def test_ruby_to_ruby_calls
    assert_equal "1.0.0", @stub.version
    r = @stub.call(:echo, { seq: 9, payload: ["abc"].pack("m0") })
    assert_equal({ "seq" => "9", "payload" => ["abc"].pack("m0") }, r)
    w = @stub.call(:whoami)
    assert_equal Process.pid, w["callerPid"]
    c = @callers.pop
    assert_kind_of Hms::Ffi::Caller, c
    assert_predicate c, :frozen?
    assert_equal Process.pid, c.pid
    assert_equal Process.uid, c.uid
    assert_equal Process.egid, c.gid
    assert_equal "ruby-caller", c.name
    refute c.authenticated # the test broker runs without an access policy
    assert_equal [], c.roles
    refute c.role?("doctor")
    assert_equal "", c.subject
    futures = (1..30).map { |i| @stub.call_async(:echo, { seq: i }) }
    assert_equal (1..30).map(&:to_s), futures.map { |f| f.value["seq"] }
  end

  def test_errors_from_ruby_handlers
    [3, 5, 7, 9, 16].each do |code|
      e = assert_raises(Hms::Ffi::Error.class_for(code)) { @stub.call(:fail, { code: code, message: "m#{code}" }) }
      assert_equal "m#{code}", e.message
      assert_equal "hms.test.rb", e.source
      assert_equal({ "hint" => "asked to fail", "code" => code.to_s }, e.details)
    end
    e = assert_raises(Hms::Ffi::Internal) { @stub.call(:fail, { code: 0 }) }
    assert_match(/ArgumentError: a plain Ruby error/, e.message)
    assert_equal "hms.test.rb", e.source
    assert_raises(Hms::Ffi::Internal) { @stub.call(:fail, { code: 99 }) }
    e = assert_raises(Hms::Ffi::Unimplemented) { @stub.call(:blob, { size: 1 }) } # no handler
    assert_match(/blob/, e.message)
  end

  def test_context_deadline_and_cancel
    r = @stub.call(:sleep, { ms: 10 }, timeout: 5)
    left, name, uid = @sleeping.pop
    assert_operator left, :<=, 5
    assert_operator left, :>, 1
    assert_equal "ruby-caller", name
    assert_equal Process.uid, uid
    assert_operator r["timeLeftMs"].to_i, :>, 1000

    @stub.call(:sleep, { ms: 1 }, timeout: Float::INFINITY)
    left, = @sleeping.pop
    assert_nil left # no deadline (the library reports ten years, not INT64_MAX; see Context)

    @seen.clear
    f = @stub.call_async(:sleep, { ms: 20_000 })
    ctx = @seen.pop
    refute ctx.cancelled?
    f.cancel
    assert_raises(Hms::Ffi::Cancelled) { f.value }
    wait_until(CALL_DEADLINE, "handler sees the cancel") { ctx.cancelled? }

    assert_raises(Hms::Ffi::DeadlineExceeded) { @stub.call(:sleep, { ms: 20_000 }, timeout: 0.2) }
  end

  def test_streams_from_ruby
    assert_equal (5..9).map(&:to_s), @stub.stream(:count, { from: 5, n: 5 }).map { |i| i["value"] }
    got = []
    e = assert_raises(Hms::Ffi::Aborted) do
      @stub.stream(:count, { from: 0, n: 10, failAt: 3 }) { |i| got << i["value"].to_i }
    end
    assert_equal [0, 1, 2], got
    assert_equal({ "at" => "3" }, e.details)
    assert_equal "hms.test.rb", e.source
    # the caller leaves early: the handler's `out <<` ends it, the service goes on
    @stub.stream(:count, { from: 0, n: 100_000, delayUs: 500 }) { |_| break }
    assert_equal "1", @stub.call(:echo, { seq: 1 })["seq"]
  end

  def test_called_from_the_cpp_cli
    out, err, st = Open3.capture3(@broker.env(transport), CLI, "--socket", @broker.socket,
                                  "call", "hms.test.rb", "echo", '{"seq":1}')
    assert st.success?, "cli failed: #{out}#{err}"
    assert_equal({ "seq" => "1" }, JSON.parse(out).reject { |k, _| k == "payload" })
    out, err, st = Open3.capture3(@broker.env(transport), CLI, "--socket", @broker.socket,
                                  "call", "hms.test.rb", "fail", '{"code":5,"message":"not here"}')
    refute st.success?
    assert_match(/NOT_FOUND/, out + err)
    assert_match(/not here/, out + err)
  end

  def test_stop_answers_unavailable
    @service.stop
    @workers.each { |t| assert t.join(10), "run loop ended" }
    assert @service.stopped?
    assert_raises(Hms::Ffi::Error) { @stub.call(:echo, { seq: 1 }, timeout: 2) }
  end

  def test_ruby_calls_go
    go = @broker.go_test_service(transport: transport)
    stub = bind_eventually(@client, "hms.test.go")
    assert_equal "4", stub.call(:echo, { seq: 4 })["seq"]
    e = assert_raises(Hms::Ffi::PermissionDenied) { stub.call(:fail, { code: 7, message: "go says no" }) }
    assert_equal "go says no", e.message
    assert_equal "hms.test.go", e.source
    assert_equal({ "hint" => "asked to fail" }, e.details)
    f = stub.call_async(:sleep, { ms: 10_000 })
    go.wait_for(/sleeping 10000/)
    f.cancel
    assert_raises(Hms::Ffi::Cancelled) { f.value }
    assert_equal %w[1 2 3], stub.stream(:count, { from: 1, n: 3 }).map { |i| i["value"] }
    f = stub.call_async(:sleep, { ms: 15_000 })
    go.wait_for(/sleeping 15000/)
    go.kill("KILL")
    assert_raises(Hms::Ffi::Unavailable) { f.value }
  end
end

class ServiceShmTest < Minitest::Test
  include ServiceTests
  def transport = :auto
end

class ServiceSocketTest < Minitest::Test
  include ServiceTests
  def transport = :socket
end
