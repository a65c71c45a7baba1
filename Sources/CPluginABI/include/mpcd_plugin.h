#ifndef MPCD_PLUGIN_H
#define MPCD_PLUGIN_H

/* mpcd's model plug-in ABI, version 1: a robot model compiled into a shared library, for a model
   that is not MJCF (docs/models.md, "Compiled model plug-ins"). The configuration names it:

       [task]
       name = "plugin"
       library = "libmyrobot.so"      # relative to the configuration file
       parameters = "mass=1.5"        # optional: a string handed to mpcd_plugin_create

   The library exports one function, mpcd_plugin_create, which fills in a description of the
   model. Batches are structure-of-arrays float32: component c of lane k is at
   `values[c * stride + k]`; `lanes` is a multiple of 8, and `stride` may be larger (the lanes are a
   block of a wider row): write only lanes 0 to lanes - 1 of the states (step) and of the costs,
   never an input. A plug-in that writes elsewhere is refused when it is loaded. mpcd calls step
   and the costs from several threads at once, on disjoint lanes: they must not keep state between
   calls (or must guard it), and must not call back into mpcd. A plug-in is code that runs in the daemon with its privileges:
   install only what you would install as a program. */

#include <stdint.h>

#define MPCD_PLUGIN_ABI_VERSION 1

typedef struct mpcd_plugin {
    /* MPCD_PLUGIN_ABI_VERSION of the header the plug-in was compiled with. */
    uint32_t abi_version;
    /* The state and the action: their sizes (1 to 1000 each) and names (as many as the size). */
    uint32_t state_dimension;
    uint32_t action_dimension;
    const char *const *state_names;
    const char *const *action_names;
    /* Each action's bounds: finite, lower below upper. */
    const float *action_lower;
    const float *action_upper;
    /* Seconds one step covers (1e-4 to 10). */
    float dt;
    /* x <- f(x, u) for every lane, in place. */
    void (*step)(void *context, float *states, int state_stride, const float *actions, int action_stride, int lanes);
    /* costs[k] += c(x_k, u_k): the running cost of the state before the step. */
    void (*running_cost)(void *context, const float *states, int state_stride, const float *actions, int action_stride,
                         float *costs, int lanes);
    /* costs[k] += c_T(x_k): the cost of the last planned state (may be NULL: none). */
    void (*terminal_cost)(void *context, const float *states, int state_stride, float *costs, int lanes);
    /* Handed back to every call. */
    void *context;
} mpcd_plugin;

/* Fills in `plugin` for `parameters` (the configuration's string, or "" when it has none).
   Returns 0, or anything else with a reason in `error` (a NUL-terminated string of at most
   `error_size` bytes). Called once per load (at start and at every reload). */
typedef int (*mpcd_plugin_create_function)(const char *parameters, mpcd_plugin *plugin, char *error, int error_size);

int mpcd_plugin_create(const char *parameters, mpcd_plugin *plugin, char *error, int error_size);

#endif
