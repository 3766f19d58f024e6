/*
 * The smallest soft device: no callbacks, so every request is forwarded
 * unchanged to the node below.  Usage: passthrough --unix PATH
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "softdev.h"

static const struct softdev_device passthrough = {
    .api_version = SOFTDEV_API_VERSION,
    .name = "passthrough",
};

int main(int argc, char **argv)
{
    return softdev_main(&passthrough, argc, argv);
}
