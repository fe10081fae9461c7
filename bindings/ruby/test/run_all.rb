# frozen_string_literal: true

# Runs every test/*_test.rb (or the files named on the command line).
files = ARGV.empty? ? Dir[File.join(__dir__, "*_test.rb")].sort : ARGV.dup
ARGV.clear
files.each { |f| require File.expand_path(f) }
