/* Child processes for serve and demo. */
#include "gw/supervise.h"

#include "grpc/health/v1/health.pb-c.h"
#include "rp/clock.h"
#include "rp/rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

const char *gw_self_exe(void)
{
    static char path[4096];
    if (!path[0]) {
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
        path[n > 0 ? n : 0] = '\0';
    }
    return path;
}

int gw_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

int gw_spawn(const char *exe, const char *const *argv, const char *log_path, pid_t *pid,
             rp_error *err)
{
    size_t n = 0;
    while (argv[n]) n++;
    char **args = calloc(n + 2, sizeof *args);
    if (!args) return rp_errorf(err, RP_ENOMEM, "out of memory");
    args[0] = (char *)exe;
    for (size_t i = 0; i < n; i++) args[i + 1] = (char *)argv[i];
    pid_t parent = getpid();
    pid_t p = fork();
    if (p < 0) {
        free(args);
        return rp_errorf(err, RP_EIO, "cannot start %s %s: fork: %s", exe, argv[0],
                         strerror(errno));
    }
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1); /* the parent died before prctl */
        if (log_path) {
            int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        execv(exe, args);
        fprintf(stderr, "recpipe: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    free(args);
    *pid = p;
    return RP_OK;
}

void gw_describe_status(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status)) snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) snprintf(buf, cap, "killed by signal %d", WTERMSIG(status));
    else snprintf(buf, cap, "stopped (status %d)", status);
}

/* One health probe on a fresh connection (a channel that failed to connect would wait
 * out gRPC's reconnect backoff). 1 SERVING, 2 NOT_SERVING, 0 no answer. */
static int probe(const char *addr)
{
    rp_client *c;
    rp_arena *a;
    rp_client_config cc = {.own_connections = true};
    if (rp_client_create(&cc, &c, NULL) != RP_OK) return 0;
    if (rp_arena_create(0, &a) != RP_OK) {
        rp_client_destroy(c);
        return 0;
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 1000};
    int st = 0;
    if (rp_client_unary(c, addr, "/grpc.health.v1.Health/Check", &req.base,
                        &grpc__health__v1__health_check_response__descriptor, a, &resp, &o,
                        NULL) == RP_OK)
        st = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    rp_arena_destroy(a);
    rp_client_destroy(c);
    return st;
}

int gw_wait_serving(const char *addr, pid_t pid, double timeout_s, rp_error *err)
{
    uint64_t end = rp_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        if (probe(addr) == 1) return RP_OK;
        if (pid > 0) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                char how[64];
                gw_describe_status(status, how, sizeof how);
                return rp_errorf(err, RP_EUNAVAIL, "%s", how);
            }
        }
        if (rp_now_ns() >= end)
            return rp_errorf(err, RP_ETIMEDOUT, "%s not SERVING after %.0f s", addr, timeout_s);
        rp_sleep_ns(100000000ull);
    }
}

int gw_run(const char *exe, const char *const *argv)
{
    pid_t pid;
    if (gw_spawn(exe, argv, NULL, &pid, NULL) != RP_OK) return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void gw_stop_all(pid_t *pids, size_t n, int sig, double grace_s)
{
    for (size_t i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], sig);
    uint64_t end = rp_now_ns() + (uint64_t)(grace_s * 1e9);
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++) {
            int status;
            if (pids[i] > 0 && waitpid(pids[i], &status, WNOHANG) == pids[i]) pids[i] = 0;
            left += pids[i] > 0;
        }
        if (!left) return;
        if (rp_now_ns() >= end) break;
        rp_sleep_ns(20000000ull);
    }
    for (size_t i = 0; i < n; i++) {
        if (pids[i] <= 0) continue;
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
        pids[i] = 0;
    }
}
