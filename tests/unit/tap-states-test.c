/*
 * Unit tests of softdev-tap's state machines (block/softdev/tap-states.c):
 * the transition tables against an independent list of the legal moves,
 * and a randomized run that drives requests through sends, answers,
 * timeouts, disconnects and replays with the driver's rules, checked
 * against a simple model of what each on-disconnect policy promises.
 * Built twice by run-c-tests.sh: as a release build, where an illegal
 * move reaches the caller's bug hook, and with
 * SOFTDEV_TAP_ASSERT_TRANSITIONS=1, as a debug build, where it aborts.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/softdev/tap-states.h"

static int passed, failed;

#define CHECK(cond) do { \
    if (cond) { \
        passed++; \
    } else { \
        if (failed++ < 20) { \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, \
                    #cond); \
        } \
    } \
} while (0)

/* The legal moves, written out as the design says them */
static const char *const legal_req[] = {
    "new>queued", "new>done", "queued>sent", "queued>done", "replay>sent",
    "replay>done", "sent>done", "sent>replay", "sent>overdue",
    "overdue>done", "overdue>replay", NULL
};

static const char *const legal_conn[] = {
    "connecting>connected", "connecting>disconnected",
    "connected>draining", "connected>connecting", "connected>disconnected",
    "draining>connecting", "draining>disconnected",
    "disconnected>connecting", NULL
};

static int listed(const char *const *list, const char *from, const char *to)
{
    char move[64];

    snprintf(move, sizeof(move), "%s>%s", from, to);
    for (; *list; list++) {
        if (!strcmp(*list, move)) {
            return 1;
        }
    }
    return 0;
}

static void test_tables(void)
{
    int a, b;

    for (a = 0; a < SOFTDEV_TAP_REQ__MAX; a++) {
        for (b = 0; b < SOFTDEV_TAP_REQ__MAX; b++) {
            CHECK(softdev_tap_req_transition_ok(a, b) ==
                  listed(legal_req, softdev_tap_req_state_name(a),
                         softdev_tap_req_state_name(b)));
        }
    }
    for (a = 0; a < SOFTDEV_TAP_CONN__MAX; a++) {
        for (b = 0; b < SOFTDEV_TAP_CONN__MAX; b++) {
            CHECK(softdev_tap_conn_transition_ok(a, b) ==
                  listed(legal_conn, softdev_tap_conn_state_name(a),
                         softdev_tap_conn_state_name(b)));
        }
    }
    for (a = 0; a < SOFTDEV_TAP_EARLY__MAX; a++) {
        for (b = 0; b < SOFTDEV_TAP_EARLY__MAX; b++) {
            CHECK(softdev_tap_early_transition_ok(a, b) == (b == a + 1));
        }
    }
    /* Out of range is never legal, and has a name */
    CHECK(!softdev_tap_req_transition_ok(SOFTDEV_TAP_REQ__MAX,
                                         SOFTDEV_TAP_REQ_DONE));
    CHECK(!softdev_tap_req_transition_ok(SOFTDEV_TAP_REQ_NEW, -1));
    CHECK(!softdev_tap_conn_transition_ok(SOFTDEV_TAP_CONN__MAX, 0));
    CHECK(!strcmp(softdev_tap_req_state_name(99), "invalid"));
    /* Nothing leaves DONE */
    for (b = 0; b < SOFTDEV_TAP_REQ__MAX; b++) {
        CHECK(!softdev_tap_req_transition_ok(SOFTDEV_TAP_REQ_DONE, b));
    }
}

typedef struct Bugs {
    int count;
    char last[96];
} Bugs;

static void record_bug(void *opaque, const char *machine, const char *from,
                       const char *to)
{
    Bugs *b = opaque;

    b->count++;
    snprintf(b->last, sizeof(b->last), "%s %s>%s", machine, from, to);
}

/* Whether @fn aborts (in a child process) */
static int aborts(void (*fn)(void))
{
    int status;
    pid_t pid = fork();

    if (pid == 0) {
        fclose(stderr);             /* the expected message */
        fn();
        _exit(0);
    }
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void illegal_req(void)
{
    softdev_tap_req_legal(SOFTDEV_TAP_REQ_DONE, SOFTDEV_TAP_REQ_SENT,
                          record_bug, &(Bugs) { 0 });
}

static void illegal_conn(void)
{
    softdev_tap_conn_legal(SOFTDEV_TAP_CONN_DISCONNECTED,
                           SOFTDEV_TAP_CONN_DRAINING, record_bug,
                           &(Bugs) { 0 });
}

static void test_illegal_moves(void)
{
    Bugs b = { 0 };

    /* Legal moves pass without a word */
    CHECK(softdev_tap_req_legal(SOFTDEV_TAP_REQ_QUEUED, SOFTDEV_TAP_REQ_SENT,
                                record_bug, &b));
    CHECK(softdev_tap_early_legal(SOFTDEV_TAP_EARLY_NONE,
                                  SOFTDEV_TAP_EARLY_RUNNING, record_bug, &b));
    CHECK(softdev_tap_conn_legal(SOFTDEV_TAP_CONN_CONNECTED,
                                 SOFTDEV_TAP_CONN_DRAINING, record_bug, &b));
    CHECK(b.count == 0);
    if (SOFTDEV_TAP_ASSERT_TRANSITIONS) {
        /* Debug build: an illegal move stops the program */
        CHECK(aborts(illegal_req));
        CHECK(aborts(illegal_conn));
        return;
    }
    /* Release build: the hook hears of each, the caller is told no */
    CHECK(!softdev_tap_req_legal(SOFTDEV_TAP_REQ_DONE, SOFTDEV_TAP_REQ_SENT,
                                 record_bug, &b));
    CHECK(b.count == 1 && !strcmp(b.last, "request done>sent"));
    CHECK(!softdev_tap_req_legal(SOFTDEV_TAP_REQ_REPLAY,
                                 SOFTDEV_TAP_REQ_OVERDUE, record_bug, &b));
    CHECK(b.count == 2 && !strcmp(b.last, "request replay>overdue"));
    CHECK(!softdev_tap_early_legal(SOFTDEV_TAP_EARLY_FINISHED,
                                   SOFTDEV_TAP_EARLY_RUNNING, record_bug, &b));
    CHECK(b.count == 3 && !strcmp(b.last, "early I/O finished>running"));
    CHECK(!softdev_tap_conn_legal(SOFTDEV_TAP_CONN_DISCONNECTED,
                                  SOFTDEV_TAP_CONN_DRAINING, record_bug, &b));
    CHECK(b.count == 4 &&
          !strcmp(b.last, "connection disconnected>draining"));
    CHECK(!aborts(illegal_req) && !aborts(illegal_conn));
}

enum { POLICY_QUEUE, POLICY_FAIL, POLICY_PASSTHROUGH };
enum { RES_NONE, RES_ANSWER, RES_EIO, RES_BELOW };

#define NREQ        64
#define INFLIGHT    8

typedef struct Req {
    SoftdevTapReqState st;
    int result;             /* RES_* once done */
    int done_count;
    int sent_count;         /* times posted */
    int replay_flags;       /* posts flagged as replays */
    /* The model */
    int sent_before;        /* sent to a process that then went away */
    int expect;             /* RES_* the model predicts, or RES_NONE */
} Req;

/* Move @r, checking the move against the table */
static void move(Req *r, SoftdevTapReqState to, int *illegal)
{
    if (!softdev_tap_req_transition_ok(r->st, to)) {
        (*illegal)++;
    }
    r->st = to;
}

static void finish(Req *r, int res, int *illegal)
{
    move(r, SOFTDEV_TAP_REQ_DONE, illegal);
    r->result = res;
    r->done_count++;
}

static void run_random(unsigned seed, int policy)
{
    Req reqs[NREQ] = { 0 };
    SoftdevTapConnState conn = SOFTDEV_TAP_CONN_CONNECTING;
    bool queue = policy == POLICY_QUEUE;
    int illegal = 0, at_process = 0, max_at_process = 0;
    int step, i, admitted = 0;

    srand(seed);
    conn = SOFTDEV_TAP_CONN_CONNECTED;
    for (step = 0; step < 4000; step++) {
        int ev = rand() % 8;
        Req *r = &reqs[rand() % NREQ];

        switch (ev) {
        case 0:     /* a request comes */
            if (admitted < NREQ) {
                r = &reqs[admitted++];
                if (conn != SOFTDEV_TAP_CONN_CONNECTED &&
                    conn != SOFTDEV_TAP_CONN_DRAINING && !queue) {
                    r->expect = policy == POLICY_FAIL ? RES_EIO : RES_BELOW;
                    finish(r, r->expect, &illegal);
                } else {
                    move(r, SOFTDEV_TAP_REQ_QUEUED, &illegal);
                }
            }
            break;
        case 1:     /* the pump sends what fits, in order */
        case 2:
            for (i = 0; i < admitted && conn == SOFTDEV_TAP_CONN_CONNECTED;
                 i++) {
                Req *q = &reqs[i];

                if ((q->st == SOFTDEV_TAP_REQ_QUEUED ||
                     q->st == SOFTDEV_TAP_REQ_REPLAY) &&
                    at_process < INFLIGHT) {
                    q->replay_flags += q->st == SOFTDEV_TAP_REQ_REPLAY;
                    q->sent_count++;
                    move(q, SOFTDEV_TAP_REQ_SENT, &illegal);
                    at_process++;
                }
            }
            break;
        case 3:     /* the process answers one */
        case 4:
            if (softdev_tap_req_at_process(r->st)) {
                r->expect = RES_ANSWER;
                finish(r, RES_ANSWER, &illegal);
                at_process--;
            }
            break;
        case 5: {   /* its deadline passes */
            bool drop;
            SoftdevTapReqState st;

            if (r->st == SOFTDEV_TAP_REQ_NEW || r->st == SOFTDEV_TAP_REQ_DONE) {
                break;
            }
            st = softdev_tap_req_on_timeout(r->st, queue, &drop);
            /* The model: a request that never reached a process, or any
             * under queue, fails with -EIO; a sent one drops the process */
            if (drop != (r->st == SOFTDEV_TAP_REQ_SENT)) {
                illegal++;
            }
            if (drop && conn == SOFTDEV_TAP_CONN_CONNECTED) {
                conn = SOFTDEV_TAP_CONN_DRAINING;
            }
            if (st == SOFTDEV_TAP_REQ_DONE) {
                r->expect = RES_EIO;
                at_process -= softdev_tap_req_at_process(r->st);
                finish(r, RES_EIO, &illegal);
            } else if (st != r->st) {
                move(r, st, &illegal);
            }
            break;
        }
        case 6:     /* the process goes away */
            if (conn != SOFTDEV_TAP_CONN_CONNECTED &&
                conn != SOFTDEV_TAP_CONN_DRAINING) {
                break;
            }
            if (!softdev_tap_conn_transition_ok(conn,
                                                SOFTDEV_TAP_CONN_CONNECTING)) {
                illegal++;
            }
            conn = SOFTDEV_TAP_CONN_CONNECTING;
            for (i = 0; i < admitted; i++) {
                Req *q = &reqs[i];
                SoftdevTapReqState st;

                if (q->st == SOFTDEV_TAP_REQ_DONE) {
                    continue;
                }
                q->sent_before += softdev_tap_req_at_process(q->st);
                st = softdev_tap_req_on_disconnect(q->st, queue);
                if (st == SOFTDEV_TAP_REQ_DONE) {
                    q->expect = policy == POLICY_FAIL ? RES_EIO : RES_BELOW;
                    finish(q, q->expect, &illegal);
                } else if (st != q->st) {
                    move(q, st, &illegal);
                }
            }
            at_process = 0;
            break;
        case 7:     /* it is back */
            if (conn == SOFTDEV_TAP_CONN_CONNECTING) {
                conn = SOFTDEV_TAP_CONN_CONNECTED;
            }
            break;
        }
        if (at_process > max_at_process) {
            max_at_process = at_process;
        }
    }
    CHECK(illegal == 0);
    CHECK(max_at_process <= INFLIGHT);
    for (i = 0; i < admitted; i++) {
        Req *r = &reqs[i];

        /* Decided at most once, as the model predicted */
        CHECK(r->done_count <= 1);
        CHECK(r->st != SOFTDEV_TAP_REQ_DONE || r->result == r->expect);
        /*
         * Replays: only under queue, where every send after the first is
         * flagged, and each follows the loss of the process it was at
         */
        if (queue && r->sent_count) {
            CHECK(r->replay_flags == r->sent_count - 1);
            CHECK(r->sent_before == r->sent_count - 1 ||
                  r->sent_before == r->sent_count);
        } else {
            CHECK(r->replay_flags == 0 && r->sent_count <= 1);
        }
        /* Nothing but queue keeps a request across a lost process */
        CHECK(queue || !r->sent_before || r->st == SOFTDEV_TAP_REQ_DONE);
        CHECK(r->st != SOFTDEV_TAP_REQ_REPLAY || queue);
    }
}

static void test_random(void)
{
    unsigned seed;

    for (seed = 1; seed <= 300; seed++) {
        run_random(seed, seed % 3);
    }
}

int main(void)
{
    test_tables();
    test_illegal_moves();
    test_random();
    printf("tap-states-test%s: %d passed, %d failed\n",
           SOFTDEV_TAP_ASSERT_TRANSITIONS ? " (debug build)" : "", passed,
           failed);
    return failed ? 1 : 0;
}
