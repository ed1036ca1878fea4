/*
 * File mappings as ld.so and programs make them, for the dynamic-program tests
 * (tests/tests/dynamic.rs). Built at test time with gcc, dynamically linked.
 *
 * Prints `mapfile: ok: WHAT` for every check that holds and ends with `mapfile: all ok`;
 * at the first check that does not hold it prints `mapfile: FAILED: WHAT (errno N)` and
 * exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096
#define FILE_BYTES (3 * PG + 100)

static void check(int good, const char *what)
{
    if (!good) {
        printf("mapfile: FAILED: %s (errno %d)\n", what, errno);
        exit(1);
    }
    printf("mapfile: ok: %s\n", what);
}

/* Runs `touch` in a child and returns the signal that ended it (0 if it exited). */
static int child_signal(void (*touch)(void *), void *at)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        touch(at);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void write_byte(void *at) { *(volatile char *)at = 'Y'; }
static void read_byte(void *at) { (void)*(volatile char *)at; }

int main(void)
{
    static char want[FILE_BYTES];
    for (int i = 0; i < FILE_BYTES; i++)
        want[i] = 'a' + i % 26;
    for (int k = 0; k < 4; k++)
        want[k * PG] = '0' + k;
    const char *path = "/tmp/mapfile.dat";
    int w = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    check(w >= 0 && write(w, want, FILE_BYTES) == FILE_BYTES, "a 3-page file is written");
    int fd = open(path, O_RDONLY);
    check(fd >= 0, "it opens read-only");

    char *p = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, PG);
    check(p != MAP_FAILED && memcmp(p, want + PG, 2 * PG) == 0, "a private mapping at an offset shows the file");

    /* As ld.so: the library's whole span from the file, then segments MAP_FIXED over it. */
    char *r = mmap(NULL, 4 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
    check(r != MAP_FAILED && r[0] == '0' && r[2 * PG] == '2', "a reservation of the whole span shows the file");
    check(r[3 * PG] == '3' && r[3 * PG + 99] == want[3 * PG + 99] && r[3 * PG + 100] == 0 && r[4 * PG - 1] == 0,
          "the last page shows the file's tail, then zeros");
    char *q = mmap(r + PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 2 * PG);
    check(q == r + PG && q[0] == '2', "MAP_FIXED over part of it maps another file page there");
    check(r[0] == '0' && r[2 * PG] == '2', "the rest of the reservation stays");
    void *n = mmap(r, PG, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0);
    check(n == MAP_FAILED && errno == EEXIST, "MAP_FIXED_NOREPLACE over a mapping is EEXIST");

    /* Copy on write. */
    q[0] = 'X';
    char c = 0;
    check(q[0] == 'X' && pread(fd, &c, 1, 2 * PG) == 1 && c == '2', "a write to a private mapping leaves the file alone");
    char *other = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, 2 * PG);
    check(other != MAP_FAILED && other[0] == '2' && r[2 * PG] == '2', "other mappings of the page do not see it");
    check(child_signal(write_byte, q) == 0 && q[0] == 'X', "a fork child's write to it stays in the child");
    /* As ld.so does with RELRO once relocated. */
    check(mprotect(q, PG, PROT_READ) == 0 && q[0] == 'X', "mprotect to read-only keeps the written page");
    check(child_signal(write_byte, q) == SIGSEGV, "a write after mprotect(PROT_READ) is SIGSEGV");
    check(child_signal(write_byte, p) == SIGSEGV, "a write to a PROT_READ file mapping is SIGSEGV");
    check(mprotect(p, PG, PROT_READ | PROT_WRITE) == 0, "mprotect makes a private file mapping writable");
    p[1] = 'Z';
    check(p[1] == 'Z' && p[0] == '1' && pread(fd, &c, 1, PG + 1) == 1 && c == want[PG + 1],
          "and its write is private too");

    /* Shared mappings are read-only here. */
    n = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    check(n == MAP_FAILED && errno == EACCES, "MAP_SHARED|PROT_WRITE of a read-only descriptor is EACCES");
    char *s = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
    check(s != MAP_FAILED && s[5] == want[5], "MAP_SHARED for reading shows the file");
    check(mprotect(s, PG, PROT_READ | PROT_WRITE) == -1 && errno == EACCES, "and mprotect cannot make it writable");

    /* munmap of part of a mapping. */
    check(munmap(r + 2 * PG, PG) == 0 && r[0] == '0' && r[3 * PG] == '3', "munmap of a middle page keeps the others");
    check(child_signal(read_byte, r + 2 * PG) == SIGSEGV, "the unmapped page is gone");

    /* What cannot be mapped. */
    int dir = open("/tmp", O_RDONLY | O_DIRECTORY);
    n = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, dir, 0);
    check(n == MAP_FAILED && errno == ENODEV, "a directory cannot be mapped (ENODEV)");
    n = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, w, 1000);
    check(n == MAP_FAILED && errno == EINVAL, "an unaligned offset is EINVAL");
    n = mmap(NULL, PG, PROT_READ, 0, fd, 0);
    check(n == MAP_FAILED && errno == EINVAL, "neither MAP_PRIVATE nor MAP_SHARED is EINVAL");

    /* The file changes after being mapped: new mappings see the new bytes, and the pages
     * already written privately keep theirs. */
    check(pwrite(w, "NEW", 3, 0) == 3 && pwrite(w, "two", 3, 2 * PG) == 3, "the file is rewritten");
    char *m = mmap(NULL, 3 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
    check(m != MAP_FAILED && memcmp(m, "NEW", 3) == 0 && memcmp(m + 2 * PG, "two", 3) == 0,
          "a new mapping shows the new bytes");
    check(q[0] == 'X' && p[1] == 'Z', "private copies keep their bytes");
    check(read(fd, &c, 1) == 1 && c == 'N', "read sees the new bytes too");

    /* A mapped file outlives its name. */
    check(unlink(path) == 0 && close(fd) == 0 && close(w) == 0, "the file is unlinked and closed");
    struct stat st;
    check(stat(path, &st) == -1 && errno == ENOENT, "its name is gone");
    check(memcmp(m, "NEW", 3) == 0 && m[PG] == '1' && m[3 * PG - 1] == want[3 * PG - 1],
          "its mapping still shows it, untouched pages included");
    check(munmap(m, 3 * PG) == 0 && munmap(r, 4 * PG) == 0, "the last mappings go");

    puts("mapfile: all ok");
    return 0;
}
