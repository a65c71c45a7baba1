#ifndef MPCD_SYSTEM_SHIMS_H
#define MPCD_SYSTEM_SHIMS_H

/* Linux calls that need _GNU_SOURCE or macros, which Swift cannot import directly. */

/* Restricts the calling thread (and threads it starts later) to `cpus`. Returns 0 or an errno. */
int mpcd_set_cpu_affinity(const int *cpus, int count);

/* Lowers the calling thread's scheduling priority to nice 19 (background work). Returns 0 or an errno. */
int mpcd_lower_thread_priority(void);

/* Switches the calling thread (and threads it starts later) to SCHED_FIFO at `priority` (1-99).
   Returns 0 or an errno (EPERM without CAP_SYS_NICE or an RT budget). */
int mpcd_set_realtime_priority(int priority);

#endif
