# frozen_string_literal: true

require_relative "test_helper"
require "open3"

# The README's first Ruby example runs as pasted (from the tree's root, against a test broker).
class ReadmeTest < Minitest::Test
  include HmsTestSupport

  def test_first_example
    readme = File.read(File.expand_path("../README.md", __dir__))
    code = readme[/```ruby\n(.*?)```/m, 1]
    refute_nil code
    broker = HmsTestSupport::Broker.new
    begin
      Dir.mktmpdir do |d|
        file = File.join(d, "example.rb")
        File.write(file, code)
        out, err, st = Open3.capture3(broker.env, RbConfig.ruby, "-I", File.expand_path("../lib", __dir__), file,
                                      chdir: HmsTestSupport::ROOT)
        assert st.success?, "#{out}#{err}"
        assert_equal <<~OUT, out
          {"seq"=>"1"}
          2
          ["1", "2", "3"]
          NOT_FOUND from hms.example.echo: no entry 7 {"field"=>"code"}
        OUT
      end
    ensure
      broker.close
    end
  end
end
