/*
 * The checks of the C unit tests: CHECK(cond) counts a pass or reports a
 * failure with its place, and UNIT_CHECK_DONE(name) prints the counts and
 * gives main()'s exit status.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef SOFTDEV_UNIT_CHECK_H
#define SOFTDEV_UNIT_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond) do { \
    if (cond) { \
        passed++; \
    } else { \
        failed++; \
        fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
    } \
} while (0)

#define UNIT_CHECK_DONE(name) \
    (printf("%s: %d passed, %d failed\n", (name), passed, failed), \
     failed ? 1 : 0)

#endif /* SOFTDEV_UNIT_CHECK_H */
