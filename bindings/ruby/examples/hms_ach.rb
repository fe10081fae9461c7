#!/usr/bin/env ruby
# frozen_string_literal: true

# HMS-ACH [ruby]: serves hms.ach.transaction (TransactionService, schemas/hms/ach/transaction.capnp)
# 1.0.0 like examples/ach_transaction_service.cpp: validates ACH entries, posts them to an
# in-memory ledger and assigns trace numbers, or rejects them with a NACHA return code in the
# error's details ("returnCode", "field").
#
#   ruby -I bindings/ruby/lib bindings/ruby/examples/hms_ach.rb [--socket PATH] [--threads N]
#        [--summary-every N] [--schema FILE] [--transport auto|shm|socket] [--delay-ms N]
#
# --delay-ms makes each entry take that long (a slow core banking system; the tests use it to
# kill the service with a batch in flight).
#
# Prints "hms-ach [ruby]: ready" once registered, a summary line every N entries, and stops
# cleanly on SIGTERM/SIGINT.
$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "hms/ffi"
require "optparse"

module HmsAch
  ODFI = "09100001"            # our routing number's first eight digits
  WEB_LIMIT_CENTS = 2_500_000  # $25,000 per internet-initiated entry
  WEIGHTS = [3, 7, 1].freeze

  module_function

  # ABA check: 3·d1 + 7·d2 + d3 + 3·d4 + ... over the nine digits is a multiple of ten.
  def valid_routing_number?(r)
    return false unless r.is_a?(String) && r.match?(/\A\d{9}\z/)

    r.each_char.with_index.sum { |c, i| c.to_i * WEIGHTS[i % 3] } % 10 == 0
  end

  def valid_account_number?(a)
    a.is_a?(String) && a.match?(/\A\d{1,17}\z/)
  end

  def reject(klass, message, return_code, field)
    raise klass.new(message, details: { returnCode: return_code, field: field })
  end

  # The next weekday after today (UTC), as YYYY-MM-DD.
  def next_settlement_date(now = Time.now.utc)
    t = now
    loop do
      t += 24 * 3600
      return t.strftime("%Y-%m-%d") unless t.saturday? || t.sunday?
    end
  end

  # The receiving accounts this demo bank knows: balances in cents; closed accounts refuse entries.
  class Ledger
    attr_reader :accepted, :rejected

    def initialize
      @balances = {}
      40.times { |i| @balances["40000#{1000 + i}"] = 150_000 * (i % 7) }
      @closed = %w[400001013 400001029]
      @seen = {}
      @sequence = 0
      @settlement_date = HmsAch.next_settlement_date
      @mu = Mutex.new
      @accepted = 0
      @rejected = 0
    end

    # Posts the entry of `params` (the JSON of SubmitParams) and returns SubmitResults, or
    # raises the Hms::Ffi::Error that rejects it.
    def post(params)
      e = params["entry"] || {}
      id = e["id"].to_s
      amount = e["amountCents"].to_i # Int64: a JSON string (or a number)
      kind = e["kind"] || "credit"
      entry_class = e["entryClass"] || "ppd"
      routing = e["routingNumber"].to_s
      account = e["accountNumber"].to_s
      HmsAch.reject(Hms::Ffi::InvalidArgument, "entry id is required", "R17", "id") if id.empty?
      HmsAch.reject(Hms::Ffi::InvalidArgument, "amount must be positive", "R17", "amountCents") if amount <= 0
      unless HmsAch.valid_routing_number?(routing)
        HmsAch.reject(Hms::Ffi::InvalidArgument, "routing number '#{routing}' fails the ABA check digit",
                      "R28", "routingNumber")
      end
      unless HmsAch.valid_account_number?(account)
        HmsAch.reject(Hms::Ffi::InvalidArgument, "account number must be 1-17 digits", "R04", "accountNumber")
      end
      if entry_class == "web" && amount > WEB_LIMIT_CENTS
        HmsAch.reject(Hms::Ffi::OutOfRange, "WEB entries are limited to $25,000.00", "R17", "amountCents")
      end

      @mu.synchronize do
        HmsAch.reject(Hms::Ffi::AlreadyExists, "entry '#{id}' was already accepted", "R24", "id") if @seen[id]
        balance = @balances[account]
        HmsAch.reject(Hms::Ffi::NotFound, "no account #{account}", "R03", "accountNumber") if balance.nil?
        if @closed.include?(account)
          HmsAch.reject(Hms::Ffi::FailedPrecondition, "account #{account} is closed", "R02", "accountNumber")
        end
        if kind == "debit"
          if balance < amount
            HmsAch.reject(Hms::Ffi::FailedPrecondition, "insufficient funds in #{account}", "R01", "amountCents")
          end
          @balances[account] = balance - amount
        else
          @balances[account] = balance + amount
        end
        @seen[id] = true
        @sequence += 1
        {
          id: id,
          traceNumber: format("%s%07d", ODFI, @sequence % 10_000_000),
          settlementDate: @settlement_date,
          feeCents: (entry_class == "ccd" ? 12 : 8).to_s
        }
      end
    end

    # Counts an outcome; returns [total, accepted, rejected] when `every` entries were seen.
    def count(ok, every)
      @mu.synchronize do
        ok ? @accepted += 1 : @rejected += 1
        total = @accepted + @rejected
        (total % every).zero? ? [total, @accepted, @rejected] : nil
      end
    end
  end

  def main(argv)
    opts = { socket: nil, threads: 4, every: 100, transport: :auto, delay: 0,
             schema: File.expand_path("../../../schemas/hms/ach/transaction.capnp", __dir__) }
    OptionParser.new do |o|
      o.banner = "usage: hms_ach.rb [--socket PATH] [--threads N] [--summary-every N] [--schema FILE]"
      o.on("--socket PATH") { |v| opts[:socket] = v }
      o.on("--threads N", Integer) { |v| opts[:threads] = v }
      o.on("--summary-every N", Integer) { |v| opts[:every] = v }
      o.on("--schema FILE") { |v| opts[:schema] = v }
      o.on("--delay-ms N", Integer) { |v| opts[:delay] = v / 1000.0 }
      o.on("--transport T", %w[auto shm socket]) { |v| opts[:transport] = v.to_sym }
    end.parse!(argv)
    $stdout.sync = true
    log = ->(msg) { puts "hms-ach [ruby]: #{msg}" }

    # Signals only wake the main thread through a pipe; the stop happens outside the trap.
    rd, wr = IO.pipe
    %w[TERM INT].each { |sig| Signal.trap(sig) { wr.write_nonblock(".", exception: false) } }

    client = begin
      Hms::Ffi.connect(socket_path: opts[:socket], name: "hms-ach [ruby]", transport: opts[:transport])
    rescue Hms::Ffi::Error => e
      warn "hms-ach [ruby]: #{e.describe}"
      return 1
    end
    ledger = Ledger.new
    begin
      service = client.serve("hms.ach.transaction", "1.0.0", opts[:schema], "TransactionService",
                             display_name: "ACH entries",
                             description: "ACH entry validation and posting (HMS-ACH, Ruby)",
                             concurrency: 64)
    rescue Hms::Ffi::Error => e
      warn "hms-ach [ruby]: #{e.describe}"
      client.close
      return 1
    end
    service.on(:submit) do |params, _ctx|
      sleep opts[:delay] if opts[:delay].positive?
      begin
        results = ledger.post(params)
      rescue Hms::Ffi::Error
        s = ledger.count(false, opts[:every])
        log.call("#{s[0]} entries: #{s[1]} accepted, #{s[2]} rejected") if s
        raise
      end
      s = ledger.count(true, opts[:every])
      log.call("#{s[0]} entries: #{s[1]} accepted, #{s[2]} rejected") if s
      results
    end
    workers = service.run(threads: opts[:threads], wait: false)
    log.call("serving hms.ach.transaction #{service.version}")
    log.call("ready")
    rd.read(1) # until SIGTERM/SIGINT
    service.stop
    workers.each(&:join)
    client.close
    log.call("stopped after #{ledger.accepted + ledger.rejected} entries: " \
             "#{ledger.accepted} accepted, #{ledger.rejected} rejected")
    0
  end
end

exit(HmsAch.main(ARGV)) if $PROGRAM_NAME == __FILE__
