#include "contract_check.hpp"
