/*
 * LD_PRELOAD shim: sets TCP_NODELAY on every socket the process accepts.
 *
 * It emulates, without rebuilding mcp-adapter, the one-line fix recommended in BENCHMARKS.md
 * (`axum::serve::ListenerExt::tap_io(|s| s.set_nodelay(true))` on the adapter's listener), so the
 * benchmark can measure the fixed adapter beside the current one in the same run. Built by
 * scripts/bench into target/bench/nodelay.so; used only when BENCH_NODELAY_SHIM points at it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int s) {
    if (s >= 0) {
        int one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    int s = real(fd, addr, len, flags);
    nodelay(s);
    return s;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    int s = real(fd, addr, len);
    nodelay(s);
    return s;
}
