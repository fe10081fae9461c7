/* The C ABI's header compiled as C11 with every warning an error (c-abi-header-c11), and a
 * program that runs without a broker: what a C user's first build meets. */
#include "hms/ffi/hms_ffi.h"

#include <stdio.h>
#include <string.h>

int main(void) {
  hms_client_options_t o;
  hms_client_options_init(&o);
  o.socket_path = "/nonexistent-hms-ffi-dir/broker.sock";
  o.reconnect = 0;
  hms_client_t* client = NULL;
  hms_error_t* err = NULL;
  const int rc = hms_client_connect(&o, &client, &err);
  if (rc == HMS_OK || client != NULL || err == NULL || hms_error_code(err) != rc) {
    fprintf(stderr, "connecting to no broker: rc %d\n", rc);
    return 1;
  }
  printf("%s: %s\n", hms_status_name(rc), hms_error_message(err));
  hms_error_free(&err);
  hms_client_free(&client);
  if (err != NULL || (hms_abi_version() >> 16) != HMS_ABI_VERSION_MAJOR) return 1;
  return strcmp(hms_status_name(HMS_OK), "OK") == 0 ? 0 : 1;
}
