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
static int fails;
#define CHECK(c) do { if (!(c)) { printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)
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
    printf("selftest: %d failure(s)\n", fails);
    return fails ? 1 : 0;
}
