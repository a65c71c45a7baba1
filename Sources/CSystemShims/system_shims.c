#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "system_shims.h"

int mpcd_set_cpu_affinity(const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) return EINVAL;
        CPU_SET(cpus[i], &set);
    }
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : errno;
}

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int mpcd_lower_thread_priority(void) {
    /* A thread started by the serving thread inherits its real-time class (realtime_priority),
       under which nice means nothing: back to the normal scheduler first. */
    struct sched_param normal = {.sched_priority = 0};
    if (sched_getscheduler(0) != SCHED_OTHER && sched_setscheduler(0, SCHED_OTHER, &normal) != 0) return errno;
    /* On Linux the nice value is per thread: PRIO_PROCESS with a thread id sets only that thread. */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    return setpriority(PRIO_PROCESS, (id_t)tid, 19) == 0 ? 0 : errno;
}

int mpcd_set_realtime_priority(int priority) {
    struct sched_param parameters = {.sched_priority = priority};
    return sched_setscheduler(0, SCHED_FIFO, &parameters) == 0 ? 0 : errno;
}

#include <linux/sockios.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

/* the kernel's struct tcp_info: glibc's predates tcpi_bytes_received (Linux 4.1) */
#include <linux/tcp.h>

int mpcd_tcp_received(int fd, unsigned long long *received, unsigned long long *queued) {
    struct tcp_info info;
    memset(&info, 0, sizeof info);
    socklen_t length = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return errno;
    /* only when the kernel filled the structure that far */
    if (length < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received) return EOPNOTSUPP;
    int waiting = 0;
    if (ioctl(fd, SIOCINQ, &waiting) != 0) return errno;
    *received = info.tcpi_bytes_received;
    *queued = (unsigned long long)(waiting < 0 ? 0 : waiting);
    return 0;
}

int mpcd_peer_name(int fd, char *buffer, int size) {
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    if (getpeername(fd, (struct sockaddr *)&address, &length) != 0) return errno;
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (address.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&address;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (address.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&address;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    } else {
        return EAFNOSUPPORT;
    }
    snprintf(buffer, (size_t)size, "%s:%d", host, port);
    return 0;
}

int mpcd_shutdown(int fd) { return shutdown(fd, SHUT_RDWR) == 0 ? 0 : errno; }

int mpcd_raise_open_files_limit(unsigned long long ceiling, unsigned long long *limit) {
    struct rlimit current;
    if (getrlimit(RLIMIT_NOFILE, &current) != 0) return errno;
    rlim_t wanted = current.rlim_max;
    if (wanted == RLIM_INFINITY || wanted > ceiling) wanted = ceiling;
    if (wanted > current.rlim_cur) {
        struct rlimit raised = {.rlim_cur = wanted, .rlim_max = current.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) current.rlim_cur = wanted;
    }
    *limit = current.rlim_cur;
    return 0;
}

int mpcd_probe_unix_socket(const char *path) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address.sun_path) return ENAMETOOLONG;
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    int result = connect(fd, (struct sockaddr *)&address, sizeof address) == 0 ? 0 : errno;
    close(fd);
    return result;
}

int mpcd_try_lock(int fd) { return flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno; }

#include <signal.h>

void mpcd_ignore_stray_signals(void) {
    const int stray[] = {SIGHUP, SIGPIPE, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT,
                         SIGXFSZ, SIGXCPU, SIGSYS, SIGTSTP, SIGTTIN, SIGTTOU};
    for (unsigned i = 0; i < sizeof stray / sizeof stray[0]; i++) signal(stray[i], SIG_IGN);
    for (int s = SIGRTMIN; s <= SIGRTMAX; s++) signal(s, SIG_IGN);
}

static volatile sig_atomic_t stop_requested = 0, reload_requested = 0;

static void on_stop_signal(int number) {
    (void)number;
    stop_requested = 1;
}

static void on_reload_signal(int number) {
    (void)number;
    reload_requested = 1;
}

void mpcd_install_control_signals(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    action.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    action.sa_handler = on_reload_signal;
    sigaction(SIGHUP, &action, NULL);
}

int mpcd_stop_requested(void) { return stop_requested; }

int mpcd_take_reload_request(void) {
    int requested = reload_requested;
    reload_requested = 0;
    return requested;
}

int mpcd_tcp_listen(const char *address, int port, int backlog, int *fd, int *bound_port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (port < 0 || port > 65535 || inet_pton(AF_INET, address, &sa.sin_addr) != 1) return EINVAL;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return errno;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(s, backlog) != 0) {
        int error = errno;
        close(s);
        return error;
    }
    socklen_t length = sizeof sa;
    if (getsockname(s, (struct sockaddr *)&sa, &length) == 0) *bound_port = ntohs(sa.sin_port);
    *fd = s;
    return 0;
}

int mpcd_accept_nonblocking(int fd) {
    return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int mpcd_flush_stdout(void) {
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) return errno ? errno : EIO;
    return 0;
}

static volatile sig_atomic_t serving = 0, to_journal = 0;

static void report_exit(int status, void *unused) {
    (void)unused;
    if (!serving) return;
    char line[256];
    int n = snprintf(line, sizeof line,
                     "%smpcd: the process is ending by exit(%d) while serving, not by mpcd's stop: code mpcd loaded "
                     "(a plug-in, or a library it uses) called exit()\n", to_journal ? "<2>" : "", status);
    if (n > 0) {
        ssize_t written = write(2, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
        (void)written;
    }
}

void mpcd_report_exit_while_serving(int journal) {
    static int registered = 0;
    to_journal = journal != 0;
    serving = 1;
    if (!registered) {
        registered = 1;
        on_exit(report_exit, NULL);
    }
}

void mpcd_serving_ended(void) { serving = 0; }
