# frozen_string_literal: true

require_relative "test_helper"
require "open3"

# The seed's §4.3: HMS-ACH in Ruby (examples/hms_ach.rb) serving hms.ach.transaction, driven by
# the C++ HMS-ETL batch (all entries in flight at once).
class AchTest < Minitest::Test
  include HmsTestSupport

  ACH = File.expand_path("../examples/hms_ach.rb", __dir__)
  CPP_ACH = ENV.fetch("HMS_FFI_CPP_ACH", File.join(BUILD, "examples", "hms-example-ach_transaction_service"))

  def setup
    @brokers = []
  end

  def teardown
    @brokers.each(&:close)
  end

  def broker
    b = HmsTestSupport::Broker.new
    @brokers << b
    b
  end

  def start_ruby_ach(b, *args, transport: :auto)
    ach = b.spawn(["/usr/bin/env", RbConfig.ruby, ACH, "--socket", b.socket, *args], transport: transport)
    ach.wait_for(/\Ahms-ach \[ruby\]: ready\z/)
    ach
  end

  def etl(b, count, transport: :auto)
    out, err, st = Open3.capture3(b.env(transport), ETL, "--count", count.to_s)
    [out, err, st]
  end

  # "hms-etl: 200 entries in 87.3 ms: 168 accepted, 32 rejected" and the rejection lines.
  def summary(out)
    m = out.match(/hms-etl: (\d+) entries in [\d.]+ ms: (\d+) accepted, (\d+) rejected/)
    assert m, "no summary in:\n#{out}"
    rejections = out.scan(/^hms-etl: rejected (\S+) (\S+)\s+(\d+)$/).to_h { |c, r, n| ["#{c} #{r}", n.to_i] }
    { total: m[1].to_i, accepted: m[2].to_i, rejected: m[3].to_i, rejections: rejections }
  end

  def test_cpp_etl_against_ruby_ach_matches_the_cpp_ach
    %i[auto socket].each do |transport|
      b = broker
      ach = start_ruby_ach(b, "--summary-every", "50", transport: transport)
      out, err, st = etl(b, 200, transport: transport)
      assert st.success?, "etl failed (#{st.exitstatus}):\n#{out}#{err}"
      ruby = summary(out)
      assert_equal 200, ruby[:total]
      assert_equal 200, ruby[:accepted] + ruby[:rejected]
      assert_operator ruby[:accepted], :>, 100
      assert_match(/source: hms\.ach\.transaction\] \[returnCode=R\d\d\] \[field=\w+\]/, out)
      wait_until(CALL_DEADLINE, "ACH summary line") { ach.count(/: 200 entries: \d+ accepted/) == 1 }
      assert_equal 4, ach.count(/hms-ach \[ruby\]: \d+ entries: \d+ accepted, \d+ rejected/)

      # the same batch again: every accepted entry is now a duplicate (R24)
      out, err, st = etl(b, 200, transport: transport)
      assert st.success?, "#{out}#{err}"
      again = summary(out)
      assert_equal 200, again[:total]
      # (credits posted by the first run let a few debits through that failed then)
      assert_equal ruby[:accepted], again[:rejections]["ALREADY_EXISTS R24"]

      ach.kill("TERM")
      assert ach.wait(CALL_DEADLINE)&.success?, "hms_ach.rb did not stop cleanly:\n#{ach.output}"
      assert_match(/stopped after 400 entries/, ach.output)

      # the C++ HMS-ACH on the same batch gives the same outcomes
      b2 = broker
      cpp = b2.spawn([CPP_ACH], transport: transport)
      cpp.wait_for(/serving hms.ach.transaction/)
      out, err, st = etl(b2, 200, transport: transport)
      assert st.success?, "#{out}#{err}"
      assert_equal summary(out), ruby
    end
  end

  def test_ruby_ach_killed_mid_batch
    b = broker
    ach = start_ruby_ach(b, "--delay-ms", "20", "--summary-every", "20", "--threads", "2")
    Open3.popen3(b.env, ETL, "--count", "300") do |_in, out, err, wt|
      ach.wait_for(/: 40 entries:/, CALL_DEADLINE)
      ach.kill("KILL")
      ach.wait(CALL_DEADLINE)
      assert wt.join(60), "the ETL did not finish"
      text = out.read
      errs = err.read
      st = wt.value
      assert st.success?, "ETL (#{st.exitstatus}) lost or doubled entries:\n#{text}#{errs}"
      s = summary(text)
      assert_equal 300, s[:total]
      assert_equal 300, s[:accepted] + s[:rejected]
      unavailable = s[:rejections].select { |k, _| k.start_with?("UNAVAILABLE") }.values.sum
      assert_operator unavailable, :>, 0, text
      served = ach.lines.grep(/: (\d+) entries:/).map { |l| l[/: (\d+) entries/, 1].to_i }.max
      # what the ETL saw answered is no more than the service answered before it died (its last
      # summary line, plus the entries after it: up to 19 more, and 2 on the handler threads)
      assert_operator s[:total] - unavailable, :<=, served + 19 + 2, text
      puts "\n#{text}" if ENV["VERBOSE"]
      # the 40th entry was counted before its answer was sent: up to 2 (the handler threads)
      # counted ones may have died with the service
      assert_operator s[:total] - unavailable, :>=, 40 - 2, text
    end
  end
end
