#include "contract_store.hpp"
