/* An example mpcd model plug-in: Gymnasium's Pendulum-v1 (docs/models.md). Build it with
       cc -O2 -shared -fPIC -I Sources/CPluginABI/include examples/plugins/pendulum.c -o libpendulum.so -lm
   and use it with
       [task]
       name = "plugin"
       library = "libpendulum.so"
       parameters = "max_torque=2"        # optional; the defaults are Gymnasium's
   State [theta, theta_dot] (theta = 0 upright), action [torque]; the cost is Gymnasium's negative
   reward on the state before the step. mpcd's tests compile it and check it against mpcd's own
   pendulum step for step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpcd_plugin.h"

typedef struct {
    float gravity, mass, length, max_torque, max_speed, dt;
    float lower[1], upper[1];
} pendulum;

static const char *const state_names[] = {"theta", "theta_dot"};
static const char *const action_names[] = {"torque"};

static float clamp(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* The angle wrapped into [-pi, pi), as Gymnasium's angle_normalize. */
static float wrapped(float theta) {
    float t = fmodf(theta + (float)M_PI, 2 * (float)M_PI);
    if (t < 0) t += 2 * (float)M_PI;
    return t - (float)M_PI;
}

static void step(void *context, float *states, int state_stride, const float *actions, int action_stride, int lanes) {
    const pendulum *p = context;
    for (int k = 0; k < lanes; k++) {
        float theta = states[k], theta_dot = states[state_stride + k];
        float u = clamp(actions[k], -p->max_torque, p->max_torque);
        theta_dot += (3 * p->gravity / (2 * p->length) * sinf(theta) + 3 / (p->mass * p->length * p->length) * u) * p->dt;
        theta_dot = clamp(theta_dot, -p->max_speed, p->max_speed);
        states[k] = theta + theta_dot * p->dt;
        states[state_stride + k] = theta_dot;
    }
    (void)action_stride;
}

static void running_cost(void *context, const float *states, int state_stride, const float *actions, int action_stride,
                         float *costs, int lanes) {
    const pendulum *p = context;
    for (int k = 0; k < lanes; k++) {
        float theta = wrapped(states[k]), theta_dot = states[state_stride + k];
        float u = clamp(actions[k], -p->max_torque, p->max_torque);
        costs[k] += theta * theta + 0.1f * theta_dot * theta_dot + 0.001f * u * u;
    }
    (void)action_stride;
}

int mpcd_plugin_create(const char *parameters, mpcd_plugin *plugin, char *error, int error_size) {
    pendulum *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(error, (size_t)error_size, "out of memory");
        return 1;
    }
    *p = (pendulum){.gravity = 10, .mass = 1, .length = 1, .max_torque = 2, .max_speed = 8, .dt = 0.05f};
    /* parameters: "name=value,name=value" */
    char copy[256];
    snprintf(copy, sizeof copy, "%s", parameters ? parameters : "");
    for (char *item = strtok(copy, ","); item; item = strtok(NULL, ",")) {
        char name[64];
        float value;
        if (sscanf(item, " %63[a-z_] = %f", name, &value) != 2 || !isfinite(value) || value <= 0) {
            snprintf(error, (size_t)error_size, "parameter \"%s\": expected name=value with a positive value", item);
            free(p);
            return 1;
        }
        if (strcmp(name, "gravity") == 0) p->gravity = value;
        else if (strcmp(name, "mass") == 0) p->mass = value;
        else if (strcmp(name, "length") == 0) p->length = value;
        else if (strcmp(name, "max_torque") == 0) p->max_torque = value;
        else if (strcmp(name, "max_speed") == 0) p->max_speed = value;
        else {
            snprintf(error, (size_t)error_size, "unknown parameter \"%s\"; known: gravity, mass, length, max_torque, max_speed", name);
            free(p);
            return 1;
        }
    }
    p->lower[0] = -p->max_torque;
    p->upper[0] = p->max_torque;
    *plugin = (mpcd_plugin){
        .abi_version = MPCD_PLUGIN_ABI_VERSION,
        .state_dimension = 2,
        .action_dimension = 1,
        .state_names = state_names,
        .action_names = action_names,
        .action_lower = p->lower,
        .action_upper = p->upper,
        .dt = p->dt,
        .step = step,
        .running_cost = running_cost,
        .terminal_cost = NULL,
        .context = p,
    };
    return 0;
}
