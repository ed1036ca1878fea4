/*
 * ctest: the static C test program with threads of tests/tests/programs.rs, one
 * subcommand per case. Built by the tests with `gcc -static -pthread -O1`. Each
 * subcommand prints a distinctive last line on success and exits 0; a failed check
 * prints a line saying what and exits 1.
 *
 *   ctest mutex           8 threads add to a counter under a mutex, meet at a condvar
 *                         barrier, then drain a condvar queue the main thread fills
 *   ctest tls             __thread variables differ per thread
 *   ctest segv            a second thread writes to address 0x10: the whole process dies
 *                         of SIGSEGV (139 as the shell sees it)
 *   ctest threadbomb [MAX] creates threads (64 KiB stacks, each waiting) until
 *                         pthread_create fails (at most MAX, 10000 by default), prints
 *                         how many and the error, then releases and joins them all
 *   ctest futexfault      futex(0x10, FUTEX_WAIT, 0, NULL) must fail with EFAULT
 *   ctest spin N          N rounds of a xorshift generator in one thread, the result
 *   ctest spin2 SECONDS [ROUNDS]   two threads spin for SECONDS of wall-clock time each
 *                         (reading the clock every ROUNDS rounds, 10000 by default) and print
 *                         their own CPU time (CLOCK_THREAD_CPUTIME_ID)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int failed(const char *what, int err)
{
    printf("ctest: FAILED: %s: %s\n", what, strerror(err));
    return 1;
}

/* ---- mutex: counter, barrier, queue ---- */

#define THREADS 8
#define INCREMENTS 100000
#define QUEUE_SIZE 4
#define ITEMS 1000
#define CONSUMERS 2

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

/* A barrier made of a mutex and a condition variable. */
static pthread_mutex_t barrier_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t barrier_cond = PTHREAD_COND_INITIALIZER;
static int barrier_waiting;
static int barrier_generation;

static void barrier_wait(int parties)
{
    pthread_mutex_lock(&barrier_lock);
    int gen = barrier_generation;
    if (++barrier_waiting == parties) {
        barrier_waiting = 0;
        barrier_generation++;
        pthread_cond_broadcast(&barrier_cond);
    } else {
        while (gen == barrier_generation)
            pthread_cond_wait(&barrier_cond, &barrier_lock);
    }
    pthread_mutex_unlock(&barrier_lock);
}

/* A bounded queue: the main thread puts 1..ITEMS and then one 0 per consumer. */
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t queue_not_full = PTHREAD_COND_INITIALIZER;
static int queue[QUEUE_SIZE];
static int queue_head, queue_len;

static void queue_put(int v)
{
    pthread_mutex_lock(&queue_lock);
    while (queue_len == QUEUE_SIZE)
        pthread_cond_wait(&queue_not_full, &queue_lock);
    queue[(queue_head + queue_len) % QUEUE_SIZE] = v;
    queue_len++;
    pthread_cond_signal(&queue_not_empty);
    pthread_mutex_unlock(&queue_lock);
}

static int queue_get(void)
{
    pthread_mutex_lock(&queue_lock);
    while (queue_len == 0)
        pthread_cond_wait(&queue_not_empty, &queue_lock);
    int v = queue[queue_head];
    queue_head = (queue_head + 1) % QUEUE_SIZE;
    queue_len--;
    pthread_cond_signal(&queue_not_full);
    pthread_mutex_unlock(&queue_lock);
    return v;
}

static long consumed[CONSUMERS];

static void *counter_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < INCREMENTS; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
        if (i % 1000 == 0)
            sched_yield();
    }
    barrier_wait(THREADS + 1);
    return NULL;
}

static void *consumer_thread(void *arg)
{
    long *sum = arg;
    for (int v; (v = queue_get()) != 0;)
        *sum += v;
    return NULL;
}

static int mutex_case(void)
{
    pthread_t t[THREADS], c[CONSUMERS];
    int e;
    for (int i = 0; i < THREADS; i++)
        if ((e = pthread_create(&t[i], NULL, counter_thread, NULL)) != 0)
            return failed("pthread_create", e);
    /* The main thread is the barrier's last party: every thread has counted by now. */
    barrier_wait(THREADS + 1);
    pthread_mutex_lock(&lock);
    long at_barrier = counter;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    printf("mutex: counter=%ld after the barrier, want %d\n", at_barrier, THREADS * INCREMENTS);
    if (at_barrier != (long)THREADS * INCREMENTS)
        return 1;

    for (int i = 0; i < CONSUMERS; i++)
        if ((e = pthread_create(&c[i], NULL, consumer_thread, &consumed[i])) != 0)
            return failed("pthread_create", e);
    for (int v = 1; v <= ITEMS; v++)
        queue_put(v);
    for (int i = 0; i < CONSUMERS; i++)
        queue_put(0);
    long total = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(c[i], NULL);
        total += consumed[i];
    }
    printf("mutex: queue total=%ld, want %d\n", total, ITEMS * (ITEMS + 1) / 2);
    if (total != ITEMS * (ITEMS + 1) / 2)
        return 1;
    printf("mutex: ok\n");
    return 0;
}

/* ---- tls ---- */

#define TLS_THREADS 4
static __thread int tls_value = 7;
static __thread char tls_name[16] = "main";
static int tls_seen[TLS_THREADS];
static char tls_names[TLS_THREADS][16];

static void *tls_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    if (tls_value != 7) {
        /* A new thread starts with the initial image, not another thread's values. */
        tls_seen[id] = -tls_value;
        return NULL;
    }
    tls_value = 100 * (id + 1);
    snprintf(tls_name, sizeof tls_name, "thread%d", id);
    /* Everyone has written its own value before anyone reads it back. */
    barrier_wait(TLS_THREADS);
    tls_seen[id] = tls_value;
    memcpy(tls_names[id], tls_name, sizeof tls_name);
    return NULL;
}

static int tls_case(void)
{
    pthread_t t[TLS_THREADS];
    int e;
    tls_value = 1;
    for (int i = 0; i < TLS_THREADS; i++)
        if ((e = pthread_create(&t[i], NULL, tls_thread, (void *)(intptr_t)i)) != 0)
            return failed("pthread_create", e);
    for (int i = 0; i < TLS_THREADS; i++)
        pthread_join(t[i], NULL);
    int bad = 0;
    for (int i = 0; i < TLS_THREADS; i++) {
        printf("tls: thread %d saw %d (%s)\n", i, tls_seen[i], tls_names[i]);
        char want[16];
        snprintf(want, sizeof want, "thread%d", i);
        bad |= tls_seen[i] != 100 * (i + 1) || strcmp(tls_names[i], want) != 0;
    }
    printf("tls: main thread still has %d (%s)\n", tls_value, tls_name);
    bad |= tls_value != 1 || strcmp(tls_name, "main") != 0;
    if (bad)
        return 1;
    printf("tls: ok\n");
    return 0;
}

/* ---- segv ---- */

static void *segv_thread(void *arg)
{
    (void)arg;
    printf("segv: thread about to fault\n");
    fflush(stdout);
    *(volatile int *)0x10 = 1;
    return NULL;
}

static int segv_case(void)
{
    pthread_t t;
    int e = pthread_create(&t, NULL, segv_thread, NULL);
    if (e != 0)
        return failed("pthread_create", e);
    pthread_join(t, NULL);
    printf("segv: FAILED: the process survived its thread's fault\n");
    return 1;
}

/* ---- threadbomb ---- */

static pthread_mutex_t bomb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bomb_cond = PTHREAD_COND_INITIALIZER;
static int bomb_released;

static void *bomb_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&bomb_lock);
    while (!bomb_released)
        pthread_cond_wait(&bomb_cond, &bomb_lock);
    pthread_mutex_unlock(&bomb_lock);
    return NULL;
}

static int threadbomb_case(long max)
{
    pthread_t *t = calloc((size_t)max, sizeof *t);
    if (t == NULL)
        return failed("calloc", ENOMEM);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    long n = 0;
    int e = 0;
    while (n < max && (e = pthread_create(&t[n], &attr, bomb_thread, NULL)) == 0)
        n++;
    pthread_mutex_lock(&bomb_lock);
    bomb_released = 1;
    pthread_cond_broadcast(&bomb_cond);
    pthread_mutex_unlock(&bomb_lock);
    for (long i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    free(t);
    if (n == max) {
        printf("threadbomb: created %ld threads (the cap) without a failure\n", n);
        return 1;
    }
    printf("threadbomb: created %ld threads, then pthread_create failed: %s (%s)\n", n,
           e == EAGAIN ? "EAGAIN" : "not EAGAIN", strerror(e));
    printf("threadbomb: joined %ld threads, still alive\n", n);
    return 0;
}

/* ---- futexfault ---- */

static int futexfault_case(void)
{
    errno = 0;
    long r = syscall(SYS_futex, (int *)0x10, FUTEX_WAIT, 0, NULL, NULL, 0);
    int e = errno;
    printf("futexfault: futex(0x10, FUTEX_WAIT, 0, NULL) = %ld %s\n", r,
           r == -1 && e == EFAULT ? "EFAULT" : strerror(e));
    return r == -1 && e == EFAULT ? 0 : 1;
}

/* ---- spin, spin2 ---- */

static uint64_t xorshift(uint64_t x, long rounds)
{
    for (long i = 0; i < rounds; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

static int spin_case(long rounds)
{
    printf("spin: %ld rounds, result %016llx\n", rounds, (unsigned long long)xorshift(88172645463325252ULL, rounds));
    return 0;
}

static double seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long spin2_rounds = 10000;

struct spinner {
    double wall;
    double cpu;
    long rounds;
};

static void *spin2_thread(void *arg)
{
    struct spinner *s = arg;
    double end = seconds(CLOCK_MONOTONIC) + s->wall;
    uint64_t x = 88172645463325252ULL + (uint64_t)(uintptr_t)s;
    while (seconds(CLOCK_MONOTONIC) < end) {
        x = xorshift(x, spin2_rounds);
        s->rounds++;
    }
    s->cpu = seconds(CLOCK_THREAD_CPUTIME_ID);
    /* Keep the result alive so the loop is not optimized away. */
    if (x == 0)
        s->rounds = -1;
    return NULL;
}

static int spin2_case(double wall)
{
    struct spinner s[2] = {{wall, 0, 0}, {wall, 0, 0}};
    pthread_t t[2];
    int e;
    double start = seconds(CLOCK_MONOTONIC);
    for (int i = 0; i < 2; i++)
        if ((e = pthread_create(&t[i], NULL, spin2_thread, &s[i])) != 0)
            return failed("pthread_create", e);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    double took = seconds(CLOCK_MONOTONIC) - start;
    for (int i = 0; i < 2; i++)
        printf("spin2: thread %d cpu %.3f s, %ld rounds of %ld\n", i, s[i].cpu, s[i].rounds, spin2_rounds);
    printf("spin2: wall %.3f s, process cpu %.3f s\n", took, seconds(CLOCK_PROCESS_CPUTIME_ID));
    return 0;
}

int main(int argc, char **argv)
{
    /* Every line reaches the console at once, in order. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "mutex") == 0)
        return mutex_case();
    if (strcmp(what, "tls") == 0)
        return tls_case();
    if (strcmp(what, "segv") == 0)
        return segv_case();
    if (strcmp(what, "threadbomb") == 0) {
        long max = argc > 2 ? strtol(argv[2], NULL, 10) : 10000;
        return threadbomb_case(max > 0 ? max : 10000);
    }
    if (strcmp(what, "futexfault") == 0)
        return futexfault_case();
    if (strcmp(what, "spin") == 0 && argc > 2)
        return spin_case(strtol(argv[2], NULL, 10));
    if (strcmp(what, "spin2") == 0 && argc > 2) {
        if (argc > 3 && strtol(argv[3], NULL, 10) > 0)
            spin2_rounds = strtol(argv[3], NULL, 10);
        return spin2_case(strtod(argv[2], NULL));
    }
    fprintf(stderr, "usage: ctest mutex|tls|segv|threadbomb [MAX]|futexfault|spin N|spin2 SECONDS [ROUNDS]\n");
    return 2;
}
