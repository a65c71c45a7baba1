#ifndef MPCD_SYSTEM_SHIMS_H
#define MPCD_SYSTEM_SHIMS_H

/* Linux calls that need _GNU_SOURCE or macros, which Swift cannot import directly. */

/* Restricts the calling thread (and threads it starts later) to `cpus`. Returns 0 or an errno. */
int mpcd_set_cpu_affinity(const int *cpus, int count);

/* Lowers the calling thread's scheduling priority to the normal scheduler at nice 19 (background
   work; a real-time class inherited from the serving thread is dropped). Returns 0 or an errno. */
int mpcd_lower_thread_priority(void);

/* Switches the calling thread (and threads it starts later) to SCHED_FIFO at `priority` (1-99).
   Returns 0 or an errno (EPERM without CAP_SYS_NICE or an RT budget). */
int mpcd_set_realtime_priority(int priority);

/* The connection guard's view of one accepted TCP socket: bytes the kernel has received on it
   (tcpi_bytes_received) and bytes still waiting in its receive queue (SIOCINQ), so that what the
   reader took is the difference. Returns 0, or an errno (ENOTSOCK, EOPNOTSUPP for a non-TCP
   socket, EBADF for a closed one). */
int mpcd_tcp_received(int fd, unsigned long long *received, unsigned long long *queued);

/* The peer of a connected socket as "address:port" (IPv4 or IPv6) into `buffer`. Returns 0 or an errno. */
int mpcd_peer_name(int fd, char *buffer, int size);

/* shutdown(fd, SHUT_RDWR): ends a connection whose descriptor another thread owns, without
   closing the descriptor (its owner sees the end and closes it). Returns 0 or an errno. */
int mpcd_shutdown(int fd);

/* Raises the soft limit of open files to the hard limit (at most `ceiling`); writes the limit in
   force to `limit`. Returns 0 or an errno. */
int mpcd_raise_open_files_limit(unsigned long long ceiling, unsigned long long *limit);

/* Connects a Unix stream socket to `path` and closes it again: 0 when something listens there,
   else the errno (ECONNREFUSED: a stale socket file, EACCES: no permission, ENOENT: no file). */
int mpcd_probe_unix_socket(const char *path);

/* A listening TCP socket on `address` (IPv4 dotted quad) and `port`, non-blocking, close-on-exec,
   SO_REUSEADDR; `port` 0 takes a free port. Writes the descriptor to `fd` and the bound port to
   `bound_port`. Returns 0 or an errno (EINVAL: not an IPv4 address). */
int mpcd_tcp_listen(const char *address, int port, int backlog, int *fd, int *bound_port);

/* accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: a descriptor, or -1 with errno (EAGAIN: none waiting). */
int mpcd_accept_nonblocking(int fd);

/* flock(fd, LOCK_EX | LOCK_NB). Returns 0 or an errno (EWOULDBLOCK: another process holds it). */
int mpcd_try_lock(int fd);

/* Ignores the signals whose default action would end or stop the daemon but that it has no use for:
   SIGHUP (until the daemon installs its reload handler), SIGPIPE, SIGUSR1, SIGUSR2, SIGALRM,
   SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT, SIGXFSZ, SIGXCPU, SIGSYS, SIGTSTP, SIGTTIN, SIGTTOU
   and the real-time signals. */
void mpcd_ignore_stray_signals(void);

/* SIGTERM and SIGINT set a stop flag, SIGHUP a reload flag (async-signal-safe handlers, installed
   before anything else starts, so no signal is ever lost between start and serving). */
void mpcd_install_control_signals(void);
int mpcd_stop_requested(void);
/* Whether SIGHUP came since the last call (and clears it). */
int mpcd_take_reload_request(void);

/* Flushes standard output: 0, or the errno of a failed write (a full disk, /dev/full, a closed pipe). */
int mpcd_flush_stdout(void);

/* From now on until mpcd_serving_ended, a call of exit() writes a line to standard error naming
   its status: mpcd never calls exit() while it serves, so code it loaded did (a plug-in), and the
   daemon would otherwise end without a word. `journal`: prefix the line with the journal's
   priority for critical (standard error is the journal). */
void mpcd_report_exit_while_serving(int journal);
void mpcd_serving_ended(void);

#endif
