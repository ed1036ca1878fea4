/* Waiting for signals, interval timers and mremap, each check with Linux's results and
 * errnos: rt_sigtimedwait (a blocked signal another thread raises, a thread that waits for a
 * process-wide signal, a timeout, a poll, a handled signal interrupting it, bad arguments),
 * setitimer ITIMER_REAL with an interval firing into a handler while the program sits in
 * pause(), getitimer's remaining time, alarm, the CPU-time timers, and mremap (shrink, grow
 * in place, grow by moving with the bytes kept, MREMAP_FIXED, file mappings, the errors).
 * Prints one FAIL line per failed check and `timers: ok` when all hold (exit 1 otherwise).
 * The test runs it on the host too, so the expectations are Linux's own. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int checks, failed;
#define WILD ((void *)0x10)
#define PG 4096L

#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(c)) {                                                                                \
            failed++;                                                                              \
            printf("FAIL: " __VA_ARGS__);                                                          \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* A call that must fail with `err`. */
static void expect(const char *what, long r, int err) {
    checks++;
    if (r != -1 || errno != err) {
        failed++;
        printf("FAIL %s: got %ld errno %d (%s), want -1 errno %d (%s)\n", what, r, r == -1 ? errno : 0,
               r == -1 ? strerror(errno) : "-", err, strerror(err));
    }
}

static long ms_since(const struct timespec *a) {
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a->tv_sec) * 1000 + (b.tv_nsec - a->tv_nsec) / 1000000;
}

static long timedwait(const sigset_t *set, siginfo_t *info, const struct timespec *ts) {
    return syscall(SYS_rt_sigtimedwait, set, info, ts, 8);
}

static sigset_t only(int sig) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    return s;
}

static int pending(int sig) {
    sigset_t s;
    sigpending(&s);
    return sigismember(&s, sig);
}

static volatile sig_atomic_t usr2_handled, alarms, vtalrms, profs;
static void on_usr2(int s) { (void)s; usr2_handled++; }
static void on_alrm(int s) { (void)s; alarms++; }
static void on_vtalrm(int s) { (void)s; vtalrms++; }
static void on_prof(int s) { (void)s; profs++; }

static void handle(int sig, void (*f)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = f;
    sigaction(sig, &sa, 0);
}

static pid_t main_tid;
static pthread_t main_thread;

/* Raises `arg` (a signal number) for the process after 50 ms. */
static void *kill_later(void *arg) {
    usleep(50000);
    kill(getpid(), (int)(intptr_t)arg);
    return 0;
}

/* Sends `arg` to the main thread alone after 50 ms. */
static void *tkill_later(void *arg) {
    usleep(50000);
    pthread_kill(main_thread, (int)(intptr_t)arg);
    return 0;
}

/* Waits up to 3 s for SIGUSR2 in a thread of its own; returns what it got. */
static void *wait_usr2(void *arg) {
    sigset_t s = only(SIGUSR2);
    siginfo_t info;
    struct timespec ts = {(long)(intptr_t)arg, 0};
    long r = timedwait(&s, &info, &ts);
    return (void *)(intptr_t)(r == SIGUSR2 && info.si_signo == SIGUSR2 ? 1 : r == -1 ? -errno : 0);
}

static void sigtimedwait_checks(void) {
    main_tid = gettid();
    main_thread = pthread_self();
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigaddset(&blocked, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &blocked, 0);
    sigset_t usr1 = only(SIGUSR1);
    siginfo_t info;
    struct timespec five = {5, 0}, zero = {0, 0};

    /* A blocked SIGUSR1 that another thread raises for the process. */
    pthread_t t;
    pthread_create(&t, 0, kill_later, (void *)(intptr_t)SIGUSR1);
    memset(&info, 0xff, sizeof info);
    long r = timedwait(&usr1, &info, &five);
    CHECK(r == SIGUSR1, "rt_sigtimedwait for a SIGUSR1 from another thread: %ld (errno %d)", r, errno);
    CHECK(info.si_signo == SIGUSR1 && info.si_code == SI_USER && info.si_pid == getpid() && info.si_errno == 0,
          "its siginfo: signo %d code %d pid %d errno %d", info.si_signo, info.si_code, info.si_pid,
          info.si_errno);
    CHECK(!pending(SIGUSR1), "SIGUSR1 is no longer pending once waited for");
    pthread_join(t, 0);

    /* Sent to this thread alone (tgkill): si_code SI_TKILL. */
    pthread_create(&t, 0, tkill_later, (void *)(intptr_t)SIGUSR1);
    r = timedwait(&usr1, &info, 0);
    CHECK(r == SIGUSR1 && info.si_code == SI_TKILL && info.si_pid == getpid(),
          "rt_sigtimedwait without a timeout, for a tgkill: %ld code %d", r, info.si_code);
    pthread_join(t, 0);

    /* Poll mode: nothing pending is EAGAIN at once; a pending one is taken. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect("rt_sigtimedwait poll with nothing pending", timedwait(&usr1, &info, &zero), EAGAIN);
    CHECK(ms_since(&t0) < 1000, "the poll did not wait");
    raise(SIGUSR1);
    CHECK(pending(SIGUSR1), "raise makes a blocked SIGUSR1 pending");
    r = timedwait(&usr1, 0, &zero);
    CHECK(r == SIGUSR1, "rt_sigtimedwait poll takes a pending SIGUSR1 (no siginfo asked): %ld", r);

    /* A timeout: EAGAIN after it. */
    struct timespec fifty = {0, 50000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect("rt_sigtimedwait timing out", timedwait(&usr1, &info, &fifty), EAGAIN);
    long ms = ms_since(&t0);
    CHECK(ms >= 50 && ms < 3000, "the timeout of 50 ms took %ld ms", ms);

    /* A process-wide signal that every thread blocks goes to the thread waiting for it. */
    pthread_create(&t, 0, wait_usr2, (void *)(intptr_t)3);
    usleep(100000);
    kill(getpid(), SIGUSR2);
    void *got;
    pthread_join(t, &got);
    CHECK((intptr_t)got == 1, "a thread waiting for SIGUSR2 gets the process's: %ld", (long)(intptr_t)got);
    CHECK(!pending(SIGUSR2), "SIGUSR2 did not stay pending in the main thread");

    /* One pending for the process before the wait began is taken by a thread that polls... */
    kill(getpid(), SIGUSR2);
    pthread_create(&t, 0, wait_usr2, (void *)(intptr_t)0);
    pthread_join(t, &got);
    CHECK((intptr_t)got == 1, "another thread's poll takes a SIGUSR2 pending for the process: %ld",
          (long)(intptr_t)got);
    CHECK(!pending(SIGUSR2), "and it is gone from the main thread");
    /* ...but one sent to this thread stays this thread's. */
    pthread_kill(pthread_self(), SIGUSR2);
    pthread_create(&t, 0, wait_usr2, (void *)(intptr_t)0);
    pthread_join(t, &got);
    CHECK((intptr_t)got == -EAGAIN, "another thread's poll does not take this thread's SIGUSR2: %ld",
          (long)(intptr_t)got);
    sigset_t usr2 = only(SIGUSR2);
    r = timedwait(&usr2, &info, &zero);
    CHECK(r == SIGUSR2 && info.si_code == SI_TKILL, "this thread's poll takes it: %ld code %d", r, info.si_code);

    /* The awaited signal unblocked, sent while waiting: taken, its handler does not run. */
    handle(SIGUSR2, on_usr2);
    pthread_sigmask(SIG_UNBLOCK, &usr2, 0);
    usr2_handled = 0;
    pthread_create(&t, 0, tkill_later, (void *)(intptr_t)SIGUSR2);
    r = timedwait(&usr2, &info, &five);
    CHECK(r == SIGUSR2 && usr2_handled == 0, "an unblocked SIGUSR2 waited for is taken: %ld, handled %d", r,
          (int)usr2_handled);
    pthread_join(t, 0);

    /* A handled signal outside the set ends the wait with EINTR (no restart). */
    usr2_handled = 0;
    pthread_create(&t, 0, tkill_later, (void *)(intptr_t)SIGUSR2);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect("rt_sigtimedwait interrupted by a handled SIGUSR2", timedwait(&usr1, &info, &five), EINTR);
    CHECK(usr2_handled == 1 && ms_since(&t0) < 4000, "the handler ran (%d) before the timeout",
          (int)usr2_handled);
    pthread_join(t, 0);
    pthread_sigmask(SIG_BLOCK, &usr2, 0);

    /* Bad arguments. */
    raise(SIGUSR1);
    expect("rt_sigtimedwait sigsetsize 4", syscall(SYS_rt_sigtimedwait, &usr1, &info, &zero, 4), EINVAL);
    expect("rt_sigtimedwait sigsetsize 16", syscall(SYS_rt_sigtimedwait, &usr1, &info, &zero, 16), EINVAL);
    struct timespec badns = {0, 1000000000}, negative = {-1, 0};
    expect("rt_sigtimedwait tv_nsec 1e9", timedwait(&usr1, &info, &badns), EINVAL);
    expect("rt_sigtimedwait negative tv_sec", timedwait(&usr1, &info, &negative), EINVAL);
    expect("rt_sigtimedwait wild set", timedwait(WILD, &info, &zero), EFAULT);
    expect("rt_sigtimedwait wild timeout", timedwait(&usr1, &info, WILD), EFAULT);
    CHECK(pending(SIGUSR1), "SIGUSR1 still pending after the refused calls");
    expect("rt_sigtimedwait wild siginfo", timedwait(&usr1, WILD, &zero), EFAULT);
    CHECK(!pending(SIGUSR1), "a wild siginfo still takes the signal, as Linux does");
    sigset_t kill_only = only(SIGKILL);
    expect("rt_sigtimedwait for SIGKILL alone polls nothing", timedwait(&kill_only, &info, &zero), EAGAIN);
    pthread_sigmask(SIG_UNBLOCK, &blocked, 0);
}

static long usec_of(const struct timeval *tv) { return tv->tv_sec * 1000000L + tv->tv_usec; }

static void itimer_checks(void) {
    handle(SIGALRM, on_alrm);
    struct itimerval it = {{0, 20000}, {0, 20000}}, old;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(setitimer(ITIMER_REAL, &it, &old) == 0, "setitimer ITIMER_REAL every 20 ms");
    CHECK(usec_of(&old.it_value) == 0 && usec_of(&old.it_interval) == 0, "no timer was set before");
    int eintr = 0, pauses = 0;
    while (alarms < 5 && pauses < 50) {
        pauses++;
        if (pause() == -1 && errno == EINTR)
            eintr++;
    }
    long ms = ms_since(&t0);
    CHECK(alarms >= 5 && eintr == pauses, "SIGALRM every 20 ms into pause(): %d alarms, %d of %d pauses EINTR",
          (int)alarms, eintr, pauses);
    CHECK(ms >= 100 && ms < 5000, "five 20 ms periods took %ld ms", ms);
    struct itimerval off = {{0, 0}, {0, 0}};
    CHECK(setitimer(ITIMER_REAL, &off, &old) == 0, "setitimer off");
    CHECK(usec_of(&old.it_interval) == 20000 && usec_of(&old.it_value) > 0 && usec_of(&old.it_value) <= 20000,
          "the old value: interval %ld us, left %ld us", usec_of(&old.it_interval), usec_of(&old.it_value));
    getitimer(ITIMER_REAL, &old);
    CHECK(usec_of(&old.it_value) == 0 && usec_of(&old.it_interval) == 0, "getitimer of a disarmed timer is 0");

    /* getitimer shows the time left. */
    struct itimerval two = {{0, 0}, {2, 0}};
    setitimer(ITIMER_REAL, &two, 0);
    usleep(100000);
    getitimer(ITIMER_REAL, &old);
    long left = usec_of(&old.it_value);
    CHECK(left >= 1000000 && left <= 1900000 && usec_of(&old.it_interval) == 0,
          "getitimer 100 ms into 2 s: %ld us left, interval %ld", left, usec_of(&old.it_interval));

    /* alarm shares ITIMER_REAL: it returns the seconds left, rounded, and 0 cancels. */
    unsigned a = alarm(5);
    CHECK(a == 2, "alarm(5) over a timer with 1.9 s left returns 2: %u", a);
    getitimer(ITIMER_REAL, &old);
    CHECK(usec_of(&old.it_value) > 4000000 && usec_of(&old.it_value) <= 5000000, "getitimer after alarm(5): %ld us",
          usec_of(&old.it_value));
    a = alarm(0);
    CHECK(a == 5, "alarm(0) returns the 5 s left: %u", a);
    CHECK(alarm(0) == 0, "alarm(0) with no alarm returns 0");
    getitimer(ITIMER_REAL, &old);
    CHECK(usec_of(&old.it_value) == 0, "alarm(0) cancelled it");
    alarms = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    alarm(1);
    int r = pause();
    ms = ms_since(&t0);
    CHECK(r == -1 && errno == EINTR && alarms == 1, "alarm(1) ends pause() with its SIGALRM: %d, %d alarms", r,
          (int)alarms);
    CHECK(ms >= 1000 && ms < 5000, "alarm(1) took %ld ms", ms);
    /* It also ends a sleep, which reports the time left. */
    alarms = 0;
    struct itimerval shot = {{0, 0}, {0, 50000}};
    setitimer(ITIMER_REAL, &shot, 0);
    struct timespec sl = {3, 0}, rem = {0, 0};
    r = nanosleep(&sl, &rem);
    CHECK(r == -1 && errno == EINTR && alarms == 1 && rem.tv_sec >= 1 && rem.tv_sec <= 3,
          "a 50 ms timer ends a 3 s nanosleep: %d, %d alarms, %ld s left", r, (int)alarms, (long)rem.tv_sec);

    /* It ends a read that waits on an empty pipe (no SA_RESTART: EINTR). */
    int pfd[2];
    pipe(pfd);
    char byte;
    alarms = 0;
    setitimer(ITIMER_REAL, &shot, 0);
    expect("a read of an empty pipe when SIGALRM comes", read(pfd[0], &byte, 1), EINTR);
    CHECK(alarms == 1, "the handler ran for it");
    close(pfd[0]);
    close(pfd[1]);

    /* Blocked, SIGALRM is waited for: si_code SI_KERNEL, and the interval reloads as each
     * is taken. */
    sigset_t alrm = only(SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alrm, 0);
    struct itimerval every = {{0, 20000}, {0, 20000}};
    setitimer(ITIMER_REAL, &every, 0);
    siginfo_t info;
    struct timespec two_s = {2, 0};
    int taken = 0, kernel_code = 0;
    for (int i = 0; i < 3; i++) {
        if (timedwait(&alrm, &info, &two_s) == SIGALRM) {
            taken++;
            kernel_code += info.si_code == SI_KERNEL && info.si_pid == 0;
        }
    }
    CHECK(taken == 3 && kernel_code == 3, "three SIGALRMs of a 20 ms timer waited for: %d, %d with SI_KERNEL", taken,
          kernel_code);
    setitimer(ITIMER_REAL, &off, 0);
    pthread_sigmask(SIG_UNBLOCK, &alrm, 0);

    /* With the default action, SIGALRM ends a process waiting in pause(). */
    pid_t child = fork();
    if (child == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm(1);
        pause();
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM, "alarm(1) and pause() in a child: status %#x", status);
    struct itimerval mine;
    getitimer(ITIMER_REAL, &mine);
    CHECK(usec_of(&mine.it_value) == 0, "the child's alarm was its own");

    /* Bad arguments. */
    expect("getitimer of an unknown timer", getitimer(7, &old), EINVAL);
    expect("getitimer into a wild pointer", syscall(SYS_getitimer, ITIMER_REAL, WILD), EFAULT);
    expect("setitimer of an unknown timer", setitimer(7, &two, 0), EINVAL);
    expect("setitimer from a wild pointer", syscall(SYS_setitimer, ITIMER_REAL, WILD, 0), EFAULT);
    struct itimerval badus = {{0, 0}, {0, 1000000}};
    expect("setitimer tv_usec 1e6", setitimer(ITIMER_REAL, &badus, 0), EINVAL);
    struct itimerval negative = {{0, 0}, {-1, 0}};
    expect("setitimer negative tv_sec", setitimer(ITIMER_REAL, &negative, 0), EINVAL);
    CHECK(syscall(SYS_setitimer, ITIMER_REAL, &two, WILD) == -1 && errno == EFAULT,
          "setitimer with a wild old value: EFAULT");
    getitimer(ITIMER_REAL, &old);
    CHECK(usec_of(&old.it_value) > 0, "the new value was set all the same");
    setitimer(ITIMER_REAL, &off, 0);

    /* The CPU-time timers count the process's CPU time. The loop enters the kernel now and
     * then (getppid): crx-guest looks at these timers whenever the process does. */
    handle(SIGVTALRM, on_vtalrm);
    handle(SIGPROF, on_prof);
    struct itimerval cpu = {{0, 10000}, {0, 30000}};
    CHECK(setitimer(ITIMER_VIRTUAL, &cpu, 0) == 0 && setitimer(ITIMER_PROF, &cpu, 0) == 0,
          "setitimer ITIMER_VIRTUAL and ITIMER_PROF");
    getitimer(ITIMER_PROF, &old);
    CHECK(usec_of(&old.it_interval) == 10000 && usec_of(&old.it_value) <= 30000 + 10000,
          "getitimer ITIMER_PROF: interval %ld, left %ld", usec_of(&old.it_interval), usec_of(&old.it_value));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while ((vtalrms < 3 || profs < 3) && ms_since(&t0) < 20000) {
        for (volatile int i = 0; i < 100000; i++)
            ;
        getppid();
    }
    CHECK(vtalrms >= 3 && profs >= 3, "CPU-time timers fired: %d SIGVTALRM, %d SIGPROF", (int)vtalrms,
          (int)profs);
    setitimer(ITIMER_VIRTUAL, &off, 0);
    setitimer(ITIMER_PROF, &off, &old);
    CHECK(usec_of(&old.it_interval) == 10000, "ITIMER_PROF's interval was 10 ms: %ld", usec_of(&old.it_interval));
}

static void *map(void *at, long pages, int prot, int flags) {
    return mmap(at, pages * PG, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
}

/* Whether [at, at + pages) is free: a mapping that may not replace anything goes there. */
static int is_free(char *at, long pages) {
    void *p = map(at, pages, PROT_READ, MAP_FIXED_NOREPLACE);
    if (p == MAP_FAILED)
        return 0;
    munmap(p, pages * PG);
    return p == at;
}

static int filled(const char *p, long len, char c) {
    for (long i = 0; i < len; i++)
        if (p[i] != c)
            return 0;
    return 1;
}

static long remap(void *old, long old_len, long new_len, long flags, void *new_addr) {
    return syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}

static void mremap_checks(void) {
    /* Shrink: the tail goes. */
    char *p = map(0, 4, PROT_READ | PROT_WRITE, 0);
    memset(p, 'a', 4 * PG);
    char *q = mremap(p, 4 * PG, 2 * PG, 0);
    CHECK(q == p && filled(p, 2 * PG, 'a'), "mremap shrinks in place");
    CHECK(is_free(p + 2 * PG, 2), "the shrunk tail is unmapped");

    /* Grow in place when the range after the mapping is free. */
    q = mremap(p, 2 * PG, 4 * PG, 0);
    CHECK(q == p, "mremap grows in place: %p from %p", q, p);
    if (q == p) {
        CHECK(filled(p, 2 * PG, 'a') && filled(p + 2 * PG, 2 * PG, 0), "the old bytes stay, the new pages are zero");
        memset(p + 2 * PG, 'b', 2 * PG);
        CHECK(filled(p + 3 * PG, PG, 'b'), "the grown part is writable");
    }
    munmap(p, 4 * PG);

    /* Grow where the next page is taken (another protection): ENOMEM, or a move. */
    p = map(0, 3, PROT_READ | PROT_WRITE, 0);
    mprotect(p + 2 * PG, PG, PROT_NONE);
    memset(p, 'c', 2 * PG);
    expect("mremap growing into a mapping without MREMAP_MAYMOVE", remap(p, 2 * PG, 6 * PG, 0, 0), ENOMEM);
    q = mremap(p, 2 * PG, 6 * PG, MREMAP_MAYMOVE);
    CHECK(q != MAP_FAILED && q != p, "mremap MREMAP_MAYMOVE moves the mapping: %p from %p", q, p);
    if (q != MAP_FAILED && q != p) {
        CHECK(filled(q, 2 * PG, 'c') && filled(q + 2 * PG, 4 * PG, 0), "the moved pages keep their bytes");
        memset(q + 5 * PG, 'd', PG);
        CHECK(is_free(p, 2), "the old range is gone");
        CHECK(!is_free(p + 2 * PG, 1), "the PROT_NONE page after it stays");
        munmap(q, 6 * PG);
    }
    munmap(p + 2 * PG, PG);

    /* MREMAP_FIXED: to a given address, replacing what was there; also growing. */
    p = map(0, 2, PROT_READ | PROT_WRITE, 0);
    memset(p, 'e', 2 * PG);
    char *dst = map(0, 4, PROT_READ | PROT_WRITE, 0);
    memset(dst, 'x', 4 * PG);
    q = mremap(p, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    CHECK(q == dst && filled(dst, 2 * PG, 'e') && filled(dst + 2 * PG, 2 * PG, 'x'),
          "mremap MREMAP_FIXED puts the pages over the target's first half");
    CHECK(is_free(p, 2), "and its old range is gone");
    char *spot = map(0, 3, PROT_NONE, 0);
    q = mremap(dst, PG, 3 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
    CHECK(q == spot && filled(q, PG, 'e') && filled(q + PG, 2 * PG, 0), "MREMAP_FIXED growing: a page and two new");
    CHECK(is_free(dst, 1) && filled(dst + PG, PG, 'e'), "only the first page left the target");
    munmap(spot, 3 * PG);
    munmap(dst, 4 * PG);

    /* A private file mapping: grown in place and moved, the file's pages follow. */
    mkdir("/tmp", 01777);
    int fd = open("/tmp/timers-mremap", O_RDWR | O_CREAT | O_TRUNC, 0600);
    char page[PG];
    for (int i = 0; i < 4; i++) {
        memset(page, 'A' + i, PG);
        write(fd, page, PG);
    }
    char *hole = map(0, 8, PROT_NONE, 0);
    munmap(hole, 8 * PG);
    char *f = mmap(hole, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, PG);
    CHECK(f == hole && filled(f, PG, 'B'), "a file page mapped");
    f[0] = 'z';
    q = mremap(f, PG, 2 * PG, 0);
    CHECK(q == f && f[0] == 'z' && filled(f + 1, PG - 1, 'B') && filled(f + PG, PG, 'C'),
          "a file mapping grows in place with the file's next page");
    char *fixed_at = hole + 4 * PG;
    q = mremap(f, 2 * PG, 3 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, fixed_at);
    CHECK(q == fixed_at && q[0] == 'z' && filled(q + PG, PG, 'C') && filled(q + 2 * PG, PG, 'D'),
          "a file mapping moved keeps its written page and shows the file after it");
    munmap(fixed_at, 3 * PG);
    close(fd);
    unlink("/tmp/timers-mremap");

    /* The errors. */
    p = map(0, 2, PROT_READ | PROT_WRITE, 0);
    mprotect(p + PG, PG, PROT_READ);
    expect("mremap unaligned old address", remap(p + 1, PG, 2 * PG, MREMAP_MAYMOVE, 0), EINVAL);
    expect("mremap to size 0", remap(p, PG, 0, MREMAP_MAYMOVE, 0), EINVAL);
    expect("mremap unknown flags", remap(p, PG, 2 * PG, 0x10, 0), EINVAL);
    expect("mremap MREMAP_FIXED without MREMAP_MAYMOVE", remap(p, PG, PG, MREMAP_FIXED, p + 8 * PG), EINVAL);
    expect("mremap MREMAP_FIXED to an unaligned address",
           remap(p, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, p + 8 * PG + 1), EINVAL);
    expect("mremap MREMAP_FIXED overlapping the old range",
           remap(p, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, p + PG), EINVAL);
    expect("mremap of a range that is two mappings", remap(p, 2 * PG, 3 * PG, MREMAP_MAYMOVE, 0), EFAULT);
    char *gone = map(0, 1, PROT_READ, 0);
    munmap(gone, PG);
    expect("mremap of an unmapped address", remap(gone, PG, 2 * PG, MREMAP_MAYMOVE, 0), EFAULT);
    expect("mremap of a private mapping with old size 0", remap(p, 0, PG, MREMAP_MAYMOVE, 0), EINVAL);
    CHECK(remap(p, PG, PG, 0, 0) == (long)p, "mremap to the same size returns the address");
    expect("mremap shrinking a range past the top of user space", remap(p, 1L << 60, PG, 0, 0), EINVAL);
    munmap(p, 2 * PG);
}

/* `timers spin-alarm`: alarm(1), then compute without a syscall: SIGALRM's default
   action ends the process (128 + 14 for the shell) while it never enters the kernel. */
static int spin_alarm(void) {
    volatile unsigned long x = 0;
    alarm(1);
    for (;;)
        x++;
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "spin-alarm") == 0)
        return spin_alarm();
    mremap_checks();
    sigtimedwait_checks();
    itimer_checks();
    printf("timers: %d checks, %d failed\n", checks, failed);
    puts(failed ? "timers: FAILED" : "timers: ok");
    return failed != 0;
}
