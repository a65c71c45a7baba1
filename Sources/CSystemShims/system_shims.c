#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>

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
    /* On Linux the nice value is per thread: PRIO_PROCESS with a thread id sets only that thread. */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    return setpriority(PRIO_PROCESS, (id_t)tid, 19) == 0 ? 0 : errno;
}

int mpcd_set_realtime_priority(int priority) {
    struct sched_param parameters = {.sched_priority = priority};
    return sched_setscheduler(0, SCHED_FIFO, &parameters) == 0 ? 0 : errno;
}
