/* The CPU-bound program of `cargo xtask bench --only cpu`: N rounds of a xorshift
 * generator, timed with CLOCK_MONOTONIC. As Linux's init (pid 1, a second argument) it
 * powers the machine off when done. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/reboot.h>

static unsigned long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

int main(int argc, char **argv) {
    unsigned long n = argc > 1 ? strtoul(argv[1], 0, 10) : 10000000ul;
    unsigned long long x = 88172645463325252ull, sum = 0;
    unsigned long long t0 = now_ns();
    for (unsigned long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum += x & 0xff;
        __asm__ volatile("" : "+r"(x));
    }
    unsigned long long t1 = now_ns();
    printf("cpu-loop: %lu rounds in %llu ns (checksum %llu)\n", n, t1 - t0, sum);
    fflush(stdout);
    if (getpid() == 1 && argc > 2)
        reboot(RB_POWER_OFF);
    return 0;
}
