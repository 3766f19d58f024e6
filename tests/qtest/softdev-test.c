/*
 * QMP tests of softdev's live graph control: softdev-insert above the
 * root node of a virtio-blk device (and below a format node and beside an
 * export), query-block / query-named-block-nodes / query-softdevs while
 * inserted, softdev-remove back to the original graph, and every error;
 * a transforming softdev-crypt added and plugged in over QMP.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"

/*
 * New reference to the entry of @cmd's returned list whose string member
 * @key equals @value, or NULL; the list's length goes to *@count.
 */
static QDict *qmp_find(QTestState *qts, const char *cmd, const char *key,
                       const char *value, int *count)
{
    QDict *resp = qtest_qmp(qts, "{'execute': %s}", cmd);
    QListEntry *e;
    QDict *found = NULL;
    int n = 0;

    g_assert(qdict_haskey(resp, "return"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(resp, "return"), e) {
        QDict *entry = qobject_to(QDict, e->value);

        n++;
        if (!found &&
            g_str_equal(qdict_get_try_str(entry, key) ?: "", value)) {
            found = qobject_ref(entry);
        }
    }
    qobject_unref(resp);
    if (count) {
        *count = n;
    }
    return found;
}

/* Root node name of the BlockBackend of device @qdev (QOM path). */
static char *root_node_of(QTestState *qts, const char *qdev)
{
    QDict *blk = qmp_find(qts, "query-block", "qdev", qdev, NULL);
    char *name;

    g_assert(blk);
    name = g_strdup(qdict_get_str(qdict_get_qdict(blk, "inserted"),
                                  "node-name"));
    qobject_unref(blk);
    return name;
}

/* Driver of node @node in query-named-block-nodes, or NULL if absent. */
static char *node_driver(QTestState *qts, const char *node)
{
    QDict *n = qmp_find(qts, "query-named-block-nodes", "node-name", node,
                        NULL);
    char *drv = n ? g_strdup(qdict_get_str(n, "drv")) : NULL;

    qobject_unref(n);
    return drv;
}

/* The query-softdevs entry of @node (new reference) or NULL. */
static QDict *softdev_entry(QTestState *qts, const char *node, int *count)
{
    return qmp_find(qts, "query-softdevs", "node-name", node, count);
}

/* Statistics of @op in a query-softdevs entry */
static QDict *op_stats(QDict *entry, const char *op)
{
    QListEntry *e;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(entry, "stats"), e) {
        QDict *st = qobject_to(QDict, e->value);

        if (g_str_equal(qdict_get_str(st, "op"), op)) {
            return st;
        }
    }
    g_assert_not_reached();
}

#define VD0_QDEV "/machine/peripheral/vd0/virtio-backend"

/* Run a qemu-io command on the BlockBackend of device @qdev_id */
static void hmp_qemu_io(QTestState *qts, const char *qdev_id, const char *cmd)
{
    g_autofree char *out = qtest_hmp(qts, "qemu-io -d %s \"%s\"", qdev_id,
                                     cmd);

    g_assert_null(strcasestr(out, "error"));
}

static void G_GNUC_PRINTF(3, 4)
assert_qmp_error(QTestState *qts, const char *expect,
                             const char *fmt, ...)
{
    va_list ap;
    QDict *resp;
    const char *desc;

    va_start(ap, fmt);
    resp = qtest_vqmp(qts, fmt, ap);
    va_end(ap);
    g_assert(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    if (!strstr(desc, expect)) {
        g_test_message("error '%s' lacks '%s'", desc, expect);
        g_assert_not_reached();
    }
    qobject_unref(resp);
}

/* softdev-insert softdev-trace 'sd0' above 'disk0', the root of vd0 */
static void insert_sd0(QTestState *qts)
{
    g_autofree char *root = NULL;
    g_autofree char *drv = NULL;

    qtest_qmp_assert_success(qts,
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'sd0', 'file': 'disk0'}}");
    root = root_node_of(qts, VD0_QDEV);
    g_assert_cmpstr(root, ==, "sd0");
    drv = node_driver(qts, "sd0");
    g_assert_cmpstr(drv, ==, "softdev-trace");
}

/* softdev-remove 'sd0': vd0 is back on 'disk0' and 'sd0' is gone */
static void remove_sd0(QTestState *qts)
{
    g_autofree char *root = NULL;
    g_autofree char *drv = NULL;
    int count;

    qtest_qmp_assert_success(qts,
        "{'execute': 'softdev-remove', 'arguments': {'node-name': 'sd0'}}");
    root = root_node_of(qts, VD0_QDEV);
    g_assert_cmpstr(root, ==, "disk0");
    drv = node_driver(qts, "sd0");
    g_assert_null(drv);
    g_assert_null(softdev_entry(qts, "sd0", &count));
    g_assert_cmpint(count, ==, 0);
}

/*
 * Insert above a device's root node, do I/O through it, remove it; five
 * times, checking the graph each time.
 */
static void test_insert_remove_root(void)
{
    QTestState *qts = qtest_init(
        "-blockdev driver=null-co,node-name=disk0,size=67108864,"
        "read-zeroes=on,discard=unmap "
        "-device virtio-blk-pci,drive=disk0,id=vd0");
    int round;

    for (round = 0; round < 5; round++) {
        QDict *entry, *parent, *st;
        QList *parents;
        int count;

        insert_sd0(qts);

        /* Requests of the device pass through the soft device. */
        hmp_qemu_io(qts, VD0_QDEV, "write -P 0x5a 4096 8192");
        hmp_qemu_io(qts, VD0_QDEV, "read 0 4096");
        hmp_qemu_io(qts, VD0_QDEV, "flush");
        /* Discards still reach the disk (the node inherits discard=unmap) */
        hmp_qemu_io(qts, VD0_QDEV, "discard 65536 65536");

        entry = softdev_entry(qts, "sd0", &count);
        g_assert(entry);
        g_assert_cmpint(count, ==, 1);
        g_assert_cmpstr(qdict_get_str(entry, "driver"), ==, "softdev-trace");
        g_assert_cmpstr(qdict_get_str(entry, "child"), ==, "disk0");
        g_assert(qdict_get_bool(entry, "content-preserving"));
        parents = qdict_get_qlist(entry, "parents");
        g_assert_cmpint(qlist_size(parents), ==, 1);
        parent = qobject_to(QDict, qlist_peek(parents));
        g_assert_cmpstr(qdict_get_str(parent, "kind"), ==, "device");
        g_assert_cmpstr(qdict_get_str(parent, "name"), ==, "vd0");
        g_assert_cmpstr(qdict_get_str(parent, "qom-path"), ==, VD0_QDEV);
        st = op_stats(entry, "write");
        g_assert_cmpint(qdict_get_int(st, "ops"), ==, 1);
        g_assert_cmpint(qdict_get_int(st, "bytes"), ==, 8192);
        g_assert_cmpint(qdict_get_int(st, "errors"), ==, 0);
        g_assert_cmpint(qdict_get_int(st, "p50-ns"), <=,
                        qdict_get_int(st, "max-ns"));
        st = op_stats(entry, "read");
        g_assert_cmpint(qdict_get_int(st, "ops"), ==, 1);
        g_assert_cmpint(qdict_get_int(st, "bytes"), ==, 4096);
        g_assert_cmpint(qdict_get_int(st, "p99-ns"), >, 0);
        st = op_stats(entry, "discard");
        g_assert_cmpint(qdict_get_int(st, "ops"), ==, 1);
        g_assert_cmpint(qdict_get_int(st, "bytes"), ==, 65536);
        st = op_stats(entry, "flush");
        g_assert_cmpint(qdict_get_int(st, "ops"), >=, 1);
        g_assert_cmpint(qdict_get_int(entry, "alerts"), ==, 0);
        g_assert(!qdict_haskey(entry, "trace-file"));
        qobject_unref(entry);

        remove_sd0(qts);
    }

    /* The device still works on the original node. */
    hmp_qemu_io(qts, VD0_QDEV, "read 0 4096");
    qtest_quit(qts);
}

/*
 * The same with the disk in an iothread: the soft device joins the
 * disk's AioContext, and requests still pass through it.
 */
static void test_insert_remove_iothread(void)
{
    QTestState *qts = qtest_init(
        "-object iothread,id=io0 "
        "-blockdev driver=null-co,node-name=disk0,size=67108864,"
        "read-zeroes=on "
        "-device virtio-blk-pci,drive=disk0,id=vd0,iothread=io0");
    int round, count;

    for (round = 0; round < 3; round++) {
        QDict *entry;

        insert_sd0(qts);
        hmp_qemu_io(qts, VD0_QDEV, "write -P 0x5a 0 4096");
        hmp_qemu_io(qts, VD0_QDEV, "read -P 0x5a 0 4096");
        entry = softdev_entry(qts, "sd0", &count);
        g_assert_cmpint(qdict_get_int(op_stats(entry, "write"), "ops"), ==, 1);
        g_assert_cmpint(qdict_get_int(op_stats(entry, "read"), "ops"), ==, 1);
        qobject_unref(entry);
        remove_sd0(qts);
    }
    qtest_quit(qts);
}

/*
 * Insert below a format node and beside an NBD export: every parent of
 * the node moves to the soft device, and query-softdevs names them.
 */
static void test_insert_all_parents(void)
{
    g_autofree char *sock = g_strdup_printf("%s/softdev-test-%d.sock",
                                            g_get_tmp_dir(), getpid());
    QTestState *qts = qtest_initf(
        "-blockdev driver=null-co,node-name=disk0,size=67108864,"
        "read-zeroes=on "
        "-blockdev driver=raw,node-name=fmt0,file=disk0 "
        "-device virtio-blk-pci,drive=fmt0,id=vd0,share-rw=on");
    QDict *entry;
    QListEntry *e;
    bool seen_node = false, seen_export = false;
    int count;

    qtest_qmp_assert_success(qts,
        "{'execute': 'nbd-server-start', 'arguments': {"
        " 'addr': {'type': 'unix', 'data': {'path': %s}}}}", sock);
    qtest_qmp_assert_success(qts,
        "{'execute': 'block-export-add', 'arguments': {"
        " 'type': 'nbd', 'id': 'exp0', 'node-name': 'disk0'}}");

    qtest_qmp_assert_success(qts,
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'sd0', 'file': 'disk0'}}");

    entry = softdev_entry(qts, "sd0", &count);
    g_assert(entry);
    QLIST_FOREACH_ENTRY(qdict_get_qlist(entry, "parents"), e) {
        QDict *p = qobject_to(QDict, e->value);
        const char *kind = qdict_get_str(p, "kind");

        if (g_str_equal(kind, "node")) {
            g_assert_cmpstr(qdict_get_str(p, "name"), ==, "fmt0");
            g_assert_cmpstr(qdict_get_str(p, "child"), ==, "file");
            seen_node = true;
        } else if (g_str_equal(kind, "export")) {
            g_assert_cmpstr(qdict_get_str(p, "name"), ==, "exp0");
            seen_export = true;
        } else {
            g_test_message("unexpected parent kind %s", kind);
            g_assert_not_reached();
        }
    }
    g_assert(seen_node && seen_export);
    qobject_unref(entry);

    /* The root of the device is still the format node. */
    g_autofree char *root = root_node_of(qts, VD0_QDEV);
    g_assert_cmpstr(root, ==, "fmt0");

    qtest_qmp_assert_success(qts,
        "{'execute': 'softdev-remove', 'arguments': {'node-name': 'sd0'}}");
    g_assert_null(softdev_entry(qts, "sd0", &count));

    qtest_qmp_assert_success(qts,
        "{'execute': 'block-export-del', 'arguments': {'id': 'exp0'}}");
    qtest_quit(qts);
    unlink(sock);
}

/*
 * A trace file that cannot be written must not hurt the guest: requests
 * keep succeeding, the node raises one SOFTDEV_ALERT and counts the
 * records it drops.
 */
static void test_trace_alert(void)
{
    QTestState *qts = qtest_init(
        "-blockdev driver=null-co,node-name=disk0,size=67108864,"
        "read-zeroes=on "
        "-device virtio-blk-pci,drive=disk0,id=vd0");
    QDict *ev = NULL, *data, *entry;
    int i, count;

    qtest_qmp_assert_success(qts,
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'sd0', 'file': 'disk0',"
        " 'trace-file': '/dev/full'}}");

    /* The writer thread fails on its own time: retry until it has. */
    for (i = 0; i < 200 && !ev; i++) {
        hmp_qemu_io(qts, VD0_QDEV, "write -P 0x11 0 4096");
        ev = qtest_qmp_event_ref(qts, "SOFTDEV_ALERT");
        if (!ev) {
            g_usleep(10 * 1000);
        }
    }
    g_assert(ev);
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "node-name"), ==, "sd0");
    g_assert_cmpstr(qdict_get_str(data, "driver"), ==, "softdev-trace");
    g_assert_cmpstr(qdict_get_str(data, "severity"), ==, "warning");
    g_assert_cmpstr(qdict_get_str(data, "path"), ==, "/dev/full");
    g_assert(!qdict_haskey(data, "offset"));
    qobject_unref(ev);

    /* Still one alert only, however many records are dropped. */
    hmp_qemu_io(qts, VD0_QDEV, "write -P 0x11 0 4096");
    entry = softdev_entry(qts, "sd0", &count);
    g_assert_cmpint(qdict_get_int(entry, "alerts"), ==, 1);
    g_assert_cmpint(qdict_get_int(entry, "dropped"), >=, 1);
    g_assert_cmpint(qdict_get_int(entry, "records"), ==, 0);
    g_assert_cmpint(qdict_get_int(op_stats(entry, "write"), "errors"), ==, 0);
    qobject_unref(entry);
    qtest_quit(qts);
}

static void test_errors(void)
{
    QTestState *qts = qtest_init(
        "-blockdev driver=null-co,node-name=disk0,size=67108864 "
        "-device virtio-blk-pci,drive=disk0,id=vd0");
    int count;

    assert_qmp_error(qts, "driver 'raw' is not a soft device",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'raw', 'node-name': 'x', 'file': 'disk0'}}");
    assert_qmp_error(qts, "node 'nope' not found",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'x', 'file': 'nope'}}");
    assert_qmp_error(qts, "node name 'disk0' is already in use",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'disk0',"
        " 'file': 'disk0'}}");
    assert_qmp_error(qts, "'node-name' must be specified",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'file': 'disk0'}}");
    assert_qmp_error(qts, "'file' must be the name of an existing node",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'x',"
        " 'file': {'driver': 'null-co'}}}");
    assert_qmp_error(qts, "changes the data it stores",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-xor', 'node-name': 'x', 'file': 'disk0',"
        " 'key': 90}}");
    assert_qmp_error(qts, "softdev-trace: Could not create",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'x', 'file': 'disk0',"
        " 'trace-file': '/nonexistent-dir/t.sdtrace'}}");
    assert_qmp_error(qts, "node 'nope' not found",
        "{'execute': 'softdev-remove', 'arguments': {'node-name': 'nope'}}");
    assert_qmp_error(qts,
        "node 'disk0' is not a soft device (driver 'null-co')",
        "{'execute': 'softdev-remove', 'arguments': {'node-name': 'disk0'}}");
    assert_qmp_error(qts, "Parameter 'bogus' is unexpected",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-trace', 'node-name': 'x', 'file': 'disk0',"
        " 'bogus': 1}}");

    /* Nothing was left behind by the failures. */
    g_assert_null(node_driver(qts, "x"));
    g_assert_null(softdev_entry(qts, "x", &count));
    g_assert_cmpint(count, ==, 0);
    g_autofree char *root = root_node_of(qts, VD0_QDEV);
    g_assert_cmpstr(root, ==, "disk0");
    qtest_quit(qts);
}

/*
 * softdev-crypt over QMP: a secret, blockdev-add and device_add like any
 * new disk; query-softdevs shows the cipher but never the key;
 * softdev-insert refuses it; a bad key is refused with nothing added.
 */
static void test_crypt(void)
{
    /* 64 bytes, base64: the key must never come back */
    static const char key64[] =
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"
        "MDEyMzQ1Njc4OTo7PD0+Pw==";
    QTestState *qts = qtest_init("-machine pc");
    g_autoptr(GString) text = NULL;
    QDict *resp, *entry;

    qtest_qmp_assert_success(qts, "{'execute': 'object-add', 'arguments': {"
        " 'qom-type': 'secret', 'id': 'k0', 'format': 'base64',"
        " 'data': %s}}", key64);
    qtest_qmp_assert_success(qts, "{'execute': 'object-add', 'arguments': {"
        " 'qom-type': 'secret', 'id': 'short', 'data': 'too short'}}");
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'null-co', 'node-name': 'disk0', 'size': 67108864}}");
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'null-co', 'node-name': 'disk1', 'size': 67108864}}");
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-crypt', 'node-name': 'c0', 'file': 'disk0',"
        " 'key-secret': 'k0', 'sector-size': 4096, 'iv-offset': 16}}");
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments': {"
        " 'driver': 'virtio-blk-pci', 'drive': 'c0', 'id': 'vd1'}}");

    entry = softdev_entry(qts, "c0", NULL);
    g_assert(entry);
    g_assert_cmpstr(qdict_get_str(entry, "driver"), ==, "softdev-crypt");
    g_assert_cmpstr(qdict_get_str(entry, "child"), ==, "disk0");
    g_assert_false(qdict_get_bool(entry, "content-preserving"));
    g_assert_cmpint(qdict_get_int(entry, "sector-size"), ==, 4096);
    g_assert_cmpint(qdict_get_int(entry, "iv-offset"), ==, 16);
    g_assert(strstr("vaes-avx2 aesni qcrypto",
                    qdict_get_str(entry, "impl")));
    text = qobject_to_json(QOBJECT(entry));
    g_assert_null(strstr(text->str, key64));
    g_assert_null(strstr(text->str, "AAECAwQF"));
    qobject_unref(entry);

    assert_qmp_error(qts, "changes the data it stores",
        "{'execute': 'softdev-insert', 'arguments': {"
        " 'driver': 'softdev-crypt', 'node-name': 'x', 'file': 'disk0',"
        " 'key-secret': 'k0'}}");
    assert_qmp_error(qts, "the key must be 64 bytes for aes-xts-256",
        "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-crypt', 'node-name': 'x', 'file': 'disk1',"
        " 'key-secret': 'short'}}");
    assert_qmp_error(qts, "No secret with id 'gone'",
        "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-crypt', 'node-name': 'x', 'file': 'disk1',"
        " 'key-secret': 'gone'}}");
    resp = qtest_qmp(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-crypt', 'node-name': 'x', 'file': 'disk1'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    g_assert_null(node_driver(qts, "x"));
    qtest_quit(qts);
}

static int64_t entry_int(QTestState *qts, const char *node, const char *key)
{
    QDict *entry = softdev_entry(qts, node, NULL);
    int64_t v;

    g_assert(entry);
    v = qdict_get_int(entry, key);
    qobject_unref(entry);
    return v;
}

static void run_img(const char **argv)
{
    int status;

    g_assert(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, NULL,
                          NULL, &status, NULL));
    g_assert(g_spawn_check_wait_status(status, NULL));
}

/*
 * softdev-compress over QMP: blockdev-add of an image qemu-img made, its
 * query-softdevs figures, and softdev-compact reclaiming what overwrites
 * left dead while a device is plugged on it; the data is checked after.
 */
#define VD1_QDEV "/machine/peripheral/vd1/virtio-backend"

static void test_compress(void)
{
    const char *qemu_img = g_getenv("QTEST_QEMU_IMG") ?: "./qemu-img";
    g_autofree char *dir = g_dir_make_tmp("softdev-compress-XXXXXX", NULL);
    g_autofree char *img = g_build_filename(dir, "z.img", NULL);
    g_autofree char *rnd = g_build_filename(dir, "random", NULL);
    g_autofree char *data = g_malloc(4 * 1024 * 1024);
    g_autofree char *cmd = NULL;
    const char *argv[] = {
        qemu_img, "create", "-q", "-f", "softdev-compress", "-o",
        "segment-size=1M", img, "64M", NULL
    };
    int64_t before, after, stored;
    QTestState *qts;
    QDict *resp, *ret;

    for (size_t i = 0; i < 4 * 1024 * 1024; i++) {
        data[i] = g_test_rand_int();
    }
    g_assert(g_file_set_contents(rnd, data, 4 * 1024 * 1024, NULL));
    run_img(argv);

    qts = qtest_init("-machine pc");
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'file', 'node-name': 'f0', 'filename': %s}}", img);
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-compress', 'node-name': 'z0', 'file': 'f0'}}");
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments': {"
        " 'driver': 'virtio-blk-pci', 'drive': 'z0', 'id': 'vd1'}}");
    g_assert_cmpint(entry_int(qts, "z0", "cluster-size"), ==, 65536);
    g_assert_cmpint(entry_int(qts, "z0", "logical-bytes"), ==, 0);

    /* Random data three times over the same 4 MiB, a pattern after it */
    cmd = g_strdup_printf("write -s %s 0 4M", rnd);
    for (int i = 0; i < 3; i++) {
        hmp_qemu_io(qts, VD1_QDEV, cmd);
    }
    hmp_qemu_io(qts, VD1_QDEV, "write -P 0x22 4M 4M");
    g_assert_cmpint(entry_int(qts, "z0", "logical-bytes"), ==, 8 << 20);
    stored = entry_int(qts, "z0", "stored-bytes");
    /* Random data does not compress, the pattern does */
    g_assert_cmpint(stored, >, 4 << 20);
    g_assert_cmpint(stored, <, 5 << 20);
    g_assert_cmpint(entry_int(qts, "z0", "free-bytes"), >=, 8 << 20);
    before = entry_int(qts, "z0", "image-bytes");

    resp = qtest_qmp(qts, "{'execute': 'softdev-compact', 'arguments': {"
        " 'node-name': 'z0'}}");
    ret = qdict_get_qdict(resp, "return");
    g_assert(ret);
    g_assert_cmpint(qdict_get_int(ret, "reclaimed-bytes"), >=, 8 << 20);
    qobject_unref(resp);
    after = entry_int(qts, "z0", "image-bytes");
    g_assert_cmpint(after, <=, before - (8 << 20));
    g_assert_cmpint(entry_int(qts, "z0", "stored-bytes"), ==, stored);

    assert_qmp_error(qts, "is not a soft device that compacts",
        "{'execute': 'softdev-compact', 'arguments': {'node-name': 'f0'}}");
    assert_qmp_error(qts, "Node 'nope' not found",
        "{'execute': 'softdev-compact', 'arguments': {'node-name': 'nope'}}");
    assert_qmp_error(qts, "level must be from",
        "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-compress', 'node-name': 'x', 'level': 99,"
        " 'file': {'driver': 'null-co', 'size': 1048576}}}");
    qtest_quit(qts);

    /* What compaction left is a clean image holding the same data */
    {
        const char *check[] = {
            qemu_img, "check", "-q", "-f", "softdev-compress", img, NULL
        };
        g_autofree char *raw = g_build_filename(dir, "out.raw", NULL);
        const char *conv[] = {
            qemu_img, "convert", "-f", "softdev-compress", "-O", "raw", img,
            raw, NULL
        };
        g_autofree char *got = NULL;
        gsize len;

        run_img(check);
        run_img(conv);
        g_assert(g_file_get_contents(raw, &got, &len, NULL));
        g_assert_cmpint(len, ==, 64 << 20);
        g_assert(!memcmp(got, data, 4 << 20));
        for (size_t i = 4 << 20; i < 8 << 20; i++) {
            g_assert_cmpint((uint8_t)got[i], ==, 0x22);
        }
        unlink(raw);
    }
    unlink(img);
    unlink(rnd);
    rmdir(dir);
}

/*
 * softdev-cas over QMP: duplicates stored once while a device is plugged
 * on it, query-softdevs' figures, softdev-compact collecting the chunks
 * that overwrites left unreferenced; then verify=on on an image whose
 * index says another hash: the read fails with EIO and a SOFTDEV_ALERT.
 */
#define VD2_QDEV "/machine/peripheral/vd2/virtio-backend"

static void test_cas(void)
{
    const char *qemu_img = g_getenv("QTEST_QEMU_IMG") ?: "./qemu-img";
    g_autofree char *dir = g_dir_make_tmp("softdev-cas-XXXXXX", NULL);
    g_autofree char *img = g_build_filename(dir, "c.img", NULL);
    g_autofree char *rnd = g_build_filename(dir, "random", NULL);
    g_autofree char *data = g_malloc(4 * 1024 * 1024);
    g_autofree char *cmd = NULL;
    g_autofree char *out = NULL;
    const char *create[] = {
        qemu_img, "create", "-q", "-f", "softdev-cas", "-o",
        "segment-size=1M", img, "64M", NULL
    };
    const char *check[] = {
        qemu_img, "check", "-q", "-f", "softdev-cas", img, NULL
    };
    int64_t before, after, stored;
    QTestState *qts;
    QDict *resp, *ret, *ev, *evdata;
    FILE *f;

    for (size_t i = 0; i < 4 * 1024 * 1024; i++) {
        data[i] = g_test_rand_int();
    }
    g_assert(g_file_set_contents(rnd, data, 4 * 1024 * 1024, NULL));
    run_img(create);

    qts = qtest_init("-machine pc");
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'file', 'node-name': 'f0', 'filename': %s}}", img);
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-cas', 'node-name': 'c0', 'file': 'f0'}}");
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments': {"
        " 'driver': 'virtio-blk-pci', 'drive': 'c0', 'id': 'vd2'}}");
    g_assert_cmpint(entry_int(qts, "c0", "chunk-size"), ==, 65536);

    /* The same random 4 MiB at three places: stored once */
    for (int i = 0; i < 3; i++) {
        g_free(cmd);
        cmd = g_strdup_printf("write -s %s %dM 4M", rnd, 4 * i);
        hmp_qemu_io(qts, VD2_QDEV, cmd);
    }
    g_assert_cmpint(entry_int(qts, "c0", "logical-bytes"), ==, 12 << 20);
    g_assert_cmpint(entry_int(qts, "c0", "unique-chunks"), ==, 64);
    g_assert_cmpint(entry_int(qts, "c0", "dedup-hits"), ==, 128);
    stored = entry_int(qts, "c0", "stored-bytes");
    g_assert_cmpint(stored, ==, 64 * (65536 + 512));
    g_assert_cmpint(entry_int(qts, "c0", "index-entries"), ==, 64);

    /* Overwrite all three with one chunk: the random chunks are garbage */
    hmp_qemu_io(qts, VD2_QDEV, "write -P 0x22 0 12M");
    g_assert_cmpint(entry_int(qts, "c0", "unique-chunks"), ==, 1);
    g_assert_cmpint(entry_int(qts, "c0", "free-bytes"), >=, 4 << 20);
    before = entry_int(qts, "c0", "image-bytes");
    resp = qtest_qmp(qts, "{'execute': 'softdev-compact', 'arguments': {"
        " 'node-name': 'c0'}}");
    ret = qdict_get_qdict(resp, "return");
    g_assert(ret);
    g_assert_cmpint(qdict_get_int(ret, "reclaimed-bytes"), >=, 4 << 20);
    qobject_unref(resp);
    after = entry_int(qts, "c0", "image-bytes");
    g_assert_cmpint(after, <=, before - (4 << 20));
    g_assert_cmpint(entry_int(qts, "c0", "stored-bytes"), ==, 65536 + 512);
    g_assert_cmpint(entry_int(qts, "c0", "index-entries"), ==, 1);
    hmp_qemu_io(qts, VD2_QDEV, "read -P 0x22 0 12M");
    g_free(cmd);
    cmd = g_strdup_printf("write -s %s 12M 4M", rnd);
    hmp_qemu_io(qts, VD2_QDEV, cmd);
    qtest_quit(qts);
    run_img(check);
    {
        g_autofree char *raw = g_build_filename(dir, "out.raw", NULL);
        const char *conv[] = {
            qemu_img, "convert", "-f", "softdev-cas", "-O", "raw", img, raw,
            NULL
        };
        g_autofree char *got = NULL;
        gsize len;

        run_img(conv);
        g_assert(g_file_get_contents(raw, &got, &len, NULL));
        g_assert_cmpint(len, ==, 64 << 20);
        for (size_t i = 0; i < 12 << 20; i++) {
            g_assert_cmpint((uint8_t)got[i], ==, 0x22);
        }
        g_assert(!memcmp(got + (12 << 20), data, 4 << 20));
        unlink(raw);
    }

    /*
     * Chunk 192's hash beside the map, in both map areas (64M: 1024
     * entries of 8 bytes, then the hashes; area 0 at 12288, 1 at 53248)
     */
    f = fopen(img, "r+b");
    g_assert(f);
    for (int area = 0; area < 2; area++) {
        g_assert(fseek(f, (area ? 53248 : 12288) + 8192 + 32 * 192,
                       SEEK_SET) == 0);
        g_assert(fputc(0x5a, f) != EOF);
    }
    g_assert(fclose(f) == 0);
    qts = qtest_init("-machine pc");
    qtest_qmp_assert_success(qts, "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-cas', 'node-name': 'c1', 'verify': true,"
        " 'file': {'driver': 'file', 'filename': %s}}}", img);
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments': {"
        " 'driver': 'virtio-blk-pci', 'drive': 'c1', 'id': 'vd2'}}");
    /* The read fails (qemu-io says so on QEMU's stderr): the alert */
    out = qtest_hmp(qts, "qemu-io -d %s \"read 12M 64k\"", VD2_QDEV);
    ev = qtest_qmp_eventwait_ref(qts, "SOFTDEV_ALERT");
    evdata = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(evdata, "node-name"), ==, "c1");
    g_assert_cmpstr(qdict_get_str(evdata, "driver"), ==, "softdev-cas");
    g_assert_cmpstr(qdict_get_str(evdata, "severity"), ==, "critical");
    g_assert_cmpint(qdict_get_int(evdata, "offset"), ==, 12 << 20);
    g_assert_nonnull(strstr(qdict_get_str(evdata, "message"), "SHA-256"));
    qobject_unref(ev);
    g_assert_cmpint(entry_int(qts, "c1", "verify-failures"), ==, 1);
    /* The other chunks read as written */
    hmp_qemu_io(qts, VD2_QDEV, "read -P 0x22 0 12M");
    hmp_qemu_io(qts, VD2_QDEV, "read 13M 3M");
    assert_qmp_error(qts, "Invalid parameter type for 'verify'",
        "{'execute': 'blockdev-add', 'arguments': {"
        " 'driver': 'softdev-cas', 'node-name': 'x', 'verify': 'yes',"
        " 'file': {'driver': 'null-co', 'size': 1048576}}}");
    qtest_quit(qts);
    unlink(img);
    unlink(rnd);
    rmdir(dir);
}

/*
 * softdev-xen-disk checks its configuration when it is created (it acts
 * only when a Xen guest's disk appears, which needs a real Xen: see
 * tests/xen).
 */
static void test_xen_disk_object(void)
{
    QTestState *qts = qtest_init("-machine none");
    QDict *resp;

    resp = qtest_qmp(qts, "{'execute': 'object-add', 'arguments': {"
        " 'qom-type': 'softdev-xen-disk', 'id': 'sx0', 'vdev': 'xvda',"
        " 'domid': 3, 'chain': [ {'driver': 'softdev-trace'},"
        "   {'driver': 'softdev-xor', 'key': 90, 'node-name': 'x1'} ]}}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments': {"
        " 'path': '/objects/sx0', 'property': 'vdev'}}");
    g_assert_cmpstr(qdict_get_try_str(resp, "return"), ==, "xvda");
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments': {"
        " 'path': '/objects/sx0', 'property': 'domid'}}");
    g_assert_cmpint(qdict_get_int(resp, "return"), ==, 3);
    qobject_unref(resp);
    assert_qmp_error(qts, "'vdev' cannot change once the object exists",
        "{'execute': 'qom-set', 'arguments': {"
        " 'path': '/objects/sx0', 'property': 'vdev', 'value': 'xvdb'}}");

#define XEN_DISK_ERROR(msg, members)                                    \
    assert_qmp_error(qts, msg,                                          \
        "{'execute': 'object-add', 'arguments': {"                      \
        " 'qom-type': 'softdev-xen-disk', 'id': 'bad', " members "}}")
    XEN_DISK_ERROR("'vdev' must be given",
                   "'vdev': '', 'chain': [ {'driver': 'softdev-trace'} ]");
    XEN_DISK_ERROR("'chain' must list at least one soft device",
                   "'vdev': 'xvda', 'chain': []");
    XEN_DISK_ERROR("chain[1]: driver 'raw' is not a soft device",
                   "'vdev': 'xvda', 'chain': [ {'driver': 'softdev-trace'},"
                   " {'driver': 'raw'} ]");
    XEN_DISK_ERROR("chain[0]: 'driver' must be given",
                   "'vdev': 'xvda', 'chain': [ {'node-name': 'x'} ]");
    XEN_DISK_ERROR("chain[0] must be an object",
                   "'vdev': 'xvda', 'chain': [ 'softdev-trace' ]");
    XEN_DISK_ERROR("chain[0]: 'file' is filled in",
                   "'vdev': 'xvda', 'chain': [ {'driver': 'softdev-trace',"
                   " 'file': 'disk0'} ]");
    XEN_DISK_ERROR("chain[0]: Parameter 'bogus' is unexpected",
                   "'vdev': 'xvda', 'chain': [ {'driver': 'softdev-trace',"
                   " 'bogus': 1} ]");
    XEN_DISK_ERROR("chain[0]: Parameter 'key' is missing",
                   "'vdev': 'xvda', 'chain': [ {'driver': 'softdev-xor'} ]");
    XEN_DISK_ERROR("'domid' 32752 is not a guest's domain id",
                   "'vdev': 'xvda', 'domid': 32752,"
                   " 'chain': [ {'driver': 'softdev-trace'} ]");
#undef XEN_DISK_ERROR
    resp = qtest_qmp(qts, "{'execute': 'qom-list', 'arguments': {"
        " 'path': '/objects/bad'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    if (!qtest_has_device("virtio-blk-pci")) {
        g_test_skip("virtio-blk-pci not available");
        return g_test_run();
    }
    qtest_add_func("/softdev/insert-remove-root", test_insert_remove_root);
    qtest_add_func("/softdev/insert-remove-iothread",
                   test_insert_remove_iothread);
    qtest_add_func("/softdev/insert-all-parents", test_insert_all_parents);
    qtest_add_func("/softdev/trace-alert", test_trace_alert);
    qtest_add_func("/softdev/errors", test_errors);
    qtest_add_func("/softdev/crypt", test_crypt);
    qtest_add_func("/softdev/compress", test_compress);
    qtest_add_func("/softdev/cas", test_cas);
    if (qtest_has_machine("xenpv")) {
        qtest_add_func("/softdev/xen-disk-object", test_xen_disk_object);
    }
    return g_test_run();
}
