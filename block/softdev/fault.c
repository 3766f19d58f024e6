/*
 * softdev-fault: a disk that fails the way real ones do, on purpose
 * (docs/user-guide.rst).  Rules (fault-rules.c) pick requests and fail,
 * delay, corrupt or tear them; they come with the node ("rules" in
 * -blockdev JSON) and are replaced at runtime with softdev-fault-set and
 * softdev-fault-clear; query-softdevs counts per rule the requests it
 * matched and the faults it injected.  Content preserving while no rule
 * fires, so softdev-insert puts it above a running guest's disk.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qapi/qapi-visit-block-core.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/visitor.h"
#include "block/qdict.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qemu/coroutine.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/units.h"
#include "qapi/qapi-visit-softdev-types.h"
#include "softdev/softdev.h"
#include "fault.h"

/* QAPI schema of the options (scripts/softdev-drivers.py adds it)
 *
 * ##
 * # @SoftdevFaultOptions:
 * #
 * # Options of the softdev-fault soft device.
 * #
 * # @rules: the rules, first match wins (default: none)
 * #
 * # @cache-model: the write cache to model (default: writethrough)
 * #
 * # @cache-size: the most a volatile cache holds, in bytes: data, and
 * #     64 per write (default: 64 MiB).  When a write does not fit,
 * #     the oldest writes are written back first; a write larger than
 * #     the cache goes straight to the child after all of them.
 * #
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevFaultOptions',
 *   'data': { '*rules': [ 'SoftdevFaultRule' ],
 *             '*cache-model': 'SoftdevFaultCacheModel',
 *             '*cache-size': 'size' } }
 */

#define FAULT_CACHE_SIZE_DEFAULT (64 * MiB)

static QemuOptsList softdev_fault_opts = {
    .name = "softdev-fault",
    .head = QTAILQ_HEAD_INITIALIZER(softdev_fault_opts.head),
    .desc = {
        {
            .name = "cache-model",
            .type = QEMU_OPT_STRING,
            .help = "writethrough or volatile (default: writethrough)",
        },
        {
            .name = "cache-size",
            .type = QEMU_OPT_SIZE,
            .help = "the most a volatile cache holds (default: 64 MiB)",
        },
        { /* end of list */ }
    },
};

/* The "rules" list of the node's options (flat, as bdrv_open has them) */
static int fault_parse_rules(QDict *options, SoftdevFaultRuleList **list,
                             Error **errp)
{
    g_autoptr(QDict) sub = NULL;
    Visitor *v;
    bool ok;

    *list = NULL;
    if (qdict_haskey(options, "rules")) {
        /* An empty list stays one key when the options are flattened */
        QList *l = qobject_to(QList, qdict_get(options, "rules"));

        if (!l || !qlist_empty(l)) {
            error_setg(errp, "rules: a list of rules expected");
            return -EINVAL;
        }
        qdict_del(options, "rules");
        return 0;
    }
    qdict_extract_subqdict(options, &sub, "rules.");
    if (!qdict_size(sub)) {
        return 0;
    }
    v = qobject_input_visitor_new_flat_confused(sub, errp);
    if (!v) {
        return -EINVAL;
    }
    ok = visit_type_SoftdevFaultRuleList(v, NULL, list, errp);
    visit_free(v);
    if (!ok) {
        error_prepend(errp, "rules: ");
        return -EINVAL;
    }
    return 0;
}

void fault_set_power(SoftdevFault *s, FaultPower power)
{
    s->power = power;
}

/* A power cut with action stop holds until the VM has stopped */
static void fault_vm_state_changed(void *opaque, bool running,
                                   RunState state)
{
    SoftdevFault *s = opaque;

    if (!running && s->power == FAULT_POWER_OFF_UNTIL_STOP) {
        fault_set_power(s, FAULT_POWER_ON);
    }
}

static int softdev_fault_open(BlockDriverState *bs, QemuOpts *opts,
                              QDict *options, Error **errp)
{
    SoftdevFault *s = softdev_opaque(bs);
    const char *model = qemu_opt_get(opts, "cache-model");
    uint64_t size = qemu_opt_get_size(opts, "cache-size",
                                      FAULT_CACHE_SIZE_DEFAULT);
    SoftdevFaultCacheModel m = qapi_enum_parse(
        &SoftdevFaultCacheModel_lookup, model,
        SOFTDEV_FAULT_CACHE_MODEL_WRITETHROUGH, errp);
    SoftdevFaultRuleList *list;
    int ret;

    if (m < 0) {
        error_prepend(errp, "cache-model: ");
        return -EINVAL;
    }
    if (size < 4096) {
        error_setg(errp, "cache-size must be at least 4096");
        return -EINVAL;
    }
    ret = fault_parse_rules(options, &list, errp);
    if (ret < 0) {
        return ret;
    }
    if (list) {
        s->rules = fault_rules_new(list, errp);
        qapi_free_SoftdevFaultRuleList(list);
        if (!s->rules) {
            return -EINVAL;
        }
    }
    s->bs = bs;
    fault_cache_init(&s->cache, m, size);
    if (m == SOFTDEV_FAULT_CACHE_MODEL_VOLATILE) {
        /* A drive without FUA: the block layer flushes after such writes */
        bs->supported_write_flags &= ~BDRV_REQ_FUA;
        bs->supported_zero_flags &= ~BDRV_REQ_FUA;
    }
    s->vm_state = qemu_add_vm_change_state_handler(fault_vm_state_changed, s);
    return 0;
}

static void softdev_fault_close(BlockDriverState *bs)
{
    SoftdevFault *s = softdev_opaque(bs);

    /* Shut down cleanly: the cache reaches the disk even if flushes fail */
    bdrv_graph_rdlock_main_loop();
    if (s->cache.nb && fault_cache_write_back_all(bs, &s->cache) < 0) {
        warn_report("softdev-fault: %s: %" PRIu64 " cached writes could not "
                    "be written back at close", bdrv_get_node_name(bs),
                    s->cache.nb);
    }
    bdrv_graph_rdunlock_main_loop();
    fault_cache_drop(&s->cache);
    if (s->vm_state) {
        qemu_del_vm_change_state_handler(s->vm_state);
        s->vm_state = NULL;
    }
    fault_rules_free(s->rules);
    s->rules = NULL;
}

int fault_set_rules(BlockDriverState *bs, SoftdevFaultRuleList *list,
                    Error **errp)
{
    SoftdevFault *s = softdev_opaque(bs);
    FaultRules *rules = NULL;

    GLOBAL_STATE_CODE();
    if (list) {
        rules = fault_rules_new(list, errp);
        if (!rules) {
            return -EINVAL;
        }
    }
    /* No request holds a rule of the old set meanwhile */
    bdrv_drained_begin(bs);
    fault_rules_free(s->rules);
    s->rules = rules;
    if (!list) {
        fault_set_power(s, FAULT_POWER_ON);
    }
    bdrv_drained_end(bs);
    return 0;
}

/* @req on to the cache (if volatile), and below */
static int coroutine_fn GRAPH_RDLOCK
fault_co_next(BlockDriverState *bs, SoftdevRequest *req, SoftdevNextFn *next)
{
    SoftdevFault *s = softdev_opaque(bs);

    if (s->cache.model == SOFTDEV_FAULT_CACHE_MODEL_VOLATILE) {
        return fault_cache_co_request(bs, &s->cache, req, next);
    }
    return next(bs, req);
}

/* Tear write @req: only some of it reaches the child */
static int coroutine_fn GRAPH_RDLOCK
fault_co_tear(BlockDriverState *bs, FaultRule *r, SoftdevRequest *req,
              SoftdevNextFn *next)
{
    const SoftdevFaultRule *q = r->def;
    int ret = 0;

    if (q->has_tear_sectors && q->tear_sectors) {
        /* Every other sector, as a drive that lost power mid-write */
        for (int64_t at = 0; at < req->bytes && ret >= 0; at += 1024) {
            SoftdevRequest part = *req;

            part.offset = req->offset + at;
            part.bytes = MIN(512, req->bytes - at);
            part.qiov_offset = req->qiov_offset + at;
            ret = fault_co_next(bs, &part, next);
        }
    } else {
        SoftdevRequest part = *req;

        part.bytes = q->has_tear_bytes ? MIN(q->tear_bytes, req->bytes) :
                     QEMU_ALIGN_DOWN(req->bytes / 2, 512);
        if (part.bytes) {
            ret = fault_co_next(bs, &part, next);
        }
    }
    if (ret < 0) {
        return ret;
    }
    return q->has_tear_succeeds && q->tear_succeeds ? 0 : -r->err;
}

static int coroutine_fn GRAPH_RDLOCK
softdev_fault_co_request(BlockDriverState *bs, SoftdevRequest *req,
                         SoftdevNextFn *next)
{
    SoftdevFault *s = softdev_opaque(bs);
    FaultRule *r;
    int ret;

    if (s->power != FAULT_POWER_ON) {
        return -EIO;
    }
    r = fault_pick(s->rules, req);
    if (!r) {
        return fault_co_next(bs, req, next);
    }
    switch (r->def->action) {
    case SOFTDEV_FAULT_ACTION_FAIL:
        return -r->err;
    case SOFTDEV_FAULT_ACTION_DELAY:
        qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, fault_delay_ns(r));
        return fault_co_next(bs, req, next);
    case SOFTDEV_FAULT_ACTION_CORRUPT:
        ret = fault_co_next(bs, req, next);
        if (ret == 0) {
            fault_corrupt(r, req->qiov, req->qiov_offset, req->bytes);
        }
        return ret;
    case SOFTDEV_FAULT_ACTION_TEAR:
        return fault_co_tear(bs, r, req, next);
    default:
        g_assert_not_reached();
    }
}

static void softdev_fault_query(BlockDriverState *bs, SoftdevInfo *info)
{
    SoftdevFault *s = softdev_opaque(bs);
    SoftdevFaultInfo *f = &info->u.softdev_fault;
    SoftdevFaultRuleStatsList **tail = &f->rules;

    for (size_t i = 0; s->rules && i < s->rules->nb; i++) {
        SoftdevFaultRuleStats *st = g_new0(SoftdevFaultRuleStats, 1);

        st->index = i;
        st->action = s->rules->rules[i].def->action;
        st->matched = s->rules->rules[i].matched;
        st->injected = s->rules->rules[i].fired;
        f->injected += st->injected;
        QAPI_LIST_APPEND(tail, st);
    }
    f->cache_model = s->cache.model;
    f->cache_size = s->cache.size;
    f->cached_writes = s->cache.nb;
    f->cached_bytes = s->cache.bytes;
    f->destaged = s->cache.destaged;
    f->written_back = s->cache.written_back;
    f->powercuts = s->cache.powercuts;
    f->lost_writes = s->cache.lost;
    f->powered = s->power == FAULT_POWER_ON;
}

static bool softdev_fault_holds_writes(BlockDriverState *bs)
{
    SoftdevFault *s = softdev_opaque(bs);

    return s->cache.nb > 0;
}

static SoftdevDriver softdev_fault = {
    .name                   = "softdev-fault",
    .content_preserving     = true,
    .state_size             = sizeof(SoftdevFault),
    .opts                   = &softdev_fault_opts,
    .zeroes                 = SOFTDEV_ZEROES_SEEN,
    .discard                = SOFTDEV_DISCARD_SEEN,
    .open                   = softdev_fault_open,
    .close                  = softdev_fault_close,
    .co_request             = softdev_fault_co_request,
    .query                  = softdev_fault_query,
    .holds_writes           = softdev_fault_holds_writes,
};

static void softdev_fault_init(void)
{
    softdev_register(&softdev_fault);
}

block_init(softdev_fault_init);
