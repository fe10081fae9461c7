/* hms_ffi.h: the stable C ABI of libhmsffi (libhmsffi.so.1), what every language but C++ links.
 *
 * Design and rules: docs/c-abi.md. In short:
 *   - Handles are opaque heap objects: hms_client_t, hms_stub_t, ... Each has hms_x_free(&h), which
 *     sets the pointer to NULL; freeing NULL is a no-op. Passing NULL where a handle is needed is
 *     HMS_INVALID_ARGUMENT.
 *   - Every fallible function returns a status code (0 OK, else gRPC's numbering, hms_status_t)
 *     and, when `err` is not NULL, sets *err to an hms_error_t (message, source, details) on
 *     failure; free it with hms_error_free. On success *err is left as it was.
 *   - Strings go in as UTF-8 with a length (SIZE_MAX: NUL-terminated); strings that come out are
 *     NUL-terminated, with their length, and are freed with hms_string_free.
 *   - Options are structs initialised by hms_x_options_init(&o), so fields can be added later.
 *   - BLOCKING marks a function that may wait (for the broker, a peer or a deadline); bindings
 *     release their interpreter lock around it. Every other function returns at once.
 *   - The library never calls into the caller's code from a thread of its own: services are
 *     served by pull (hms_service_next), and completions are waited for, polled, or signalled
 *     through a file descriptor.
 *   - Handles may be used from any thread. A stub makes one call at a time (a second thread waits
 *     its turn: BLOCKING). Async calls on one stub are many in flight, but a service runs the
 *     calls of one channel (one stub) in order; for calls the service should run in parallel,
 *     bind one stub per concurrent call.
 *   - A process forked from one that connected gets HMS_FAILED_PRECONDITION from every call on
 *     the parent's handles (it must connect anew); nothing is written to the parent's rings.
 *
 * Two levels: the JSON level (any service or topic whose contract the broker knows; JSON in and
 * out, converted in place in the rings; docs/contracts.md has the mapping) and the raw level (a
 * single-segment Cap'n Proto message built by the caller in loaned ring memory, and a reply read
 * in place), for languages with a Cap'n Proto library.
 */
#ifndef HMS_FFI_H
#define HMS_FFI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HMS_FFI_API __attribute__((visibility("default")))
#else
#define HMS_FFI_API
#endif

/* The ABI's version: major << 16 | minor. The major changes (with the soname) only on a break. */
#define HMS_ABI_VERSION_MAJOR 1
#define HMS_ABI_VERSION_MINOR 1
HMS_FFI_API uint32_t hms_abi_version(void);

/* ---- Status and errors ----------------------------------------------------------------------- */

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

/* "NOT_FOUND", ... ("UNKNOWN" for a number outside the table). Static storage. */
HMS_FFI_API const char* hms_status_name(int code);

typedef struct hms_error hms_error_t;
HMS_FFI_API int hms_error_code(const hms_error_t* err);
/* What happened and what to do, e.g. "no live version of 'hms.emr.patient' in range '^2'". */
HMS_FFI_API const char* hms_error_message(const hms_error_t* err);
/* The id of the service that returned the error; "" when the library or broker did. */
HMS_FFI_API const char* hms_error_source(const hms_error_t* err);
/* Details as key/value pairs (e.g. field -> reason): a count, and pair i (static until freed). */
HMS_FFI_API size_t hms_error_detail_count(const hms_error_t* err);
HMS_FFI_API int hms_error_detail(const hms_error_t* err, size_t i, const char** key,
                                 const char** value);
/* The details as one JSON object of strings, e.g. {"field":"patientId"}; valid until freed. */
HMS_FFI_API const char* hms_error_details_json(const hms_error_t* err);
HMS_FFI_API void hms_error_free(hms_error_t** err);

/* Frees a string this library returned (and sets *s to NULL). */
HMS_FFI_API void hms_string_free(char** s);

/* ---- Client ---------------------------------------------------------------------------------- */

typedef struct hms_client hms_client_t;

typedef enum hms_transport {
  HMS_TRANSPORT_AUTO = 0,   /* shared memory where both ends can map it, else a Unix socket */
  HMS_TRANSPORT_SHM = 1,    /* shared memory only */
  HMS_TRANSPORT_SOCKET = 2  /* Unix sockets only */
} hms_transport_t;

typedef enum hms_wait_mode {
  HMS_WAIT_ADAPTIVE = 0, /* poll briefly, then sleep (default) */
  HMS_WAIT_SPIN = 1,     /* poll until the deadline: lowest latency, burns a core */
  HMS_WAIT_BLOCKING = 2  /* sleep at once */
} hms_wait_mode_t;

typedef struct hms_client_options {
  /* The broker's socket; NULL: $HMS_FFI_SOCKET, else the per-user default. */
  const char* socket_path;
  /* Shown in the registry and the broker's log; NULL: "<program>[<pid>]". */
  const char* name;
  hms_transport_t transport;
  hms_wait_mode_t wait_mode;
  /* Deadline of a call that sets none, in milliseconds (default 30000). */
  int64_t default_timeout_ms;
  /* Reconnect to a broker that restarted and register the services again (default 1). */
  int reconnect;
} hms_client_options_t;

HMS_FFI_API void hms_client_options_init(hms_client_options_t* options);
/* BLOCKING (bounded by 5 s): connects to the broker. `options` may be NULL (defaults). */
HMS_FFI_API int hms_client_connect(const hms_client_options_t* options, hms_client_t** out,
                                   hms_error_t** err);
/* Closes the client: its services leave the registry and requests waiting for them are let go
 * of. Handles made from it stay safe to use and must still be freed: stubs and services answer
 * with an error (HMS_UNAVAILABLE or HMS_FAILED_PRECONDITION); publishers and subscriptions keep
 * their topic's shared log and go on until freed. */
HMS_FFI_API void hms_client_free(hms_client_t** client);
HMS_FFI_API uint64_t hms_client_id(const hms_client_t* client);
/* Whether the client maps shared memory (0: it runs on sockets). */
HMS_FFI_API int hms_client_uses_shared_memory(const hms_client_t* client);

/* BLOCKING (a round trip to the broker): the contract of `service_id` at exactly `version`
 * ("2.1.0") as JSON: {"id","version","interface","methods":[{"name","ordinal","stream"}],...}. */
HMS_FFI_API int hms_client_contract_json(hms_client_t* client, const char* service_id,
                                         const char* version, char** json, size_t* json_len,
                                         hms_error_t** err);

/* ---- Calls: per-call options ----------------------------------------------------------------- */

typedef struct hms_call_options {
  /* Deadline from now in nanoseconds; 0: the client's default. A stream's deadline bounds the
   * whole stream. Bounds beyond ten years (INT64_MAX included) mean none, here and in every
   * timeout_ns argument. */
  int64_t timeout_ns;
  /* W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>") to carry, or NULL. */
  const char* traceparent;
  /* Indent the JSON that comes back (default 0). */
  int pretty;
} hms_call_options_t;

HMS_FFI_API void hms_call_options_init(hms_call_options_t* options);

/* ---- Calls: the JSON level ------------------------------------------------------------------- */

typedef struct hms_stub hms_stub_t;
typedef struct hms_future hms_future_t;
typedef struct hms_stream hms_stream_t;

/* BLOCKING (round trips to the broker): a stub on the highest live version of `service_id` in
 * `range` ("^2.1", "*", ...; NULL: any), with its contract. HMS_NOT_FOUND naming what is live. */
HMS_FFI_API int hms_client_bind(hms_client_t* client, const char* service_id, const char* range,
                                hms_stub_t** out, hms_error_t** err);
HMS_FFI_API void hms_stub_free(hms_stub_t** stub);
/* The id and exact version ("2.1.0") of the service bound; valid while the stub lives. */
HMS_FFI_API const char* hms_stub_service_id(const hms_stub_t* stub);
HMS_FFI_API const char* hms_stub_service_version(const hms_stub_t* stub);

/* BLOCKING: calls `method` with `params` (a JSON object) and sets *result to the results as a
 * JSON object. HMS_UNIMPLEMENTED for a method the contract lacks, HMS_INVALID_ARGUMENT for JSON
 * that does not fit the schema (naming the field), else the call's own status. */
HMS_FFI_API int hms_stub_call_json(hms_stub_t* stub, const char* method, const char* params,
                                   size_t params_len, const hms_call_options_t* options,
                                   char** result, size_t* result_len, hms_error_t** err);
/* Sends a call that expects no reply: OK once it is in the channel. May block while the
 * service's ring is full (BLOCKING). */
HMS_FFI_API int hms_stub_call_oneway_json(hms_stub_t* stub, const char* method,
                                          const char* params, size_t params_len,
                                          const hms_call_options_t* options, hms_error_t** err);
/* Sends a call and returns at once with a future of its result. May block while the ring is
 * full (BLOCKING). What is wrong before anything is sent (an unknown method, JSON that does not
 * fit, bad options) is returned at once, with no future; a send that fails returns OK with a
 * future that holds the error. */
HMS_FFI_API int hms_stub_call_async_json(hms_stub_t* stub, const char* method,
                                         const char* params, size_t params_len,
                                         const hms_call_options_t* options, hms_future_t** out,
                                         hms_error_t** err);

/* 1 when the result is there (hms_future_result_json will not wait), else 0. */
HMS_FFI_API int hms_future_poll(const hms_future_t* future);
/* BLOCKING up to `timeout_ns` (-1: no bound but the call's deadline): OK when the result is
 * there, HMS_DEADLINE_EXCEEDED when it is not yet. */
HMS_FFI_API int hms_future_wait(hms_future_t* future, int64_t timeout_ns);
/* A file descriptor that becomes readable when the result is there (for poll/epoll/event
 * loops); owned by the future, valid until it is freed. -1 if none could be made. */
HMS_FFI_API int hms_future_fd(hms_future_t* future);
/* Stops the call: the future completes with HMS_CANCELLED unless the result came first. */
HMS_FFI_API int hms_future_cancel(hms_future_t* future);
/* BLOCKING until the result is there: the call's status, and the results as JSON. Once. */
HMS_FFI_API int hms_future_result_json(hms_future_t* future, char** result, size_t* result_len,
                                       hms_error_t** err);
/* Frees the future; a call still in flight goes on, its result is dropped. */
HMS_FFI_API void hms_future_free(hms_future_t** future);

/* Opens a server stream (a method the service serves as a stream). */
HMS_FFI_API int hms_stub_open_stream_json(hms_stub_t* stub, const char* method,
                                          const char* params, size_t params_len,
                                          const hms_call_options_t* options, hms_stream_t** out,
                                          hms_error_t** err);
/* BLOCKING: the next item as JSON (OK, *item set), or the end: OK with *item NULL when the
 * service finished the stream, else the status it ended with. */
HMS_FFI_API int hms_stream_next_json(hms_stream_t* stream, char** item, size_t* item_len,
                                     hms_error_t** err);
HMS_FFI_API int hms_stream_cancel(hms_stream_t* stream);
/* Frees the stream; one that has not ended is cancelled. */
HMS_FFI_API void hms_stream_free(hms_stream_t** stream);

/* ---- Calls: the raw level -------------------------------------------------------------------- */

typedef struct hms_reply hms_reply_t;

/* Loans zeroed ring memory for the params of `method`: *data (8-byte aligned), *capacity bytes.
 * Write one Cap'n Proto segment there (the root pointer at offset 0, no segment table), then
 * hms_stub_send_raw, or hms_stub_abandon_raw. Nothing may be written past the size sent. The stub
 * is held until then (other threads' calls on it wait). May block while the ring is full
 * (BLOCKING). */
HMS_FFI_API int hms_stub_loan_raw(hms_stub_t* stub, const char* method,
                                  const hms_call_options_t* options, void** data,
                                  size_t* capacity, hms_error_t** err);
/* BLOCKING: sends the first `size` bytes of the loan (a multiple of 8, at least 8) and waits for
 * the reply, read in place until hms_reply_free. The service checks the message like any other:
 * a malformed one is refused (HMS_INVALID_ARGUMENT). */
HMS_FFI_API int hms_stub_send_raw(hms_stub_t* stub, size_t size, hms_reply_t** reply,
                                  hms_error_t** err);
/* Gives a loan back unsent. */
HMS_FFI_API void hms_stub_abandon_raw(hms_stub_t* stub);
/* The reply's one segment (the root pointer at offset 0) and its size in bytes; valid until
 * hms_reply_free. */
HMS_FFI_API const void* hms_reply_data(const hms_reply_t* reply);
HMS_FFI_API size_t hms_reply_size(const hms_reply_t* reply);
/* Gives the reply's ring space back; the stub's next call may go. */
HMS_FFI_API void hms_reply_free(hms_reply_t** reply);

/* ---- Serving (pull) -------------------------------------------------------------------------- */

typedef struct hms_service hms_service_t;
typedef struct hms_request hms_request_t;

typedef struct hms_service_options {
  const char* display_name;
  const char* description;
  /* Size of each ring of a channel to this service (default 1 MiB). */
  uint32_t ring_bytes;
  /* Requests handed out at once (being answered by the caller's threads); more wait in their
   * channels. Default 16. */
  uint32_t concurrency;
  /* Directories searched for the schema file's imports, ':'-separated; NULL: /usr/include and
   * /usr/local/include (where /capnp/c++.capnp lives). */
  const char* import_path;
  /* The methods served as server streams, comma-separated ("watch,export"), or NULL. A stream's
   * request is answered by hms_request_stream_json per item, then hms_request_reply_json (with
   * NULL results: the stream ended normally) or hms_request_reply_error. */
  const char* stream_methods;
} hms_service_options_t;

HMS_FFI_API void hms_service_options_init(hms_service_options_t* options);

/* BLOCKING (a round trip to the broker): registers `service_id` at `version` ("2.1.0") with the
 * contract of the interface `interface_name` ("DebateService") in the Cap'n Proto schema file
 * `schema_file`, and serves it: requests wait until hms_service_next takes them. The broker
 * checks the contract (HMS_FAILED_PRECONDITION for an incompatible change of a known one). */
HMS_FFI_API int hms_client_serve(hms_client_t* client, const char* service_id,
                                 const char* version, const char* schema_file,
                                 const char* interface_name,
                                 const hms_service_options_t* options, hms_service_t** out,
                                 hms_error_t** err);
/* BLOCKING up to `timeout_ns` (-1: until there is one or the service stops): the next request.
 * HMS_DEADLINE_EXCEEDED when none came, HMS_UNAVAILABLE once the service has stopped. */
HMS_FFI_API int hms_service_next(hms_service_t* service, int64_t timeout_ns,
                                 hms_request_t** out, hms_error_t** err);
/* A file descriptor readable while requests wait (level-triggered); owned by the service. */
HMS_FFI_API int hms_service_fd(hms_service_t* service);
/* Leaves the registry; hms_service_next then returns HMS_UNAVAILABLE. Requests not answered yet
 * (queued or taken) are let go of: their callers get HMS_UNAVAILABLE, and answering one
 * afterwards returns HMS_UNAVAILABLE. Answer what you took before stopping. */
HMS_FFI_API int hms_service_stop(hms_service_t* service);
/* Stops the service and frees it. */
HMS_FFI_API void hms_service_free(hms_service_t** service);

/* The method's name and whether it is a server stream. Valid while the request lives. */
HMS_FFI_API const char* hms_request_method(const hms_request_t* request);
HMS_FFI_API int hms_request_is_stream(const hms_request_t* request);
/* The caller as the kernel told the broker, and its name. */
HMS_FFI_API int32_t hms_request_caller_pid(const hms_request_t* request);
HMS_FFI_API uint32_t hms_request_caller_uid(const hms_request_t* request);
HMS_FFI_API const char* hms_request_caller_name(const hms_request_t* request);
/* Since ABI 1.1. The whole caller (docs/security.md) as one JSON object, valid while the request
 * lives: {"uid":1001,"gid":1001,"pid":4242,"groups":[1001,27],"name":"hms-api",
 * "authenticated":true,"subject":"alice","issuer":"hms-auth","roles":["doctor"]}. The kernel's
 * identity of the calling process and the claims of the token the broker verified; the caller
 * cannot alter any of it. "roles" are those the broker's policy gives it (empty: no policy).
 * A caller of another host, brought in by a gateway (docs/gateway.md), also has "host": its
 * host's name; its uid, pid, name, subject and issuer are then as that host knows them. */
HMS_FFI_API const char* hms_request_caller_json(const hms_request_t* request);
/* Nanoseconds left until the caller's deadline (INT64_MAX: none, the caller gave no bound). */
HMS_FFI_API int64_t hms_request_time_left_ns(const hms_request_t* request);
/* The W3C traceparent of the call, or NULL: what the caller sent, or, when this process records
 * spans (HMS_FFI_TRACE_DIR) and the trace is sampled, this call's server span. Pass it to the
 * calls the handler makes (hms_call_options_t.traceparent) to keep them in the trace. */
HMS_FFI_API const char* hms_request_traceparent(const hms_request_t* request);
/* 1 once the caller cancelled, its deadline passed or it went away: the answer is not read. */
HMS_FFI_API int hms_request_cancelled(const hms_request_t* request);
/* The params as JSON. */
HMS_FFI_API int hms_request_params_json(const hms_request_t* request, char** json,
                                        size_t* json_len, hms_error_t** err);

/* The params' one segment (the root pointer at offset 0), read in place, and its size in bytes;
 * valid until the request is answered or freed, or its service freed. NULL once answered. */
HMS_FFI_API const void* hms_request_params_data(const hms_request_t* request);
HMS_FFI_API size_t hms_request_params_size(const hms_request_t* request);
/* The raw level for the results: zeroed ring memory (8-byte aligned) to write one Cap'n Proto
 * segment into (root pointer at offset 0), then hms_request_reply_raw. Not for stream methods. */
HMS_FFI_API int hms_request_loan_raw(hms_request_t* request, void** data, size_t* capacity,
                                     hms_error_t** err);
/* Answers with the first `size` bytes of the loan (a multiple of 8, at least 8) and frees the
 * request. */
HMS_FFI_API int hms_request_reply_raw(hms_request_t** request, size_t size, hms_error_t** err);

/* Answers with `results` (a JSON object) and frees the request. HMS_INVALID_ARGUMENT when the
 * JSON does not fit the results type: the request is still freed and the caller gets INTERNAL
 * with that message. For a stream method, ends the stream normally (`results` NULL or "{}"). */
HMS_FFI_API int hms_request_reply_json(hms_request_t** request, const char* results,
                                       size_t results_len, hms_error_t** err);
/* Answers with an error: `code` (not 0), `message`, and `details_json` (a JSON object of
 * strings, or NULL); the caller sees them with this service as the source. Frees the request. */
HMS_FFI_API int hms_request_reply_error(hms_request_t** request, int code, const char* message,
                                        const char* details_json, hms_error_t** err);
/* A stream method: BLOCKING while the caller's ring is full: sends one item. HMS_CANCELLED or
 * HMS_UNAVAILABLE when the caller stopped reading: end the stream then. */
HMS_FFI_API int hms_request_stream_json(hms_request_t* request, const char* item,
                                        size_t item_len, hms_error_t** err);
/* Frees a request; one not answered gets HMS_INTERNAL ("the service dropped the request
 * unanswered"). */
HMS_FFI_API void hms_request_free(hms_request_t** request);

/* ---- Topics --------------------------------------------------------------------------- */

typedef struct hms_publisher hms_publisher_t;
typedef struct hms_subscription hms_subscription_t;

/* BLOCKING (round trips): becomes the one publisher of `topic_id`, whose messages are the struct
 * `type_name` ("Vitals", or "Outer.Inner") of the schema file `schema_file` (or, with both NULL,
 * the type an earlier publisher advertised in this broker's life). `slots`: messages the log
 * keeps, a power of two (0: 256). Imports are searched in /usr/include and /usr/local/include.
 * Subscribers read from the next message on, blocking the publisher while they fall behind. */
HMS_FFI_API int hms_client_advertise_json(hms_client_t* client, const char* topic_id,
                                          const char* schema_file, const char* type_name,
                                          uint32_t slots, hms_publisher_t** out,
                                          hms_error_t** err);
/* Publishes one message (a JSON object). May block for a slow blocking subscriber (BLOCKING). */
HMS_FFI_API int hms_publisher_publish_json(hms_publisher_t* publisher, const char* message,
                                           size_t message_len, hms_error_t** err);
/* The raw level: the next message's slot in the topic's log (zeroed, 8-byte aligned), to write
 * one Cap'n Proto segment into (root pointer at offset 0), then hms_publisher_publish_raw with
 * the size written (a multiple of 8, at least 8) or hms_publisher_abandon_raw. May block like
 * publishing (BLOCKING). Subscribers check the message like any other. */
HMS_FFI_API int hms_publisher_loan_raw(hms_publisher_t* publisher, void** data, size_t* capacity,
                                       hms_error_t** err);
HMS_FFI_API int hms_publisher_publish_raw(hms_publisher_t* publisher, size_t size,
                                          hms_error_t** err);
HMS_FFI_API void hms_publisher_abandon_raw(hms_publisher_t* publisher);
HMS_FFI_API size_t hms_publisher_subscribers(const hms_publisher_t* publisher);
HMS_FFI_API void hms_publisher_free(hms_publisher_t** publisher);

/* BLOCKING up to `wait_ms` for a publisher: subscribes to `topic_id` from the next message on. */
HMS_FFI_API int hms_client_subscribe_json(hms_client_t* client, const char* topic_id,
                                          int64_t wait_ms, hms_subscription_t** out,
                                          hms_error_t** err);
/* BLOCKING up to `timeout_ns` (-1: no bound): the next message as JSON and its sequence number
 * (from 1).
 * HMS_DEADLINE_EXCEEDED when none came; HMS_UNAVAILABLE once the publisher left and all was
 * read. */
HMS_FFI_API int hms_subscription_next_json(hms_subscription_t* subscription, int64_t timeout_ns,
                                           char** message, size_t* message_len,
                                           uint64_t* sequence, hms_error_t** err);
/* The raw level: BLOCKING like hms_subscription_next_json; *data and *size are the message's one
 * segment read in place in the log, valid until the next call on this subscription. */
HMS_FFI_API int hms_subscription_next_raw(hms_subscription_t* subscription, int64_t timeout_ns,
                                          const void** data, size_t* size, uint64_t* sequence,
                                          hms_error_t** err);
HMS_FFI_API void hms_subscription_free(hms_subscription_t** subscription);

#ifdef __cplusplus
}
#endif

#endif /* HMS_FFI_H */
