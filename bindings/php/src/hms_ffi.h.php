<?php
// GENERATED from libclient/include/hms/ffi/hms_ffi.h (ABI 1.0) for FFI::cdef(): comments,
// preprocessor lines and HMS_FFI_API removed. Regenerate with tools/gen-cdef.sh; tests check it
// still matches the header (CdefTest).
return <<<'CDEF'
uint32_t hms_abi_version(void);
typedef enum hms_status {
  HMS_OK = 0,
  HMS_CANCELLED = 1,
  HMS_UNKNOWN = 2,
  HMS_INVALID_ARGUMENT = 3,
  HMS_DEADLINE_EXCEEDED = 4,
  HMS_NOT_FOUND = 5,
  HMS_ALREADY_EXISTS = 6,
  HMS_PERMISSION_DENIED = 7,
  HMS_RESOURCE_EXHAUSTED = 8,
  HMS_FAILED_PRECONDITION = 9,
  HMS_ABORTED = 10,
  HMS_OUT_OF_RANGE = 11,
  HMS_UNIMPLEMENTED = 12,
  HMS_INTERNAL = 13,
  HMS_UNAVAILABLE = 14,
  HMS_DATA_LOSS = 15,
  HMS_UNAUTHENTICATED = 16
} hms_status_t;
const char* hms_status_name(int code);
typedef struct hms_error hms_error_t;
int hms_error_code(const hms_error_t* err);
const char* hms_error_message(const hms_error_t* err);
const char* hms_error_source(const hms_error_t* err);
size_t hms_error_detail_count(const hms_error_t* err);
int hms_error_detail(const hms_error_t* err, size_t i, const char** key,
                                 const char** value);
const char* hms_error_details_json(const hms_error_t* err);
void hms_error_free(hms_error_t** err);
void hms_string_free(char** s);
typedef struct hms_client hms_client_t;
typedef enum hms_transport {
  HMS_TRANSPORT_AUTO = 0,
  HMS_TRANSPORT_SHM = 1,
  HMS_TRANSPORT_SOCKET = 2
} hms_transport_t;
typedef enum hms_wait_mode {
  HMS_WAIT_ADAPTIVE = 0,
  HMS_WAIT_SPIN = 1,
  HMS_WAIT_BLOCKING = 2
} hms_wait_mode_t;
typedef struct hms_client_options {
  const char* socket_path;
  const char* name;
  hms_transport_t transport;
  hms_wait_mode_t wait_mode;
  int64_t default_timeout_ms;
  int reconnect;
} hms_client_options_t;
void hms_client_options_init(hms_client_options_t* options);
int hms_client_connect(const hms_client_options_t* options, hms_client_t** out,
                                   hms_error_t** err);
void hms_client_free(hms_client_t** client);
uint64_t hms_client_id(const hms_client_t* client);
int hms_client_uses_shared_memory(const hms_client_t* client);
int hms_client_contract_json(hms_client_t* client, const char* service_id,
                                         const char* version, char** json, size_t* json_len,
                                         hms_error_t** err);
typedef struct hms_call_options {
  int64_t timeout_ns;
  const char* traceparent;
  int pretty;
} hms_call_options_t;
void hms_call_options_init(hms_call_options_t* options);
typedef struct hms_stub hms_stub_t;
typedef struct hms_future hms_future_t;
typedef struct hms_stream hms_stream_t;
int hms_client_bind(hms_client_t* client, const char* service_id, const char* range,
                                hms_stub_t** out, hms_error_t** err);
void hms_stub_free(hms_stub_t** stub);
const char* hms_stub_service_id(const hms_stub_t* stub);
const char* hms_stub_service_version(const hms_stub_t* stub);
int hms_stub_call_json(hms_stub_t* stub, const char* method, const char* params,
                                   size_t params_len, const hms_call_options_t* options,
                                   char** result, size_t* result_len, hms_error_t** err);
int hms_stub_call_oneway_json(hms_stub_t* stub, const char* method,
                                          const char* params, size_t params_len,
                                          const hms_call_options_t* options, hms_error_t** err);
int hms_stub_call_async_json(hms_stub_t* stub, const char* method,
                                         const char* params, size_t params_len,
                                         const hms_call_options_t* options, hms_future_t** out,
                                         hms_error_t** err);
int hms_future_poll(const hms_future_t* future);
int hms_future_wait(hms_future_t* future, int64_t timeout_ns);
int hms_future_fd(hms_future_t* future);
int hms_future_cancel(hms_future_t* future);
int hms_future_result_json(hms_future_t* future, char** result, size_t* result_len,
                                       hms_error_t** err);
void hms_future_free(hms_future_t** future);
int hms_stub_open_stream_json(hms_stub_t* stub, const char* method,
                                          const char* params, size_t params_len,
                                          const hms_call_options_t* options, hms_stream_t** out,
                                          hms_error_t** err);
int hms_stream_next_json(hms_stream_t* stream, char** item, size_t* item_len,
                                     hms_error_t** err);
int hms_stream_cancel(hms_stream_t* stream);
void hms_stream_free(hms_stream_t** stream);
typedef struct hms_reply hms_reply_t;
int hms_stub_loan_raw(hms_stub_t* stub, const char* method,
                                  const hms_call_options_t* options, void** data,
                                  size_t* capacity, hms_error_t** err);
int hms_stub_send_raw(hms_stub_t* stub, size_t size, hms_reply_t** reply,
                                  hms_error_t** err);
void hms_stub_abandon_raw(hms_stub_t* stub);
const void* hms_reply_data(const hms_reply_t* reply);
size_t hms_reply_size(const hms_reply_t* reply);
void hms_reply_free(hms_reply_t** reply);
typedef struct hms_service hms_service_t;
typedef struct hms_request hms_request_t;
typedef struct hms_service_options {
  const char* display_name;
  const char* description;
  uint32_t ring_bytes;
  uint32_t concurrency;
  const char* import_path;
  const char* stream_methods;
} hms_service_options_t;
void hms_service_options_init(hms_service_options_t* options);
int hms_client_serve(hms_client_t* client, const char* service_id,
                                 const char* version, const char* schema_file,
                                 const char* interface_name,
                                 const hms_service_options_t* options, hms_service_t** out,
                                 hms_error_t** err);
int hms_service_next(hms_service_t* service, int64_t timeout_ns,
                                 hms_request_t** out, hms_error_t** err);
int hms_service_fd(hms_service_t* service);
int hms_service_stop(hms_service_t* service);
void hms_service_free(hms_service_t** service);
const char* hms_request_method(const hms_request_t* request);
int hms_request_is_stream(const hms_request_t* request);
int32_t hms_request_caller_pid(const hms_request_t* request);
uint32_t hms_request_caller_uid(const hms_request_t* request);
const char* hms_request_caller_name(const hms_request_t* request);
const char* hms_request_caller_json(const hms_request_t* request);
int64_t hms_request_time_left_ns(const hms_request_t* request);
const char* hms_request_traceparent(const hms_request_t* request);
int hms_request_cancelled(const hms_request_t* request);
int hms_request_params_json(const hms_request_t* request, char** json,
                                        size_t* json_len, hms_error_t** err);
const void* hms_request_params_data(const hms_request_t* request);
size_t hms_request_params_size(const hms_request_t* request);
int hms_request_loan_raw(hms_request_t* request, void** data, size_t* capacity,
                                     hms_error_t** err);
int hms_request_reply_raw(hms_request_t** request, size_t size, hms_error_t** err);
int hms_request_reply_json(hms_request_t** request, const char* results,
                                       size_t results_len, hms_error_t** err);
int hms_request_reply_error(hms_request_t** request, int code, const char* message,
                                        const char* details_json, hms_error_t** err);
int hms_request_stream_json(hms_request_t* request, const char* item,
                                        size_t item_len, hms_error_t** err);
void hms_request_free(hms_request_t** request);
typedef struct hms_publisher hms_publisher_t;
typedef struct hms_subscription hms_subscription_t;
int hms_client_advertise_json(hms_client_t* client, const char* topic_id,
                                          const char* schema_file, const char* type_name,
                                          uint32_t slots, hms_publisher_t** out,
                                          hms_error_t** err);
int hms_publisher_publish_json(hms_publisher_t* publisher, const char* message,
                                           size_t message_len, hms_error_t** err);
int hms_publisher_loan_raw(hms_publisher_t* publisher, void** data, size_t* capacity,
                                       hms_error_t** err);
int hms_publisher_publish_raw(hms_publisher_t* publisher, size_t size,
                                          hms_error_t** err);
void hms_publisher_abandon_raw(hms_publisher_t* publisher);
size_t hms_publisher_subscribers(const hms_publisher_t* publisher);
void hms_publisher_free(hms_publisher_t** publisher);
int hms_client_subscribe_json(hms_client_t* client, const char* topic_id,
                                          int64_t wait_ms, hms_subscription_t** out,
                                          hms_error_t** err);
int hms_subscription_next_json(hms_subscription_t* subscription, int64_t timeout_ns,
                                           char** message, size_t* message_len,
                                           uint64_t* sequence, hms_error_t** err);
int hms_subscription_next_raw(hms_subscription_t* subscription, int64_t timeout_ns,
                                          const void** data, size_t* size, uint64_t* sequence,
                                          hms_error_t** err);
void hms_subscription_free(hms_subscription_t** subscription);
CDEF;
