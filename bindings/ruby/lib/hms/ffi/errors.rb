# frozen_string_literal: true

module Hms
  module Ffi
    # An HMS-FFI status that is not OK. `code` is gRPC's number (Integer), `code_name` its name
    # ("NOT_FOUND"), `source` the id of the service that answered with the error ("" when the
    # library or broker did), `details` a Hash of String => String.
    class Error < StandardError
      CODE = 2 # UNKNOWN, for Error itself

      attr_reader :code, :source, :details

      def initialize(message = nil, code: nil, source: "", details: {})
        @code = code || self.class::CODE
        @source = source || ""
        @details = (details || {}).to_h { |k, v| [k.to_s, v.to_s] }
        super(message || Native.hms_status_name(@code))
      end

      def code_name
        Native.hms_status_name(@code)
      end

      # "NOT_FOUND: no account 1 (from hms.ach.transaction)"
      def describe
        src = @source.to_s.empty? ? "" : " (from #{@source})"
        "#{code_name}: #{message}#{src}"
      end

      CLASSES = {} # code => class

      def self.class_for(code)
        CLASSES.fetch(code, Unknown)
      end

      # An Error of the subclass for `code`.
      def self.for(code, message, source: "", details: {})
        class_for(code).new(message, code: code, source: source, details: details)
      end
    end

    {
      Cancelled: 1, Unknown: 2, InvalidArgument: 3, DeadlineExceeded: 4, NotFound: 5,
      AlreadyExists: 6, PermissionDenied: 7, ResourceExhausted: 8, FailedPrecondition: 9,
      Aborted: 10, OutOfRange: 11, Unimplemented: 12, Internal: 13, Unavailable: 14,
      DataLoss: 15, Unauthenticated: 16
    }.each do |name, code|
      klass = Class.new(Error)
      klass.const_set(:CODE, code)
      const_set(name, klass)
      Error::CLASSES[code] = klass
    end
  end
end
