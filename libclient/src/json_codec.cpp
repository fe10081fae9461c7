#include "json_codec.hpp"
