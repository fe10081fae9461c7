# frozen_string_literal: true

require_relative "test_helper"

# Calls from Ruby to the C++ test service (hms.test), over each transport.
module CallTests
  include HmsTestSupport

  CODES = {
    1 => Hms::Ffi::Cancelled, 2 => Hms::Ffi::Unknown, 3 => Hms::Ffi::InvalidArgument,
    4 => Hms::Ffi::DeadlineExceeded, 5 => Hms::Ffi::NotFound, 6 => Hms::Ffi::AlreadyExists,
    7 => Hms::Ffi::PermissionDenied, 8 => Hms::Ffi::ResourceExhausted,
    9 => Hms::Ffi::FailedPrecondition, 10 => Hms::Ffi::Aborted, 11 => Hms::Ffi::OutOfRange,
    12 => Hms::Ffi::Unimplemented, 13 => Hms::Ffi::Internal, 14 => Hms::Ffi::Unavailable,
    15 => Hms::Ffi::DataLoss, 16 => Hms::Ffi::Unauthenticated
  }.freeze

  def setup
    @broker = HmsTestSupport::Broker.new
    @service = @broker.test_service(transport: transport)
    @client = @broker.connect(transport: transport)
    @stub = bind_eventually(@client, "hms.test")
  end

  def teardown
    @client&.close
    @broker&.close
  end

  def test_transport_in_use
    assert_equal(transport != :socket, @client.shared_memory?)
    assert_operator @client.id, :>, 0
  end

  def test_echo_and_whoami
    assert_equal "hms.test", @stub.service_id
    assert_equal "1.0.0", @stub.version
    r = @stub.call(:echo, { seq: 42, payload: ["héllo\x00\xff".b].pack("m0") })
    assert_equal "42", r["seq"]
    assert_equal "héllo\x00\xff".b, r["payload"].unpack1("m0")
    w = @stub.call("whoami", {})
    assert_equal Process.pid, w["callerPid"]
    assert_equal @service.pid, w["pid"]
    # a JSON string goes as it is
    assert_equal "5", @stub.call(:echo, '{"seq":5}')["seq"]
  end

  def test_every_error_code_with_source_and_details
    CODES.each do |code, klass|
      e = assert_raises(klass) { @stub.call(:fail, { code: code, message: "asked #{code}" }) }
      assert_kind_of Hms::Ffi::Error, e
      assert_equal code, e.code
      assert_equal "asked #{code}", e.message
      assert_equal "hms.test", e.source
      assert_equal({ "hint" => "asked to fail" }, e.details)
      assert_match(/\A#{e.code_name}: asked #{code} \(from hms\.test\)\z/, e.describe)
    end
  end

  def test_library_errors_have_no_source
    e = assert_raises(Hms::Ffi::NotFound) { @client.bind("hms.no.such.service") }
    assert_equal "", e.source
    assert_match(/hms\.no\.such\.service/, e.message)
    e = assert_raises(Hms::Ffi::NotFound) { @client.bind("hms.test", "^2") }
    assert_equal "", e.source
    e = assert_raises(Hms::Ffi::Unimplemented) { @stub.call(:no_such_method, {}) }
    assert_equal "", e.source
    e = assert_raises(Hms::Ffi::InvalidArgument) { @stub.call(:echo, { seq: "not a number" }) }
    assert_match(/seq/, e.message)
    assert_raises(Hms::Ffi::InvalidArgument) { @stub.call(:echo, "{not json") }
  end

  def test_deadline
    t0 = HmsTestSupport.now
    e = assert_raises(Hms::Ffi::DeadlineExceeded) { @stub.call(:sleep, { ms: 1500 }, timeout: 0.2) }
    assert_operator HmsTestSupport.now - t0, :<, 3.0
    assert_equal 4, e.code
    r = @stub.call(:sleep, { ms: 1 }, timeout: 10)
    assert_operator r["timeLeftMs"].to_i, :<=, 10_000
    assert_operator r["timeLeftMs"].to_i, :>, 5_000
  end

  def test_async_value_wait_ready
    futures = (1..20).map { |i| [i, @stub.call_async(:echo, { seq: i })] }
    futures.each { |i, f| assert_equal i.to_s, f.value["seq"] }
    f = @stub.call_async(:sleep, { ms: 300 })
    refute f.ready?
    refute f.wait(0.01)
    assert f.wait(CALL_DEADLINE)
    assert f.ready?
    assert_equal f.value, f.value # cached
    assert_nil f.error
  end

  def test_async_errors_cancel_and_deadline
    f = @stub.call_async(:fail, { code: 9, message: "later" })
    e = assert_raises(Hms::Ffi::FailedPrecondition) { f.value }
    assert_equal "hms.test", e.source
    assert_same e, f.error

    f = @stub.call_async(:sleep, { ms: 10_000 })
    t0 = HmsTestSupport.now
    f.cancel
    assert f.wait(CALL_DEADLINE)
    assert_raises(Hms::Ffi::Cancelled) { f.value }
    assert_operator HmsTestSupport.now - t0, :<, 5

    f = @stub.call_async(:sleep, { ms: 1500 }, timeout: 0.2)
    assert_raises(Hms::Ffi::DeadlineExceeded) { f.value }

    f = @stub.call_async(:sleep, { ms: 2000 })
    assert_raises(Hms::Ffi::DeadlineExceeded) { f.value(0.05) } # not there yet
    f.cancel
    f.close

    assert_raises(Hms::Ffi::Unimplemented) { @stub.call_async(:nope, {}) } # before sending
  end

  def test_async_wait_does_not_hold_the_gvl
    f = @stub.call_async(:sleep, { ms: 400 })
    ticks = 0
    t = Thread.new { 20.times { ticks += 1; sleep 0.01 } }
    f.value
    t.join
    assert_equal 20, ticks
    # a blocking sync call lets other threads run too
    ticks = 0
    t = Thread.new { 20.times { ticks += 1; sleep 0.01 } }
    @stub.call(:sleep, { ms: 400 })
    t.join
    assert_equal 20, ticks
  end

  def test_oneway_in_order
    (1..5).each { |i| @stub.call_oneway(:note, { seq: i }) }
    notes = wait_until(CALL_DEADLINE, "notes") do
      n = @stub.call(:stats)["notes"] || []
      n.size >= 5 ? n : nil
    end
    assert_equal %w[1 2 3 4 5], notes.last(5).map(&:to_s)
  end

  def test_streams
    items = []
    assert_nil(@stub.stream(:count, { from: 10, n: 5 }) { |it| items << it["value"].to_i })
    assert_equal [10, 11, 12, 13, 14], items

    s = @stub.stream(:count, { from: 1, n: 4, payloadBytes: 16 })
    assert_equal 4, s.to_a.size
    s.close

    enum = @stub.stream(:count, { from: 1, n: 3 }).each
    assert_kind_of Enumerator, enum
    assert_equal %w[1 2 3], enum.map { |i| i["value"] }

    got = []
    e = assert_raises(Hms::Ffi::Aborted) do
      @stub.stream(:count, { from: 1, n: 10, failAt: 4 }) { |it| got << it["value"].to_i }
    end
    assert_equal "hms.test", e.source
    assert_equal [1, 2, 3, 4], got # items 0..failAt-1, then ABORTED

    # leaving early cancels the stream
    first = nil
    @stub.stream(:count, { from: 1, n: 1_000_000, delayUs: 1000 }) do |it|
      first = it
      break
    end
    assert_equal "1", first["value"]
    wait_until(CALL_DEADLINE, "stream cancelled") { @stub.call(:stats)["streamsCancelled"].to_i >= 1 }

    assert_raises(Hms::Ffi::DeadlineExceeded) do
      @stub.stream(:count, { from: 1, n: 1000, delayUs: 100_000 }, timeout: 0.3) { |_| nil }
    end
  end

  def test_many_threads_and_stubs
    results = Queue.new
    threads = 4.times.map do |t|
      Thread.new do
        stub = @client.bind("hms.test")
        25.times { |i| results << (stub.call(:echo, { seq: (t * 100) + i })["seq"].to_i == (t * 100) + i) }
        stub.close
      end
    end
    threads.each(&:join)
    assert_equal 100, results.size
    assert(100.times.all? { results.pop })
  end

  def test_service_killed_mid_call_is_unavailable
    f = @stub.call_async(:sleep, { ms: 15_000 })
    t = Thread.new do
      @stub2 = @client.bind("hms.test")
      @stub2.call(:sleep, { ms: 15_000 })
    rescue Hms::Ffi::Error => e
      e
    end
    sleep 0.3
    @service.kill("KILL")
    t0 = HmsTestSupport.now
    assert_raises(Hms::Ffi::Unavailable) { f.value }
    assert_kind_of Hms::Ffi::Unavailable, t.value
    assert_operator HmsTestSupport.now - t0, :<, 10
    # and the next call says so too
    assert_raises(Hms::Ffi::Error) { @stub.call(:echo, { seq: 1 }) }
  end

  def test_closed_client
    @client.close
    assert @client.closed?
    assert_raises(Hms::Ffi::FailedPrecondition) { @client.bind("hms.test") }
    e = assert_raises(Hms::Ffi::Error) { @stub.call(:echo, { seq: 1 }) }
    assert_includes [9, 14], e.code
  end

  def test_connect_block_closes
    client = nil
    v = Hms::Ffi.connect(socket_path: @broker.socket, transport: transport) do |c|
      client = c
      c.bind("hms.test").call(:echo, { seq: 3 })["seq"]
    end
    assert_equal "3", v
    assert client.closed?
    e = assert_raises(Hms::Ffi::Unavailable) do
      Hms::Ffi.connect(socket_path: File.join(@broker.dir, "nope.sock"))
    end
    assert_match(/nope\.sock/, e.message)
  end
end

class CallShmTest < Minitest::Test
  include CallTests
  def transport = :auto
end

class CallSocketTest < Minitest::Test
  include CallTests
  def transport = :socket
end
