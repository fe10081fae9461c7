// Whether the broker a client reached is one it should talk to. Anyone who can create a socket at
// the path a client uses (a shared /tmp, a directory another user owns or can write) could stand
// in for the broker and be handed the client's registrations, its calls' channels and the
// descriptors they carry. So before its hello a client checks, from the kernel's word:
//
//   - the process listening is run by a trusted uid (SO_PEERCRED): root, the client's own
//     effective uid, or one the configuration names (ClientOptions::brokerUids,
//     $HMS_FFI_BROKER_UID);
//   - the socket's directory belongs to a trusted uid and its group and others cannot write it
//     (unless it is sticky, as /tmp is, and the socket itself belongs to a trusted uid): nobody
//     else can have put the socket there or can replace it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi::detail {

// Root, this process's effective uid, `configured`, and the entries of $HMS_FFI_BROKER_UID
// (comma-separated uids or user names). INVALID_ARGUMENT for an entry that is neither.
Result<std::vector<uid_t>> trustedBrokerUids(const std::vector<uid_t>& configured);

// OK when the broker connected at `socketFd` (the socket at `socketPath`) passes both checks
// above; PERMISSION_DENIED (an untrusted broker uid) or FAILED_PRECONDITION (an unsafe socket
// directory) saying what was found and what to do otherwise.
Status checkBroker(int socketFd, const std::string& socketPath, const std::vector<uid_t>& trusted);

// The directory check alone (the broker warns at startup when its clients would refuse it).
Status checkSocketDirectory(const std::string& socketPath, const std::vector<uid_t>& trusted);

}  // namespace hms::ffi::detail
