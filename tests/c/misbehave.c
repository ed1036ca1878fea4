/*
 * A static program that misbehaves on request, for the pod tests (tests/tests/pod.rs).
 * Built at test time with `gcc -static -O1`.
 *
 *   misbehave segv   writes through a null-page pointer (SIGSEGV: exit 139)
 *   misbehave oom    allocates and touches 1 MiB blocks until the guest runs out (exit 137)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int segv(void)
{
    puts("misbehave: about to fault");
    fflush(stdout);
    volatile int *p = (volatile int *)16;
    *p = 1;
    puts("misbehave: still alive after the fault");
    return 0;
}

static int oom(void)
{
    const size_t block = 1 << 20;
    unsigned long mib = 0;
    for (;;) {
        char *b = malloc(block);
        if (b == NULL) {
            printf("misbehave: malloc failed after %lu MiB\n", mib);
            return 3;
        }
        /* Touch every page so the memory is really taken. */
        memset(b, 0x5a, block);
        mib++;
        if (mib % 8 == 0) {
            printf("misbehave: %lu MiB\n", mib);
            fflush(stdout);
        }
    }
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "segv") == 0)
        return segv();
    if (strcmp(what, "oom") == 0)
        return oom();
    fprintf(stderr, "usage: misbehave segv|oom\n");
    return 2;
}
