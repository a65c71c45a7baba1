/* The plug-in ABI is its header (include/mpcd_plugin.h); this file makes it a module Swift can
   import, with mpcd's side of loading one (include/mpcd_plugin_loading.h). */
#define _GNU_SOURCE
#include "mpcd_plugin.h"
#include "mpcd_plugin_loading.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

int mpcd_plugin_abi_version(void) { return MPCD_PLUGIN_ABI_VERSION; }

int mpcd_plugin_private_copy(int fd, long long limit) {
    if (lseek(fd, 0, SEEK_SET) < 0) return -1;
    int copy = memfd_create("mpcd-plugin", MFD_CLOEXEC);
    if (copy < 0) return -1;
    char buffer[1 << 16];
    long long total = 0;
    for (;;) {
        ssize_t got = read(fd, buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) break;
        if (got == 0) return copy;
        total += got;
        if (total > limit) { errno = EFBIG; break; }
        for (ssize_t done = 0; done < got;) {
            ssize_t put = write(copy, buffer + done, (size_t)(got - done));
            if (put < 0 && errno == EINTR) continue;
            if (put < 0) goto failed;
            done += put;
        }
    }
failed:;
    int saved = errno;
    close(copy);
    errno = saved;
    return -1;
}
