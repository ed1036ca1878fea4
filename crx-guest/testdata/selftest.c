/* A static-pie test program for crx-guest: process ABI, fork/pipe/wait, signals from
   faults, files, mmap, mprotect, EFAULT on bad pointers, clocks and sleeps, FPU state across
   switches, execve. Prints "selftest: N failure(s)" and exits 0 when all checks pass.
   Build and run: crx-guest/testdata/run-selftest.sh */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <time.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <signal.h>
#include <setjmp.h>
static int fails;
#define CHECK(c) do { if (!(c)) { printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

/* ---- signals ---- */
static volatile sig_atomic_t got_sig, got_code, got_pid, got_status, got_ctx;
static void on_info(int s, siginfo_t *si, void *uc) {
    got_sig = s; got_code = si->si_code; got_pid = si->si_pid; got_ctx = uc != 0;
    if (s == SIGCHLD) got_status = si->si_status;
}
static void on_plain(int s) { got_sig = s; }
/* Clobbers caller-saved registers: rt_sigreturn must bring the interrupted ones back. */
static void on_clobber(int s) {
    got_sig = s;
    __asm__ volatile("mov $-1, %%r8\n mov $-1, %%r9\n mov $-1, %%r10\n mov $-1, %%rdx\n pcmpeqd %%xmm1, %%xmm1"
                     ::: "r8", "r9", "r10", "rdx", "xmm1");
}
static sigjmp_buf segv_env;
static volatile unsigned long segv_addr;
static void on_segv(int s, siginfo_t *si, void *uc) {
    (void)s; (void)uc;
    segv_addr = (unsigned long)si->si_addr;
    siglongjmp(segv_env, 1);
}
static void set_handler(int s, void *h, int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = flags;
    if (flags & SA_SIGINFO) sa.sa_sigaction = h; else sa.sa_handler = h;
    sigaction(s, &sa, 0);
}
static void signal_tests(void) {
    pid_t me = getpid();
    /* SA_SIGINFO handler runs before kill returns */
    set_handler(SIGUSR1, on_info, SA_SIGINFO);
    got_sig = 0;
    CHECK(kill(me, SIGUSR1) == 0);
    CHECK(got_sig == SIGUSR1 && got_code == SI_USER && got_pid == me && got_ctx);
    /* registers and SSE state survive a handler */
    set_handler(SIGUSR2, on_clobber, 0);
    got_sig = 0;
    unsigned long r8o, r9o, r10o, rdxo;
    double xin = 2.5, xo = 0;
    long nr = SYS_kill;
    __asm__ volatile("mov $0x1111, %%r8\n mov $0x2222, %%r9\n mov $0x3333, %%r10\n mov $0x4444, %%rdx\n"
                     "movq %[xin], %%xmm1\n syscall\n"
                     "mov %%r8, %[a]\n mov %%r9, %[b]\n mov %%r10, %[c]\n mov %%rdx, %[d]\n movq %%xmm1, %[x]\n"
                     : [a] "=m"(r8o), [b] "=m"(r9o), [c] "=m"(r10o), [d] "=m"(rdxo), [x] "=m"(xo), "+a"(nr)
                     : "D"((long)me), "S"((long)SIGUSR2), [xin] "m"(xin)
                     : "r8", "r9", "r10", "rdx", "rcx", "r11", "xmm1", "memory");
    CHECK(got_sig == SIGUSR2 && nr == 0);
    CHECK(r8o == 0x1111 && r9o == 0x2222 && r10o == 0x3333 && rdxo == 0x4444 && xo == 2.5);
    /* a blocked signal stays pending and runs when unblocked */
    sigset_t set, old, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    CHECK(sigprocmask(SIG_BLOCK, &set, &old) == 0 && !sigismember(&old, SIGUSR1));
    got_sig = 0;
    kill(me, SIGUSR1);
    CHECK(got_sig == 0);
    CHECK(sigpending(&pend) == 0 && sigismember(&pend, SIGUSR1));
    CHECK(sigprocmask(SIG_UNBLOCK, &set, &old) == 0 && sigismember(&old, SIGUSR1));
    CHECK(got_sig == SIGUSR1);
    /* SIGKILL cannot be blocked or caught */
    sigfillset(&set);
    sigprocmask(SIG_SETMASK, &set, 0);
    sigprocmask(SIG_SETMASK, 0, &old);
    CHECK(!sigismember(&old, SIGKILL) && sigismember(&old, SIGTERM));
    sigemptyset(&set);
    sigprocmask(SIG_SETMASK, &set, 0);
    CHECK(signal(SIGKILL, on_plain) == SIG_ERR);
    /* SA_RESETHAND: the next one takes the default action */
    set_handler(SIGUSR2, on_plain, SA_RESETHAND);
    kill(me, SIGUSR2);
    struct sigaction cur;
    CHECK(sigaction(SIGUSR2, 0, &cur) == 0 && cur.sa_handler == SIG_DFL);
    /* SIGCHLD with sigsuspend */
    set_handler(SIGCHLD, on_info, SA_SIGINFO);
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    got_sig = 0;
    pid_t c = fork();
    if (c == 0) _exit(7);
    sigemptyset(&set);
    int r = 0;
    while (got_sig != SIGCHLD) r = sigsuspend(&set);
    CHECK(r == -1 && errno == EINTR);
    CHECK(got_code == CLD_EXITED && got_pid == c && got_status == 7);
    sigprocmask(SIG_SETMASK, 0, &set);
    CHECK(sigismember(&set, SIGCHLD)); /* the mask from before sigsuspend */
    int st;
    CHECK(waitpid(c, &st, 0) == c && WEXITSTATUS(st) == 7);
    sigprocmask(SIG_SETMASK, &old, 0);
    set_handler(SIGCHLD, SIG_DFL, 0);
    /* a sleep interrupted by a handler: EINTR with the time left */
    set_handler(SIGUSR1, on_plain, 0);
    c = fork();
    if (c == 0) { struct timespec d = {0, 50000000}; nanosleep(&d, 0); kill(getppid(), SIGUSR1); _exit(0); }
    struct timespec d = {5, 0}, rem = {0, 0};
    got_sig = 0;
    CHECK(nanosleep(&d, &rem) == -1 && errno == EINTR && got_sig == SIGUSR1);
    CHECK(rem.tv_sec >= 3 && rem.tv_sec <= 5);
    waitpid(c, &st, 0);
    /* a pipe read restarted under SA_RESTART, and interrupted without it */
    int p[2];
    for (int restart = 0; restart < 2; restart++) {
        set_handler(SIGUSR1, on_plain, restart ? SA_RESTART : 0);
        CHECK(pipe(p) == 0);
        c = fork();
        if (c == 0) {
            struct timespec e = {0, 30000000};
            nanosleep(&e, 0);
            kill(getppid(), SIGUSR1);
            nanosleep(&e, 0);
            write(p[1], "x", 1);
            _exit(0);
        }
        char b;
        got_sig = 0;
        ssize_t n = read(p[0], &b, 1);
        if (restart) CHECK(n == 1 && got_sig == SIGUSR1);
        else CHECK(n == -1 && errno == EINTR && got_sig == SIGUSR1);
        waitpid(c, &st, 0);
        close(p[0]);
        close(p[1]);
    }
    /* wait4 interrupted by a handler */
    set_handler(SIGUSR1, on_plain, 0);
    c = fork();
    if (c == 0) { kill(getppid(), SIGUSR1); struct timespec e = {0, 30000000}; nanosleep(&e, 0); _exit(3); }
    /* the child's signal may arrive before or during the wait */
    got_sig = 0;
    r = waitpid(c, &st, 0);
    if (r == -1) { CHECK(errno == EINTR); r = waitpid(c, &st, 0); }
    CHECK(r == c && WEXITSTATUS(st) == 3 && got_sig == SIGUSR1);
    /* a SIGSEGV handler that jumps out; the mask is restored by siglongjmp */
    set_handler(SIGSEGV, on_segv, SA_SIGINFO);
    if (sigsetjmp(segv_env, 1) == 0) {
        *(volatile int *)16 = 1;
        CHECK(0);
    }
    CHECK(segv_addr == 16);
    sigprocmask(SIG_SETMASK, 0, &set);
    CHECK(!sigismember(&set, SIGSEGV));
    /* a second fault inside the handler (SIGSEGV blocked) kills */
    c = fork();
    if (c == 0) {
        set_handler(SIGSEGV, on_plain, 0);
        sigemptyset(&set);
        sigaddset(&set, SIGSEGV);
        sigprocmask(SIG_BLOCK, &set, 0);
        *(volatile int *)16 = 1;
        _exit(0);
    }
    CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    /* a default-terminate signal from kill */
    c = fork();
    if (c == 0) { pause(); _exit(0); }
    sched_yield();
    kill(c, SIGTERM);
    CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    set_handler(SIGSEGV, SIG_DFL, 0);
}
int main(int argc, char **argv) {
    CHECK(argc == 2 && strcmp(argv[1], "arg") == 0);
    CHECK(getenv("PATH") != NULL);
    CHECK(getauxval(AT_PAGESZ) == 4096);
    CHECK(getauxval(AT_RANDOM) != 0);
    CHECK(getauxval(AT_ENTRY) != 0);
    CHECK(getauxval(AT_SECURE) == 0);
    /* static-pie: loaded away from 0 */
    CHECK((unsigned long)&main > 0x400000);
    /* fork + pipe + wait */
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t c = fork();
    if (c == 0) { close(p[0]); write(p[1], "child", 5); _exit(42); }
    close(p[1]);
    char buf[16] = {0};
    CHECK(read(p[0], buf, sizeof buf) == 5 && memcmp(buf, "child", 5) == 0);
    CHECK(read(p[0], buf, sizeof buf) == 0);
    int st = 0;
    CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 42);
    CHECK(waitpid(-1, &st, WNOHANG) == -1 && errno == ECHILD);
    /* a child killed by SIGSEGV */
    c = fork();
    if (c == 0) { *(volatile int *)8 = 1; _exit(0); }
    CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == 11);
    /* files */
    int fd = open("/tmp/x", O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, "hello file\n", 11) == 11);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    CHECK(fcntl(fd, F_GETFD) == FD_CLOEXEC);
    char *m = mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    CHECK(m != MAP_FAILED && memcmp(m, "hello", 5) == 0);
    struct stat sb;
    CHECK(fstat(fd, &sb) == 0 && sb.st_size == 11 && S_ISREG(sb.st_mode));
    close(fd);
    /* anonymous memory, mprotect */
    char *a = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(a != MAP_FAILED);
    memset(a, 7, 1 << 20);
    CHECK(a[12345] == 7);
    CHECK(mprotect(a, 4096, PROT_READ) == 0);
    CHECK(munmap(a, 1 << 20) == 0);
    void *big = malloc(10 << 20);
    CHECK(big != NULL);
    memset(big, 1, 10 << 20);
    free(big);
    /* bad pointers are EFAULT */
    CHECK(syscall(1, 1, 16L, 4L) == -1 && errno == EFAULT);
    CHECK(open((char *)0x7000000000, O_RDONLY) == -1 && errno == EFAULT);
    /* time */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct timespec d = {0, 50 * 1000 * 1000};
    nanosleep(&d, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ns = (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
    CHECK(ns >= 50 * 1000 * 1000);
    CHECK(time(0) > 1600000000);
    /* cwd */
    char cwd[64];
    CHECK(chdir("/tmp") == 0 && getcwd(cwd, sizeof cwd) && strcmp(cwd, "/tmp") == 0);
    /* floating point survives a context switch */
    volatile double x = 1.5;
    c = fork();
    if (c == 0) { volatile double y = 3.25; for (int i = 0; i < 100; i++) y *= 1.0001; sched_yield(); _exit(y > 3 ? 0 : 1); }
    sched_yield();
    CHECK(x * 2 == 3.0);
    CHECK(waitpid(c, &st, 0) == c && WEXITSTATUS(st) == 0);
    /* exec of the busybox in the image */
    c = fork();
    if (c == 0) { execl("/bin/busybox", "echo", "exec ok", (char *)0); _exit(99); }
    CHECK(waitpid(c, &st, 0) == c && WEXITSTATUS(st) == 0);
    signal_tests();
    printf("selftest: %d failure(s)\n", fails);
    return fails ? 1 : 0;
}
