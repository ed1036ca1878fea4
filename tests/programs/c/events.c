/* Waiting on descriptors across threads: an eventfd written by another thread wakes an
 * epoll_wait; a periodic timerfd counts its expirations; poll and select see a pipe; a
 * socketpair and a loopback TCP connection carry bytes both ways. Prints one line per
 * result and `events: ok` when all hold (exit 1 otherwise). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int efd, bad;
#define CHECK(c, ...) do { if (!(c)) { bad = 1; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

static void *writer(void *a) {
    (void)a;
    usleep(50000);
    uint64_t v = 5;
    if (write(efd, &v, 8) != 8) bad = 1;
    return 0;
}

static long ms_since(struct timespec *a) {
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a->tv_sec) * 1000 + (b.tv_nsec - a->tv_nsec) / 1000000;
}

static void *server(void *a) {
    int l = *(int *)a;
    int c = accept4(l, 0, 0, SOCK_CLOEXEC);
    char buf[16] = {0};
    ssize_t n = read(c, buf, sizeof buf - 1);
    if (n > 0) { buf[0] = 'P'; write(c, buf, n); }
    close(c);
    return 0;
}

int main(void) {
    efd = eventfd(0, EFD_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    pthread_t t;
    pthread_create(&t, 0, writer, 0);
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 5000);
    uint64_t v = 0;
    read(efd, &v, 8);
    printf("epoll: %d event, data %lu, value %lu\n", n, (unsigned long)out[0].data.u64, (unsigned long)v);
    CHECK(n == 1 && out[0].data.u64 == 42 && v == 5, "epoll_wait on an eventfd another thread writes");
    pthread_join(t, 0);

    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
    timerfd_settime(tfd, 0, &its, 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t exp = 0, total = 0;
    while (total < 5) { read(tfd, &exp, 8); total += exp; }
    long ms = ms_since(&t0);
    printf("timerfd: %lu expirations in at least 90 ms: %s\n", (unsigned long)total, ms >= 90 ? "yes" : "no");
    CHECK(total >= 5 && ms >= 90, "timerfd every 20 ms: %lu in %ld ms", (unsigned long)total, ms);

    int p[2];
    pipe(p);
    struct pollfd pf[2] = {{p[0], POLLIN, 0}, {p[1], POLLOUT, 0}};
    n = poll(pf, 2, 100);
    CHECK(n == 1 && pf[0].revents == 0 && pf[1].revents == POLLOUT, "poll of an empty pipe: %d", n);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    n = poll(pf, 1, 100);
    ms = ms_since(&t0);
    CHECK(n == 0 && ms >= 90, "poll times out after 100 ms: %d in %ld ms", n, ms);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    write(p[1], "x", 1);
    struct timeval tv = {1, 0};
    n = select(p[0] + 1, &r, 0, 0, &tv);
    printf("select: %d ready\n", n);
    CHECK(n == 1 && FD_ISSET(p[0], &r), "select sees a pipe with a byte");

    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    write(sv[0], "ping", 4);
    char buf[16] = {0};
    read(sv[1], buf, sizeof buf);
    CHECK(strcmp(buf, "ping") == 0, "socketpair carries bytes");

    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    CHECK(bind(l, (void *)&a, sizeof a) == 0 && listen(l, 4) == 0, "bind and listen");
    socklen_t alen = sizeof a;
    getsockname(l, (void *)&a, &alen);
    pthread_create(&t, 0, server, &l);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(c, (void *)&a, sizeof a) == 0, "connect to 127.0.0.1:%d", ntohs(a.sin_port));
    write(c, "hello", 5);
    memset(buf, 0, sizeof buf);
    n = read(c, buf, sizeof buf - 1);
    printf("tcp: port %d answered %s\n", ntohs(a.sin_port) >= 32768 ? 1 : 0, buf);
    CHECK(n == 5 && strcmp(buf, "Pello") == 0, "loopback TCP round trip: %d %s", n, buf);
    CHECK(read(c, buf, sizeof buf) == 0, "end of file once the server closed");
    pthread_join(t, 0);

    puts(bad ? "events: FAILED" : "events: ok");
    return bad;
}
