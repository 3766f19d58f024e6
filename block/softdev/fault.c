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
#include "qapi/qapi-visit-block-core.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/visitor.h"
#include "block/qdict.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qemu/coroutine.h"
#include "qemu/module.h"
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
 * # Since: 10.0 (softdev)
 * ##
 * { 'struct': 'SoftdevFaultOptions',
 *   'data': { '*rules': [ 'SoftdevFaultRule' ] } }
 */

typedef struct SoftdevFault {
    FaultRules *rules;          /* NULL: none; swapped while drained */
} SoftdevFault;

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

static int softdev_fault_open(BlockDriverState *bs, QemuOpts *opts,
                              QDict *options, Error **errp)
{
    SoftdevFault *s = softdev_opaque(bs);
    SoftdevFaultRuleList *list;
    int ret = fault_parse_rules(options, &list, errp);

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
    return 0;
}

static void softdev_fault_close(BlockDriverState *bs)
{
    SoftdevFault *s = softdev_opaque(bs);

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
    bdrv_drained_end(bs);
    return 0;
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
            ret = next(bs, &part);
        }
    } else {
        SoftdevRequest part = *req;

        part.bytes = q->has_tear_bytes ? MIN(q->tear_bytes, req->bytes) :
                     QEMU_ALIGN_DOWN(req->bytes / 2, 512);
        if (part.bytes) {
            ret = next(bs, &part);
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
    FaultRule *r = fault_pick(s->rules, req);
    int ret;

    if (!r) {
        return next(bs, req);
    }
    switch (r->def->action) {
    case SOFTDEV_FAULT_ACTION_FAIL:
        return -r->err;
    case SOFTDEV_FAULT_ACTION_DELAY:
        qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, fault_delay_ns(r));
        return next(bs, req);
    case SOFTDEV_FAULT_ACTION_CORRUPT:
        ret = next(bs, req);
        if (ret == 0 && req->op == SOFTDEV_OP_READ) {
            fault_corrupt(r, req->qiov, req->qiov_offset, req->bytes);
        }
        return ret;
    case SOFTDEV_FAULT_ACTION_TEAR:
        if (req->op != SOFTDEV_OP_WRITE) {
            return next(bs, req);
        }
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
}

static SoftdevDriver softdev_fault = {
    .name                   = "softdev-fault",
    .content_preserving     = true,
    .state_size             = sizeof(SoftdevFault),
    .zeroes                 = SOFTDEV_ZEROES_SEEN,
    .discard                = SOFTDEV_DISCARD_SEEN,
    .open                   = softdev_fault_open,
    .close                  = softdev_fault_close,
    .co_request             = softdev_fault_co_request,
    .query                  = softdev_fault_query,
};

static void softdev_fault_init(void)
{
    softdev_register(&softdev_fault);
}

block_init(softdev_fault_init);
