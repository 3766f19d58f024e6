/*
 * Unit tests of libsoftdev's adaptive polling (libsoftdev/conn.c): the
 * window opens and grows while requests come soon after the device went
 * to sleep, never beyond --poll-us, and closes after long sleeps; the
 * defaults poll, --poll-us 0 never does.  What it saves under load is
 * measured by 'make bench', not here.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>

#include "server-internal.h"

#include "tests/unit/unit-check.h"

static const struct softdev_device dev = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "poll-test",
    .size = 1 << 20,
};

/* Short sleeps open the window and double it up to the maximum */
static void test_grows(void)
{
    uint64_t w = 0, max = 200000;
    int steps = 0;

    w = conn_poll_window(w, max, 10000);
    CHECK(w == POLL_START_NS);
    while (w < max && steps++ < 64) {
        uint64_t prev = w;
        w = conn_poll_window(w, max, 50000);
        CHECK(w == (prev * POLL_GROW < max ? prev * POLL_GROW : max));
    }
    CHECK(w == max);
    CHECK(steps == 6);              /* 4 8 16 32 64 128 -> 200 us */
    /* At the maximum it stays */
    CHECK(conn_poll_window(w, max, max) == max);
}

/* Long sleeps halve it, and below the start it closes */
static void test_shrinks(void)
{
    uint64_t w = 200000, max = 200000;
    int steps = 0;

    while (w && steps++ < 64) {
        uint64_t prev = w;
        w = conn_poll_window(w, max, max + 1);
        CHECK(w == (prev / POLL_GROW >= POLL_START_NS ? prev / POLL_GROW : 0));
    }
    CHECK(w == 0);
    CHECK(steps == 6);
    /* An idle device stays closed */
    CHECK(conn_poll_window(0, max, 10ull * 1000 * 1000 * 1000) == 0);
}

/* --poll-us 0: never opens; a smaller --poll-us caps it */
static void test_limits(void)
{
    CHECK(conn_poll_window(0, 0, 0) == 0);
    CHECK(conn_poll_window(0, 0, 1000) == 0);
    CHECK(conn_poll_window(0, 3000, 1000) == 3000);
    CHECK(conn_poll_window(3000, 3000, 1000) == 3000);
    /* A window left from a larger maximum comes down to the new one */
    CHECK(conn_poll_window(400000, 200000, 1000) == 200000);
}

/* Defaults: NULL options and SOFTDEV_SERVER_OPTIONS_INIT both poll */
static void test_defaults(void)
{
    struct softdev_server_options o = SOFTDEV_SERVER_OPTIONS_INIT;
    Conn c;

    CHECK(o.poll_ns == SOFTDEV_POLL_NS_DEFAULT && o.poll_ns > 0);
    CHECK(conn_init(&c, &dev, NULL, -1, NULL) == 0);
    CHECK(c.poll_max_ns == SOFTDEV_POLL_NS_DEFAULT);
    CHECK(c.poll_ns == 0);          /* opens only once requests come */
    conn_destroy(&c);

    o.poll_ns = 0;
    CHECK(conn_init(&c, &dev, NULL, -1, &o) == 0);
    CHECK(c.poll_max_ns == 0);
    conn_destroy(&c);

    /* A caller built before poll_ns existed gets the default */
    o.size = offsetof(struct softdev_server_options, poll_ns);
    o.poll_ns = 0;
    CHECK(conn_init(&c, &dev, NULL, -1, &o) == 0);
    CHECK(c.poll_max_ns == SOFTDEV_POLL_NS_DEFAULT);
    conn_destroy(&c);
}

int main(void)
{
    test_grows();
    test_shrinks();
    test_limits();
    test_defaults();
    return UNIT_CHECK_DONE("libsoftdev-poll-test");
}
