#ifndef MPCD_PLUGIN_LOADING_H
#define MPCD_PLUGIN_LOADING_H

/* mpcd's side of loading a plug-in, not part of the ABI a plug-in is built against. */

/* A private in-memory copy (memfd) of the whole file open on `fd`, read from its start, for dlopen
   through /proc/self/fd: the code mpcd runs is the copy's, so a library rewritten in place on disk
   (cp over it) cannot change it under the running daemon. The copy's descriptor, or -1 with errno
   (EFBIG past `limit` bytes). */
int mpcd_plugin_private_copy(int fd, long long limit);

#endif
