# frozen_string_literal: true

require "ffi"

module Hms
  module Ffi
    # The C ABI of libhmsffi.so.1 (hms/ffi/hms_ffi.h), declared with ruby-ffi. Functions the
    # header marks BLOCKING are attached with `blocking: true`, so ruby-ffi releases the GVL
    # around them. The library never calls back into Ruby.
    module Native
      extend ::FFI::Library

      LIBRARY = ENV.fetch("HMS_FFI_LIBRARY", "") == "" ? "libhmsffi.so.1" : ENV["HMS_FFI_LIBRARY"]
      ffi_lib LIBRARY

      ABI_MAJOR = 1

      class ClientOptions < ::FFI::Struct
        layout :socket_path, :pointer,
               :name, :pointer,
               :transport, :int,
               :wait_mode, :int,
               :default_timeout_ms, :int64,
               :reconnect, :int
      end

      class CallOptions < ::FFI::Struct
        layout :timeout_ns, :int64,
               :traceparent, :pointer,
               :pretty, :int
      end

      class ServiceOptions < ::FFI::Struct
        layout :display_name, :pointer,
               :description, :pointer,
               :ring_bytes, :uint32,
               :concurrency, :uint32,
               :import_path, :pointer,
               :stream_methods, :pointer
      end

      B = { blocking: true }.freeze

      attach_function :hms_abi_version, [], :uint32
      attach_function :hms_status_name, [:int], :string

      attach_function :hms_error_code, [:pointer], :int
      attach_function :hms_error_message, [:pointer], :string
      attach_function :hms_error_source, [:pointer], :string
      attach_function :hms_error_detail_count, [:pointer], :size_t
      attach_function :hms_error_detail, %i[pointer size_t pointer pointer], :int
      attach_function :hms_error_details_json, [:pointer], :string
      attach_function :hms_error_free, [:pointer], :void
      attach_function :hms_string_free, [:pointer], :void

      attach_function :hms_client_options_init, [ClientOptions.by_ref], :void
      attach_function :hms_client_connect, [ClientOptions.by_ref, :pointer, :pointer], :int, **B
      attach_function :hms_client_free, [:pointer], :void, **B
      attach_function :hms_client_id, [:pointer], :uint64
      attach_function :hms_client_uses_shared_memory, [:pointer], :int
      attach_function :hms_client_contract_json, %i[pointer string string pointer pointer pointer], :int, **B

      attach_function :hms_call_options_init, [CallOptions.by_ref], :void

      attach_function :hms_client_bind, %i[pointer string string pointer pointer], :int, **B
      attach_function :hms_stub_free, [:pointer], :void
      attach_function :hms_stub_service_id, [:pointer], :string
      attach_function :hms_stub_service_version, [:pointer], :string
      attach_function :hms_stub_call_json,
                      [:pointer, :string, :pointer, :size_t, CallOptions.by_ref, :pointer, :pointer, :pointer],
                      :int, **B
      attach_function :hms_stub_call_oneway_json,
                      [:pointer, :string, :pointer, :size_t, CallOptions.by_ref, :pointer], :int, **B
      attach_function :hms_stub_call_async_json,
                      [:pointer, :string, :pointer, :size_t, CallOptions.by_ref, :pointer, :pointer], :int, **B

      attach_function :hms_future_poll, [:pointer], :int
      attach_function :hms_future_wait, %i[pointer int64], :int, **B
      attach_function :hms_future_fd, [:pointer], :int
      attach_function :hms_future_cancel, [:pointer], :int
      attach_function :hms_future_result_json, %i[pointer pointer pointer pointer], :int, **B
      attach_function :hms_future_free, [:pointer], :void

      attach_function :hms_stub_open_stream_json,
                      [:pointer, :string, :pointer, :size_t, CallOptions.by_ref, :pointer, :pointer], :int, **B
      attach_function :hms_stream_next_json, %i[pointer pointer pointer pointer], :int, **B
      attach_function :hms_stream_cancel, [:pointer], :int
      attach_function :hms_stream_free, [:pointer], :void, **B

      attach_function :hms_service_options_init, [ServiceOptions.by_ref], :void
      attach_function :hms_client_serve,
                      [:pointer, :string, :string, :string, :string, ServiceOptions.by_ref, :pointer, :pointer],
                      :int, **B
      attach_function :hms_service_next, %i[pointer int64 pointer pointer], :int, **B
      attach_function :hms_service_fd, [:pointer], :int
      attach_function :hms_service_stop, [:pointer], :int, **B
      attach_function :hms_service_free, [:pointer], :void, **B

      attach_function :hms_request_method, [:pointer], :string
      attach_function :hms_request_is_stream, [:pointer], :int
      attach_function :hms_request_caller_pid, [:pointer], :int32
      attach_function :hms_request_caller_uid, [:pointer], :uint32
      attach_function :hms_request_caller_name, [:pointer], :string
      attach_function :hms_request_caller_json, [:pointer], :string # since ABI 1.1
      attach_function :hms_request_time_left_ns, [:pointer], :int64
      attach_function :hms_request_traceparent, [:pointer], :string
      attach_function :hms_request_cancelled, [:pointer], :int
      attach_function :hms_request_params_json, %i[pointer pointer pointer pointer], :int
      attach_function :hms_request_reply_json, %i[pointer pointer size_t pointer], :int
      attach_function :hms_request_reply_error, %i[pointer int string string pointer], :int
      attach_function :hms_request_stream_json, %i[pointer pointer size_t pointer], :int, **B
      attach_function :hms_request_free, [:pointer], :void
    end
  end
end
