/*
 * What one wake-up of another process costs, next to one of another
 * thread: N round trips of one byte over two pipes, between two
 * processes and then between two threads of one process, on whatever
 * CPUs the kernel gives them.  A process's wake-up may switch address
 * spaces, a thread's does not.  The Xen bed's benchmark runs it in dom0,
 * where the device model and a soft-device process share one vCPU.
 * Prints: SWITCH-COST rounds=N process_us=P thread_us=T (per round trip)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];
static long rounds;

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* The other side: answer every byte */
static void *echo(void *arg)
{
    char c;
    long i;

    (void)arg;
    for (i = 0; i < rounds; i++) {
        if (read(ping[0], &c, 1) != 1 || write(pong[1], &c, 1) != 1) {
            break;
        }
    }
    return NULL;
}

/* Our side: N round trips; microseconds per round trip, or -1 */
static double trips(void)
{
    double t0 = now_us();
    char c = 'x';
    long i;

    for (i = 0; i < rounds; i++) {
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1) {
            return -1;
        }
    }
    return (now_us() - t0) / rounds;
}

int main(int argc, char **argv)
{
    double proc_us, thread_us;
    pthread_t th;
    pid_t pid;

    rounds = argc > 1 ? atol(argv[1]) : 2000;
    if (rounds < 1 || pipe(ping) || pipe(pong)) {
        fprintf(stderr, "usage: %s [ROUNDS]\n", argv[0]);
        return 2;
    }
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        echo(NULL);
        _exit(0);
    }
    proc_us = trips();
    waitpid(pid, NULL, 0);
    if (pthread_create(&th, NULL, echo, NULL)) {
        return 1;
    }
    thread_us = trips();
    pthread_join(th, NULL);
    printf("SWITCH-COST rounds=%ld process_us=%.1f thread_us=%.1f\n",
           rounds, proc_us, thread_us);
    return proc_us < 0 || thread_us < 0;
}
