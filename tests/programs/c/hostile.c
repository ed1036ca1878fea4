/* Bad arguments to the thread, futex, wait and socket calls: each must fail with Linux's
 * errno and never bring the kernel down. Prints one line per failed check and, at the end,
 * `hostile: N checks, F failed`. The test runs it on the host too, so the expectations are
 * Linux's own; `hostile pod` adds the checks that hold only in a pod VM. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <netinet/in.h>
#include <unistd.h>

static int checks, failed;
#define WILD ((void *)0x10)

static void expect(const char *what, long r, int err) {
    checks++;
    if (r != -1 || errno != err) {
        failed++;
        printf("FAIL %s: got %ld errno %d (%s), want -1 errno %d (%s)\n", what, r, r == -1 ? errno : 0,
               r == -1 ? strerror(errno) : "-", err, strerror(err));
    }
}

static void expect_ok(const char *what, long r) {
    checks++;
    if (r < 0) {
        failed++;
        printf("FAIL %s: got %ld errno %d (%s)\n", what, r, errno, strerror(errno));
    }
}

int main(int argc, char **argv) {
    int in_pod = argc > 1 && strcmp(argv[1], "pod") == 0;
    int word = 0;
    expect("futex WAIT on a wild address", syscall(SYS_futex, WILD, FUTEX_WAIT, 0, 0, 0, 0), EFAULT);
    expect("futex WAIT unaligned", syscall(SYS_futex, (char *)&word + 1, FUTEX_WAIT, 0, 0, 0, 0), EINVAL);
    expect("futex WAIT value differs", syscall(SYS_futex, &word, FUTEX_WAIT, 1, 0, 0, 0), EAGAIN);
    struct timespec bad = {0, 2000000000};
    expect("futex WAIT bad timeout", syscall(SYS_futex, &word, FUTEX_WAIT, 0, &bad, 0, 0), EINVAL);
    expect("futex WAIT timeout pointer wild", syscall(SYS_futex, &word, FUTEX_WAIT, 0, WILD, 0, 0), EFAULT);
    struct timespec short_ = {0, 1000000};
    expect("futex WAIT times out", syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &short_, 0, 0), ETIMEDOUT);
    expect("futex WAIT_BITSET with bitset 0", syscall(SYS_futex, &word, FUTEX_WAIT_BITSET, 0, 0, 0, 0), EINVAL);
    expect_ok("futex WAKE_PRIVATE on a wild address finds nobody", syscall(SYS_futex, WILD, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0));
    expect("futex shared WAKE on a wild address", syscall(SYS_futex, WILD, FUTEX_WAKE, 1, 0, 0, 0), EFAULT);
    expect("futex CMP_REQUEUE value differs",
           syscall(SYS_futex, &word, FUTEX_CMP_REQUEUE_PRIVATE, 1, 1, &word + 1, 5), EAGAIN);
    expect("futex REQUEUE negative count", syscall(SYS_futex, &word, FUTEX_REQUEUE_PRIVATE, -1, 1, &word + 1, 0), EINVAL);
    expect("futex unknown op", syscall(SYS_futex, &word, 99, 0, 0, 0, 0), ENOSYS);
    expect("futex WAKE_OP on a wild second word",
           syscall(SYS_futex, &word, FUTEX_WAKE_OP_PRIVATE, 1, 1, WILD, FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0)), EFAULT);

    expect("clone3 with a wild args pointer", syscall(SYS_clone3, WILD, 88), EFAULT);
    unsigned char args[128] = {0};
    expect("clone3 too short", syscall(SYS_clone3, args, 63), EINVAL);
    args[100] = 1;
    expect("clone3 longer with junk past the known size", syscall(SYS_clone3, args, 128), E2BIG);
    expect("clone CLONE_THREAD without CLONE_SIGHAND", syscall(SYS_clone, CLONE_THREAD | CLONE_VM, 0, 0, 0, 0), EINVAL);
    expect("clone CLONE_SIGHAND without CLONE_VM", syscall(SYS_clone, CLONE_SIGHAND, 0, 0, 0, 0), EINVAL);
    expect("set_robust_list bad length", syscall(SYS_set_robust_list, 0, 7), EINVAL);
    expect("tgkill of a thread of another process", syscall(SYS_tgkill, getpid() + 1000, getpid(), 0), ESRCH);
    expect("tgkill bad tid", syscall(SYS_tgkill, getpid(), -5, 0), EINVAL);
    expect("tkill of nobody", syscall(SYS_tkill, 99999, 0), ESRCH);

    stack_t ss = {.ss_sp = WILD, .ss_size = 100, .ss_flags = 0};
    expect("sigaltstack too small", sigaltstack(&ss, 0), ENOMEM);
    expect("sigaltstack wild", syscall(SYS_sigaltstack, WILD, 0), EFAULT);
    ss.ss_size = 1 << 16;
    ss.ss_flags = 5;
    expect("sigaltstack bad flags", sigaltstack(&ss, 0), EINVAL);

    expect("poll too many", syscall(SYS_poll, WILD, 1 << 20, 0), EINVAL);
    expect("poll wild array", syscall(SYS_poll, WILD, 2, 0), EFAULT);
    expect("select with a negative count", syscall(SYS_select, -1, 0, 0, 0, 0), EINVAL);
    fd_set r;
    /* A descriptor just closed, so it lies inside the table Linux checks
       whatever the harness left open (Linux ignores bits past its table). */
    int gone = dup(1);
    close(gone);
    FD_ZERO(&r);
    FD_SET(gone, &r);
    struct timeval tv = {0, 0};
    expect("select on a closed descriptor", select(gone + 1, &r, 0, 0, &tv), EBADF);
    int ep = epoll_create1(0);
    expect_ok("epoll_create1", ep);
    expect("epoll_create1 bad flags", epoll_create1(1), EINVAL);
    expect("epoll_create size 0", epoll_create(0), EINVAL);
    struct epoll_event ev = {.events = EPOLLIN};
    expect("epoll_ctl on itself", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev), EINVAL);
    expect("epoll_ctl on a closed descriptor", epoll_ctl(ep, EPOLL_CTL_ADD, 200, &ev), EBADF);
    int efd = eventfd(0, EFD_NONBLOCK);
    expect("epoll_ctl with a wild event", epoll_ctl(ep, EPOLL_CTL_ADD, efd, WILD), EFAULT);
    expect("epoll_ctl MOD of what is not there", epoll_ctl(ep, EPOLL_CTL_MOD, efd, &ev), ENOENT);
    expect_ok("epoll_ctl ADD", epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev));
    expect("epoll_ctl ADD twice", epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev), EEXIST);
    expect("epoll_ctl bad op", epoll_ctl(ep, 9, efd, &ev), EINVAL);
    expect("epoll_wait maxevents 0", syscall(SYS_epoll_wait, ep, WILD, 0, 0), EINVAL);
    expect("epoll_wait on a non-epoll", syscall(SYS_epoll_wait, efd, WILD, 1, 0), EINVAL);
    uint64_t v = 1;
    write(efd, &v, 8);
    expect("epoll_wait into a wild buffer", syscall(SYS_epoll_wait, ep, WILD, 1, 0), EFAULT);
    expect("eventfd read short", read(efd, &v, 4), EINVAL);
    v = UINT64_MAX;
    expect("eventfd write of all ones", write(efd, &v, 8), EINVAL);
    expect("eventfd2 bad flags", eventfd(0, 0x10), EINVAL);
    expect("timerfd_create bad clock", timerfd_create(99, 0), EINVAL);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    expect("timerfd read when nothing expired", read(tfd, &v, 8), EAGAIN);
    expect("timerfd_settime wild", timerfd_settime(tfd, 0, WILD, 0), EFAULT);
    struct itimerspec its = {{0, 0}, {1, 0}};
    expect("timerfd_settime on an eventfd", timerfd_settime(efd, 0, &its, 0), EINVAL);

    /* In a pod VM: no IPv6 and no UDP on the pod's loopback network. */
    if (in_pod) {
        expect("socket AF_INET6", socket(AF_INET6, SOCK_STREAM, 0), EAFNOSUPPORT);
        expect("socket UDP", socket(AF_INET, SOCK_DGRAM, 0), EPROTONOSUPPORT);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    expect_ok("socket", s);
    expect("bind with a wild address", bind(s, WILD, 16), EFAULT);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1), .sin_addr.s_addr = htonl(0x7f000001)};
    expect("bind short address", bind(s, (void *)&a, 8), EINVAL);
    expect("connect to a port nobody listens on", connect(s, (void *)&a, sizeof a), ECONNREFUSED);
    expect("accept on a socket that does not listen", accept(s, 0, 0), EINVAL);
    expect("getpeername unconnected", getpeername(s, (void *)&a, &(socklen_t){16}), ENOTCONN);
    expect("read from an unconnected socket", read(s, &v, 8), ENOTCONN);
    expect("socket call on a non-socket", listen(efd, 1), ENOTSOCK);
    expect("setsockopt unknown", setsockopt(s, 1, 9999, &v, 4), ENOPROTOOPT);

    printf("hostile: %d checks, %d failed\n", checks, failed);
    return failed != 0;
}
