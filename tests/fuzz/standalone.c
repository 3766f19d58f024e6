/*
 * Runs a libFuzzer target on the files named on the command line, for
 * builds without libFuzzer (gcc, ASan/UBSan): tests/unit/run-c-tests.sh
 * replays the seed corpus this way.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, n;

        if (!f) {
            perror(argv[i]);
            return 1;
        }
        do {
            if (len == cap) {
                cap = cap ? 2 * cap : 65536;
                buf = realloc(buf, cap);
                if (!buf) {
                    fprintf(stderr, "out of memory\n");
                    return 1;
                }
            }
            n = fread(buf + len, 1, cap - len, f);
            len += n;
        } while (n);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
    }
    printf("%s: %d inputs\n", argv[0], argc - 1);
    return 0;
}
