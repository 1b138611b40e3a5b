// `byte-stats`: a C plugin. On `text.analyze` it counts the text's bytes,
// how many are ASCII, and its digits, as JSON, in the same fan-out as the
// Rust, Python and JavaScript plugins.
//
// Built with wit-bindgen's C generator and Debian's clang for wasm32-wasi
// (`cargo xtask plugins`); see docs/writing-plugins.md, "C".
//
// Ownership: the arguments of an export (task, request_id) are ours to free
// before returning; what an export returns must come from malloc (the
// generated code frees it); the arguments of an import are only borrowed.

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

void exports_worker_describe(worker_plugin_info_t *ret) {
    worker_string_dup(&ret->name, "byte-stats");
    worker_string_dup(&ret->version, "0.1.0");
    ret->topics.len = 1;
    ret->topics.ptr = malloc(sizeof(worker_string_t));
    worker_string_dup(&ret->topics.ptr[0], "text.analyze");
}

bool exports_worker_interested(worker_task_t *task) {
    bool wanted = task->payload.len > 0;
    worker_task_free(task);
    return wanted;
}

bool exports_worker_handle(worker_task_t *task, worker_list_u8_t *ret, worker_string_t *err) {
    const uint8_t *bytes = task->payload.ptr;
    size_t len = task->payload.len;
    if (memchr(bytes, 0, len) != NULL) {
        worker_task_free(task);
        worker_string_dup(err, "the text holds a NUL byte");
        return false;
    }
    size_t ascii = 0, digits = 0;
    for (size_t i = 0; i < len; i++) {
        ascii += bytes[i] < 0x80;
        digits += isdigit(bytes[i]) != 0;
    }
    char json[96];
    int n = snprintf(json, sizeof json, "{\"bytes\": %zu, \"ascii\": %zu, \"digits\": %zu}", len, ascii, digits);
    ret->len = (size_t)n;
    ret->ptr = malloc(ret->len);
    memcpy(ret->ptr, json, ret->len);

    worker_string_t message;
    worker_string_set(&message, json); // borrowed by the import
    anocast_worker_host_log(ANOCAST_WORKER_HOST_LEVEL_DEBUG, &message);
    worker_task_free(task);
    return true;
}

void exports_worker_settle(worker_string_t *request_id, bool committed) {
    (void)committed;
    worker_string_free(request_id);
}
