# frozen_string_literal: true

require_relative "test_helper"
require "open3"

# What needs no broker: names, the error classes, loading.
class UnitTest < Minitest::Test
  def test_method_names
    assert_equal "getPatient", Hms::Ffi::Util.method_name(:get_patient)
    assert_equal "echo", Hms::Ffi::Util.method_name(:echo)
    assert_equal "processTransactionBatch", Hms::Ffi::Util.method_name(:process_transaction_batch)
    assert_equal "get_patient", Hms::Ffi::Util.method_name("get_patient") # Strings as they are
  end

  def test_error_classes
    names = %w[Cancelled Unknown InvalidArgument DeadlineExceeded NotFound AlreadyExists
               PermissionDenied ResourceExhausted FailedPrecondition Aborted OutOfRange
               Unimplemented Internal Unavailable DataLoss Unauthenticated]
    names.each_with_index do |name, i|
      klass = Hms::Ffi.const_get(name)
      assert_operator klass, :<, Hms::Ffi::Error
      assert_equal i + 1, klass::CODE
      assert_same klass, Hms::Ffi::Error.class_for(i + 1)
      e = klass.new("m", details: { a: 1 })
      assert_equal i + 1, e.code
      assert_equal "", e.source
      assert_equal({ "a" => "1" }, e.details)
      assert_equal "m", e.message
    end
    assert_equal "NOT_FOUND", Hms::Ffi::NotFound.new.code_name
    assert_equal "NOT_FOUND", Hms::Ffi::NotFound.new.message
    assert_same Hms::Ffi::Unknown, Hms::Ffi::Error.class_for(99)
    assert_equal "DATA_LOSS: gone (from x)", Hms::Ffi::DataLoss.new("gone", source: "x").describe
  end

  def test_caller_from_json
    c = Hms::Ffi::Caller.from_json('{"uid":1001,"gid":1001,"pid":4242,"groups":[1001,27],"name":"hms-api",' \
                                   '"authenticated":true,"subject":"alice","issuer":"hms-auth","roles":["doctor"]}')
    assert_equal [1001, 1001, 4242, [1001, 27], "hms-api"], [c.uid, c.gid, c.pid, c.groups, c.name]
    assert c.authenticated?
    assert_equal %w[alice hms-auth], [c.subject, c.issuer]
    assert c.role?("doctor")
    assert c.role?(:doctor)
    refute c.role?("nurse")
    assert_predicate c, :frozen?
    assert_predicate c.roles, :frozen?
    assert_raises(FrozenError) { c.uid = 0 }
    assert_equal "", c.host # a caller of this host
    remote = Hms::Ffi::Caller.from_json('{"uid":1001,"pid":77,"name":"hms-api","host":"host-a"}')
    assert_equal ["host-a", 77], [remote.host, remote.pid]
  end

  def test_abi_version
    assert_equal "1.1", Hms::Ffi.abi_version # hms_request_caller_json came with 1.1
    assert_equal "1.0.0", Hms::Ffi::VERSION
  end

  def test_a_missing_library_is_a_load_error
    _out, err, st = Open3.capture3({ "HMS_FFI_LIBRARY" => "/nonexistent/libhmsffi.so.1" }, RbConfig.ruby,
                                   "-I", File.expand_path("../lib", __dir__), "-e", 'require "hms/ffi"')
    refute st.success?
    assert_match(/LoadError|Could not open library/, err)
  end
end
