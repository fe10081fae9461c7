# frozen_string_literal: true

module Hms
  module Ffi
    VERSION = "1.0.0"
  end
end
