# frozen_string_literal: true

require "json"
require_relative "ffi/version"
require_relative "ffi/native"
require_relative "ffi/errors"

module Hms
  # Ruby binding of HMS-FFI over the C ABI (libhmsffi.so.1). See bindings/ruby/README.md.
  module Ffi
    major = Native.hms_abi_version >> 16
    if major != Native::ABI_MAJOR
      raise LoadError, "#{Native::LIBRARY} has ABI major #{major}, this binding needs #{Native::ABI_MAJOR}"
    end

    TRANSPORTS = { auto: 0, shm: 1, socket: 2 }.freeze
    WAIT_MODES = { adaptive: 0, spin: 1, blocking: 2 }.freeze
    NO_BOUND = (2**63) - 1
    NO_DEADLINE_NS = 9 * 365 * 86_400 * 1_000_000_000 # time left beyond this: no deadline
    OK = 0
    DEADLINE = 4
    UNAVAILABLE_CODE = 14

    # Internal helpers shared by the classes below.
    module Util
      module_function

      # :get_patient -> "getPatient"; a String is taken as it is.
      def method_name(m)
        return m if m.is_a?(String)

        parts = m.to_s.split("_")
        parts[0] + parts[1..].map(&:capitalize).join
      end

      # Raises the Error for `code` from the hms_error_t** box `errp` (and frees it).
      def raise_error(code, errp)
        raise error_from(code, errp)
      end

      def error_from(code, errp)
        err = errp.read_pointer
        return Error.for(code, Native.hms_status_name(code)) if err.null?

        begin
          ecode = Native.hms_error_code(err)
          ecode = code if ecode.zero?
          message = Native.hms_error_message(err)
          source = Native.hms_error_source(err)
          details = {}
          k = ::FFI::MemoryPointer.new(:pointer)
          v = ::FFI::MemoryPointer.new(:pointer)
          Native.hms_error_detail_count(err).times do |i|
            next unless Native.hms_error_detail(err, i, k, v).zero?

            details[k.read_pointer.read_string.force_encoding("UTF-8")] =
              v.read_pointer.read_string.force_encoding("UTF-8")
          end
          Error.for(ecode, message&.force_encoding("UTF-8"), source: source&.force_encoding("UTF-8"),
                                                            details: details)
        ensure
          Native.hms_error_free(errp)
        end
      end

      def check(code, errp)
        raise_error(code, errp) unless code == OK
      end

      # Reads and frees a char* out-parameter (box `sp`, length box `lp`); nil when NULL.
      def take_string(sp, lp)
        p = sp.read_pointer
        return nil if p.null?

        s = p.read_bytes(lp.read(:size_t)).force_encoding("UTF-8")
        Native.hms_string_free(sp)
        s
      end

      def to_json_buf(obj)
        json = obj.is_a?(String) ? obj : JSON.generate(obj || {})
        buf = ::FFI::MemoryPointer.from_string(json)
        [buf, json.bytesize]
      end

      def parse(json)
        json.nil? ? nil : JSON.parse(json)
      end

      def ns(seconds)
        return 0 if seconds.nil?
        return NO_BOUND if seconds == Float::INFINITY

        [(seconds * 1e9).to_i, 1].max
      end

      def call_options(timeout, traceparent = nil)
        o = Native::CallOptions.new
        Native.hms_call_options_init(o)
        o[:timeout_ns] = ns(timeout) if timeout
        if traceparent
          tp = ::FFI::MemoryPointer.from_string(traceparent)
          o[:traceparent] = tp
          o.instance_variable_set(:@tp, tp) # kept alive with the struct
        end
        o
      end

      # Frees the handle in `holder[0]` with `fn` (hms_x_free(&h)) once.
      def free_handle(fn, holder)
        ptr = holder[0]
        return if ptr.nil? || ptr.null?

        holder[0] = nil
        box = ::FFI::MemoryPointer.new(:pointer)
        box.write_pointer(ptr)
        Native.send(fn, box)
      end

      def finalizer(fn, holder)
        proc { free_handle(fn, holder) }
      end
    end

    # Connects to the broker. With a block, yields the client and closes it at the end (the
    # block's value is returned); without one, returns the client (close it yourself).
    #   socket_path: the broker's socket (nil: $HMS_FFI_SOCKET, else the per-user default)
    #   name:        shown in the registry and the broker's log
    #   transport:   :auto (shared memory where possible), :shm or :socket
    #   timeout:     the default deadline of a call, in seconds (nil: the library's, 30 s)
    def self.connect(socket_path: nil, name: nil, transport: :auto, wait_mode: :adaptive,
                     timeout: nil, reconnect: true)
      client = Client.new(socket_path: socket_path, name: name, transport: transport,
                          wait_mode: wait_mode, timeout: timeout, reconnect: reconnect)
      return client unless block_given?

      begin
        yield client
      ensure
        client.close
      end
    end

    def self.abi_version
      v = Native.hms_abi_version
      "#{v >> 16}.#{v & 0xffff}"
    end

    # A connection to the broker.
    class Client
      def initialize(socket_path:, name:, transport:, wait_mode:, timeout:, reconnect:)
        o = Native::ClientOptions.new
        Native.hms_client_options_init(o)
        keep = []
        if socket_path
          keep << ::FFI::MemoryPointer.from_string(socket_path.to_s)
          o[:socket_path] = keep.last
        end
        if name
          keep << ::FFI::MemoryPointer.from_string(name.to_s)
          o[:name] = keep.last
        end
        o[:transport] = TRANSPORTS.fetch(transport) { raise ArgumentError, "transport: #{transport.inspect}" }
        o[:wait_mode] = WAIT_MODES.fetch(wait_mode) { raise ArgumentError, "wait_mode: #{wait_mode.inspect}" }
        o[:default_timeout_ms] = (timeout * 1000).to_i if timeout
        o[:reconnect] = reconnect ? 1 : 0
        out = ::FFI::MemoryPointer.new(:pointer)
        errp = ::FFI::MemoryPointer.new(:pointer)
        Util.check(Native.hms_client_connect(o, out, errp), errp)
        @holder = [out.read_pointer]
        @services = []
        @lock = Mutex.new
        ObjectSpace.define_finalizer(self, Util.finalizer(:hms_client_free, @holder))
      end

      def ptr
        p = @holder[0]
        raise FailedPrecondition.new("the client is closed") if p.nil?

        p
      end

      def id
        Native.hms_client_id(ptr)
      end

      def shared_memory?
        Native.hms_client_uses_shared_memory(ptr) == 1
      end

      def closed?
        @holder[0].nil?
      end

      # Closes the client: its services stop (their run loops end), stubs answer UNAVAILABLE.
      def close
        services = @lock.synchronize { @services.dup }
        services.each(&:stop)
        Util.free_handle(:hms_client_free, @holder)
        nil
      end

      # A Stub on the highest live version of `service` in `range` ("^1.0", "*").
      def bind(service, range = "*")
        out = ::FFI::MemoryPointer.new(:pointer)
        errp = ::FFI::MemoryPointer.new(:pointer)
        Util.check(Native.hms_client_bind(ptr, service.to_s, range&.to_s, out, errp), errp)
        Stub.new(self, out.read_pointer)
      end

      # The contract of `service` at exactly `version`, as a Hash.
      def contract(service, version)
        sp = ::FFI::MemoryPointer.new(:pointer)
        lp = ::FFI::MemoryPointer.new(:size_t)
        errp = ::FFI::MemoryPointer.new(:pointer)
        Util.check(Native.hms_client_contract_json(ptr, service.to_s, version.to_s, sp, lp, errp), errp)
        Util.parse(Util.take_string(sp, lp))
      end

      # Registers `service_id` at `version` with the interface `interface` of the Cap'n Proto
      # schema file `schema_file` and returns the Service to add handlers to and run.
      def serve(service_id, version, schema_file, interface, stream_methods: [], concurrency: nil,
                ring_bytes: nil, display_name: nil, description: nil, import_path: nil)
        o = Native::ServiceOptions.new
        Native.hms_service_options_init(o)
        keep = []
        set = lambda do |field, value|
          next if value.nil?

          keep << ::FFI::MemoryPointer.from_string(value.to_s)
          o[field] = keep.last
        end
        set.call(:display_name, display_name)
        set.call(:description, description)
        set.call(:import_path, import_path)
        names = Array(stream_methods).map { |m| Util.method_name(m) }
        set.call(:stream_methods, names.join(",")) unless names.empty?
        o[:concurrency] = concurrency if concurrency
        o[:ring_bytes] = ring_bytes if ring_bytes
        out = ::FFI::MemoryPointer.new(:pointer)
        errp = ::FFI::MemoryPointer.new(:pointer)
        Util.check(Native.hms_client_serve(ptr, service_id.to_s, version.to_s, schema_file.to_s,
                                           interface.to_s, o, out, errp), errp)
        service = Service.new(self, out.read_pointer, service_id.to_s, version.to_s)
        @lock.synchronize { @services << service }
        service
      end
    end

    # A bound service. One call at a time per stub (other threads wait their turn); bind a stub
    # per thread, or use call_async, for parallel calls.
    class Stub
      attr_reader :client

      def initialize(client, ptr)
        @client = client
        @holder = [ptr]
        ObjectSpace.define_finalizer(self, Util.finalizer(:hms_stub_free, @holder))
      end

      def ptr
        p = @holder[0]
        raise FailedPrecondition.new("the stub is closed") if p.nil?

        p
      end

      def service_id
        Native.hms_stub_service_id(ptr)
      end

      def version
        Native.hms_stub_service_version(ptr)
      end

      def close
        Util.free_handle(:hms_stub_free, @holder)
        nil
      end

      # Calls `method` (:get_patient or "getPatient") with `params` (a Hash, or a JSON String)
      # and returns the results as a Hash with String keys. `timeout` in seconds (nil: the
      # client's default). Raises an Hms::Ffi::Error subclass on failure.
      def call(method, params = {}, timeout: nil, traceparent: nil)
        buf, len = Util.to_json_buf(params)
        sp = ::FFI::MemoryPointer.new(:pointer)
        lp = ::FFI::MemoryPointer.new(:size_t)
        errp = ::FFI::MemoryPointer.new(:pointer)
        code = Native.hms_stub_call_json(ptr, Util.method_name(method), buf, len,
                                         Util.call_options(timeout, traceparent), sp, lp, errp)
        Util.check(code, errp)
        Util.parse(Util.take_string(sp, lp)) || {}
      end

      # Sends a call that expects no reply; returns once it is in the channel.
      def call_oneway(method, params = {}, timeout: nil, traceparent: nil)
        buf, len = Util.to_json_buf(params)
        errp = ::FFI::MemoryPointer.new(:pointer)
        code = Native.hms_stub_call_oneway_json(ptr, Util.method_name(method), buf, len,
                                                Util.call_options(timeout, traceparent), errp)
        Util.check(code, errp)
        nil
      end

      # Sends a call and returns a Future at once.
      def call_async(method, params = {}, timeout: nil, traceparent: nil)
        buf, len = Util.to_json_buf(params)
        out = ::FFI::MemoryPointer.new(:pointer)
        errp = ::FFI::MemoryPointer.new(:pointer)
        code = Native.hms_stub_call_async_json(ptr, Util.method_name(method), buf, len,
                                               Util.call_options(timeout, traceparent), out, errp)
        Util.check(code, errp)
        Future.new(out.read_pointer)
      end

      # A server stream. With a block, yields each item (a Hash) and returns nil once the stream
      # ended (an error ending it is raised); without one, returns a Stream (an Enumerable).
      def stream(method, params = {}, timeout: nil, traceparent: nil, &block)
        buf, len = Util.to_json_buf(params)
        out = ::FFI::MemoryPointer.new(:pointer)
        errp = ::FFI::MemoryPointer.new(:pointer)
        code = Native.hms_stub_open_stream_json(ptr, Util.method_name(method), buf, len,
                                                Util.call_options(timeout, traceparent), out, errp)
        Util.check(code, errp)
        s = Stream.new(out.read_pointer)
        return s unless block

        begin
          s.each(&block)
        ensure
          s.close
        end
        nil
      end
    end

    # The result of an async call, to come. Waits use the future's completion fd with IO.select
    # (no thread per call). Thread-safe.
    class Future
      def initialize(ptr)
        @holder = [ptr]
        @lock = Mutex.new
        @done = false
        ObjectSpace.define_finalizer(self, Util.finalizer(:hms_future_free, @holder))
        fd = Native.hms_future_fd(ptr)
        @io = fd >= 0 ? IO.for_fd(fd, autoclose: false) : nil
      end

      # Whether the result is there (value will not wait).
      def ready?
        return true if @done

        p = @holder[0]
        p.nil? || Native.hms_future_poll(p) == 1
      end

      # Waits up to `timeout` seconds (nil: until it is there); true when the result is there.
      def wait(timeout = nil)
        deadline = timeout && (Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout)
        loop do
          return true if ready?

          left = deadline && (deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC))
          return false if left && left <= 0

          if @io
            IO.select([@io], nil, nil, left ? [left, 1.0].min : 1.0)
          else
            p = @holder[0]
            Native.hms_future_wait(p, Util.ns(left ? [left, 0.2].min : 0.2)) if p
          end
        end
      end

      # The results (a Hash), waiting for them; raises the call's error. May be called again.
      def value(timeout = nil)
        unless @done
          raise DeadlineExceeded.new("the result is not there yet") if timeout && !wait(timeout)

          wait
          @lock.synchronize { fetch unless @done }
        end
        raise @error if @error

        @result
      end

      # The error the call ended with, or nil (waits for the result).
      def error
        value
        nil
      rescue Error => e
        e
      end

      # Stops the call: the future ends with Cancelled unless the result came first.
      def cancel
        p = @holder[0]
        Native.hms_future_cancel(p) if p && !@done
        nil
      end

      def close
        @lock.synchronize do
          @io = nil
          Util.free_handle(:hms_future_free, @holder)
        end
        nil
      end

      private

      def fetch
        p = @holder[0]
        if p.nil?
          @error = Cancelled.new("the future was closed")
        else
          sp = ::FFI::MemoryPointer.new(:pointer)
          lp = ::FFI::MemoryPointer.new(:size_t)
          errp = ::FFI::MemoryPointer.new(:pointer)
          code = Native.hms_future_result_json(p, sp, lp, errp)
          if code == OK
            @result = Util.parse(Util.take_string(sp, lp)) || {}
          else
            @error = Util.error_from(code, errp)
          end
          @io = nil
          Util.free_handle(:hms_future_free, @holder)
        end
        @done = true
      end
    end

    # A server stream's items (Hashes). Enumerable; `close` cancels one not finished (a stream
    # read to its end, or to its error, is closed by itself).
    class Stream
      include Enumerable

      def initialize(ptr)
        @holder = [ptr]
        ObjectSpace.define_finalizer(self, Util.finalizer(:hms_stream_free, @holder))
      end

      # The next item, or nil at the end of the stream; raises the error that ended it.
      def next_item
        p = @holder[0]
        return nil if p.nil?

        sp = ::FFI::MemoryPointer.new(:pointer)
        lp = ::FFI::MemoryPointer.new(:size_t)
        errp = ::FFI::MemoryPointer.new(:pointer)
        code = Native.hms_stream_next_json(p, sp, lp, errp)
        unless code == OK
          close # the stream ended with an error: nothing more to read
          Util.raise_error(code, errp)
        end
        item = Util.parse(Util.take_string(sp, lp))
        close if item.nil? # the end
        item
      end

      def each
        return enum_for(:each) unless block_given?

        while (item = next_item)
          yield item
        end
        nil
      end

      def cancel
        p = @holder[0]
        Native.hms_stream_cancel(p) if p
        nil
      end

      def close
        Util.free_handle(:hms_stream_free, @holder)
        nil
      end
    end

    # Who made a request (docs/security.md), frozen: the identity of the calling process as the
    # kernel told the broker (uid, gid, pid, groups), its client name, and the claims of the token
    # the broker verified (authenticated, subject, issuer) with the roles its access policy gives
    # the caller. The caller cannot alter any of it. Without a policy on the broker,
    # authenticated is false, subject and issuer are "" and roles is empty. host is the name of
    # the caller's host when a gateway brought the call in from another host (docs/gateway.md), as
    # that link's TLS certificate names it; uid, pid, name, subject and issuer are then as that
    # host knows them. "" for a caller of this host.
    Caller = Struct.new(:uid, :gid, :pid, :groups, :name, :authenticated, :subject, :issuer, :roles,
                        :host, keyword_init: true) do
      # Whether the broker's policy gives the caller the role `name` (a String or Symbol).
      def role?(name)
        roles.include?(name.to_s)
      end

      alias_method :authenticated?, :authenticated

      # The Caller of hms_request_caller_json's object (a JSON String), frozen.
      def self.from_json(text)
        j = text.nil? || text.empty? ? {} : JSON.parse(text.dup.force_encoding("UTF-8").scrub)
        new(uid: j["uid"].to_i, gid: j["gid"].to_i, pid: j["pid"].to_i,
            groups: Array(j["groups"]).map(&:to_i).freeze, name: j["name"].to_s.freeze,
            authenticated: j["authenticated"] == true, subject: j["subject"].to_s.freeze,
            issuer: j["issuer"].to_s.freeze, roles: Array(j["roles"]).map { |r| r.to_s.freeze }.freeze,
            host: j["host"].to_s.freeze).freeze
      end
    end

    # What a handler knows of the call it answers.
    class Context
      attr_reader :method, :caller_pid, :caller_uid, :caller_name, :caller_json, :traceparent

      def initialize(req, method)
        @req = req
        @method = method
        @caller_pid = Native.hms_request_caller_pid(req)
        @caller_uid = Native.hms_request_caller_uid(req)
        @caller_name = Native.hms_request_caller_name(req)&.force_encoding("UTF-8")
        # Copied now (the library's string lives as long as the request), parsed at first use.
        @caller_json = Native.hms_request_caller_json(req)&.force_encoding("UTF-8")
        @caller = nil
        @traceparent = Native.hms_request_traceparent(req)
        left = Native.hms_request_time_left_ns(req)
        # The header says INT64_MAX means none; libhmsffi 1.0 hands out "ten years" instead for a
        # caller without a bound, so anything beyond NO_DEADLINE_NS counts as none too.
        @deadline = left >= NO_DEADLINE_NS ? nil : Process.clock_gettime(Process::CLOCK_MONOTONIC) + (left / 1e9)
      end

      # Who made the request, a frozen Hms::Ffi::Caller (`ctx.caller.role?("doctor")`). Shadows
      # Kernel#caller (the backtrace) on a Context.
      def caller
        @caller ||= Caller.from_json(@caller_json)
      end

      # Seconds left until the caller's deadline (nil: none).
      def time_left
        @deadline && [@deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0.0].max
      end

      # Whether the caller cancelled, its deadline passed or it went away.
      def cancelled?
        @req.nil? || Native.hms_request_cancelled(@req) == 1
      end

      def finish! # :nodoc: the request was answered
        @req = nil
      end
    end

    # A stream handler's output: `out << item` sends one item (a Hash).
    class StreamWriter
      # Raised by << once the caller stopped reading; ends the handler (caught by the Service).
      class Closed < StandardError; end

      attr_reader :sent

      def initialize(req)
        @req = req
        @sent = 0
      end

      def <<(item)
        buf, len = Util.to_json_buf(item)
        errp = ::FFI::MemoryPointer.new(:pointer)
        code = Native.hms_request_stream_json(@req, buf, len, errp)
        unless code == OK
          e = Util.error_from(code, errp)
          raise Closed, e.message if [1, 14].include?(code)

          raise e
        end
        @sent += 1
        self
      end
      alias push <<
    end

    # A service registered by Client#serve. Handlers are blocks; requests are pulled with
    # hms_service_next on Ruby threads by `run` (no calls from C into Ruby).
    class Service
      attr_reader :id, :version

      def initialize(client, ptr, id, version)
        @client = client
        @holder = [ptr]
        @id = id
        @version = version
        @handlers = {}
        @stream_handlers = {}
        @stopped = false
        @lock = Mutex.new
        ObjectSpace.define_finalizer(self, Util.finalizer(:hms_service_free, @holder))
      end

      # service.on(:echo) { |params, ctx| {...} } : the block gets the params (a Hash with String
      # keys) and a Context, and returns the results (a Hash). Raise an Hms::Ffi::Error subclass
      # to answer with its code, message and details; any other exception answers INTERNAL.
      def on(method, &block)
        raise ArgumentError, "a block is required" unless block

        @handlers[Util.method_name(method)] = block
        self
      end

      # service.on_stream(:count) { |params, ctx, out| out << {...} } : a server stream (name
      # the method in stream_methods: when serving). Returning ends it; raising ends it with
      # the error.
      def on_stream(method, &block)
        raise ArgumentError, "a block is required" unless block

        @stream_handlers[Util.method_name(method)] = block
        self
      end

      def stopped?
        @stopped
      end

      # Serves on `threads` Ruby threads until `stop` (or the client closes). Blocks; returns
      # the number of requests answered. run(threads: 4, wait: false) returns the threads.
      def run(threads: 4, wait: true)
        @answered = 0
        workers = Array.new(threads) { Thread.new { serve_loop } }
        return workers unless wait

        workers.each(&:join)
        @answered
      end

      # Takes and answers one request, waiting up to `timeout` seconds; false when none came.
      def serve_one(timeout = nil)
        p = @holder[0]
        return false if p.nil? || @stopped

        out = ::FFI::MemoryPointer.new(:pointer)
        errp = ::FFI::MemoryPointer.new(:pointer)
        code = Native.hms_service_next(p, timeout.nil? ? -1 : Util.ns(timeout), out, errp)
        case code
        when OK
          handle(out)
          true
        when DEADLINE
          Native.hms_error_free(errp)
          false
        when UNAVAILABLE_CODE
          Native.hms_error_free(errp)
          @stopped = true
          false
        else
          Util.raise_error(code, errp)
        end
      end

      # Leaves the registry; run loops end. Requests not answered yet get UNAVAILABLE.
      def stop
        @lock.synchronize do
          return if @stopped && @holder[0].nil?

          @stopped = true
          p = @holder[0]
          Native.hms_service_stop(p) if p
        end
        nil
      end

      # Stops and frees the service (after its run loops ended).
      def close
        stop
        Util.free_handle(:hms_service_free, @holder)
      end

      private

      def serve_loop
        until @stopped
          answered = serve_one(0.25)
          @lock.synchronize { @answered += 1 } if answered
        end
      rescue Error
        @stopped = true
      end

      def handle(box)
        req = box.read_pointer
        method = Native.hms_request_method(req)
        ctx = Context.new(req, method)
        stream = Native.hms_request_is_stream(req) == 1
        begin
          params = read_params(req)
          if stream
            handler = @stream_handlers[method] or raise Unimplemented.new("no stream handler for #{method}")
            writer = StreamWriter.new(req)
            begin
              handler.call(params, ctx, writer)
            rescue StreamWriter::Closed
              nil # the caller stopped reading: end the stream
            end
            reply_json(box, nil)
          else
            handler = @handlers[method] or raise Unimplemented.new("no handler for #{method}")
            result = handler.call(params, ctx)
            reply_json(box, result.nil? ? {} : result)
          end
        rescue Error => e
          reply_error(box, e.code, e.message, e.details)
        rescue StandardError, ScriptError => e
          reply_error(box, Internal::CODE, "#{e.class}: #{e.message}", {})
        ensure
          ctx.finish!
          Native.hms_request_free(box) unless box.read_pointer.null?
        end
      end

      def read_params(req)
        sp = ::FFI::MemoryPointer.new(:pointer)
        lp = ::FFI::MemoryPointer.new(:size_t)
        errp = ::FFI::MemoryPointer.new(:pointer)
        Util.check(Native.hms_request_params_json(req, sp, lp, errp), errp)
        Util.parse(Util.take_string(sp, lp)) || {}
      end

      def reply_json(box, result)
        errp = ::FFI::MemoryPointer.new(:pointer)
        if result.nil?
          code = Native.hms_request_reply_json(box, nil, 0, errp)
        else
          buf, len = Util.to_json_buf(result)
          code = Native.hms_request_reply_json(box, buf, len, errp)
        end
        Native.hms_error_free(errp) unless code == OK # the caller gets INTERNAL or is gone
        code
      end

      def reply_error(box, code, message, details)
        errp = ::FFI::MemoryPointer.new(:pointer)
        djson = details.nil? || details.empty? ? nil : JSON.generate(details.to_h { |k, v| [k.to_s, v.to_s] })
        rc = Native.hms_request_reply_error(box, code, message.to_s, djson, errp)
        Native.hms_error_free(errp) unless rc == OK
        rc
      end
    end
  end
end
