// `c-limits`: a C test guest for the host's limits. The last token of the
// topic says what it does: `ok` answers "ok"; `spin` loops forever; `grow`
// keeps allocating until the memory limit stops it; `count` answers how
// many tasks this instance has served (it declares itself stateless, so the
// host may reuse a warm instance).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

static unsigned long served = 0;
// Where `grow` keeps its blocks, so that the compiler cannot drop them.
static void *volatile hoard = NULL;

void exports_worker_describe(worker_plugin_info_t *ret) {
    worker_string_dup(&ret->name, "c-limits");
    worker_string_dup(&ret->version, "0.1.0");
    ret->topics.len = 1;
    ret->topics.ptr = malloc(sizeof(worker_string_t));
    worker_string_dup(&ret->topics.ptr[0], "limits.c.*");
}

bool exports_worker_interested(worker_task_t *task) {
    worker_task_free(task);
    return true;
}

static bool ends_with(const worker_string_t *topic, const char *what) {
    size_t n = strlen(what);
    return topic->len >= n && memcmp(topic->ptr + topic->len - n, what, n) == 0;
}

bool exports_worker_handle(worker_task_t *task, worker_list_u8_t *ret, worker_string_t *err) {
    (void)err;
    served++;
    if (ends_with(&task->topic, ".spin")) {
        volatile unsigned long spins = 0;
        for (;;) {
            spins++;
        }
    }
    if (ends_with(&task->topic, ".grow")) {
        for (;;) {
            char *block = malloc(1 << 20);
            if (block == NULL) {
                abort();
            }
            memset(block, 1, 1 << 20);
            *(void **)block = hoard;
            hoard = block;
        }
    }
    char text[32];
    int len = ends_with(&task->topic, ".count") ? snprintf(text, sizeof text, "%lu", served)
                                                 : snprintf(text, sizeof text, "ok");
    ret->len = (size_t)len;
    ret->ptr = malloc(ret->len);
    memcpy(ret->ptr, text, ret->len);
    worker_task_free(task);
    return true;
}

void exports_worker_settle(worker_string_t *request_id, bool committed) {
    (void)committed;
    worker_string_free(request_id);
}
