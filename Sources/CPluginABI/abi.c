/* The plug-in ABI is its header (include/mpcd_plugin.h); this file only makes the header a module
   Swift can import. */
#include "mpcd_plugin.h"

int mpcd_plugin_abi_version(void) { return MPCD_PLUGIN_ABI_VERSION; }
