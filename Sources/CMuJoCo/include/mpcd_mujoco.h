#ifndef MPCD_MUJOCO_H
#define MPCD_MUJOCO_H

/* MuJoCo's C API (Debian's libmujoco-dev: headers in /usr/include/mujoco), and the calls mpcd makes
   through this shim. Only Sources/Models/MuJoCoModel.swift imports it: no MuJoCo type goes past
   that file.

   MuJoCo reports a fatal error (an exhausted stack, an allocation that failed) through
   mju_user_error and, by default, ends the process. These wrappers install a handler that jumps
   back out of MuJoCo to the wrapper instead (longjmp; MuJoCo is C, nothing to unwind), which
   returns -1 with MuJoCo's message: a fatal error ends one rollout, never the daemon. */
#include <mujoco/mujoco.h>

/* Installs the error handler and silences warnings (sampled rollouts meet them routinely; a lane
   that diverges shows as non-finite values). Idempotent. */
void mpcd_mujoco_install_handlers(void);

/* The message of the last fatal error on this thread. */
const char *mpcd_mujoco_last_error(void);

/* The file the MuJoCo library was loaded from (MuJoCo's AVX build where `make` put one beside the
   binary, else the system's; scripts/mujoco_library.sh), or "" when the loader cannot say. */
const char *mpcd_mujoco_library_path(void);

/* Whether the library loaded is the version of the headers mpcd was compiled against (mjModel's
   and mjData's layouts are those of one version). */
int mpcd_mujoco_library_matches_headers(void);

/* mj_loadXML, guarded. NULL on failure, with the reason in `error`. */
mjModel *mpcd_mujoco_load(const char *path, char *error, int error_size);

/* mj_makeData, guarded: NULL on failure (mpcd_mujoco_last_error says why). */
mjData *mpcd_mujoco_make_data(const mjModel *m);

/* `count` calls of mj_step. 0; -1 after a fatal error; -2 when the state diverged (a position,
   velocity or acceleration MuJoCo finds bad, NaN or above 1e10): MuJoCo then resets the data to
   the model's initial state and carries on, which would pass a blown-up rollout off as a calm
   one. The data is reset either way. */
int mpcd_mujoco_step(const mjModel *m, mjData *d, int count);

/* `count` physics steps with the first split in two, so that a cost can read the state's
   kinematics, velocities and sensors as the step itself computes them instead of computing them
   again: mpcd_mujoco_step_begin is mj_step1 (checks, positions, velocities, their sensors), after
   which the caller reads the state's quantities and sets ctrl; mpcd_mujoco_step_finish is the rest
   of that mj_step (actuation, acceleration, constraints, the integrator the model names, RK4
   included) and then count - 1 calls of mj_step. The same operations in mj_step's order, so the
   same states. Return values as mpcd_mujoco_step's. */
int mpcd_mujoco_step_begin(const mjModel *m, mjData *d);
int mpcd_mujoco_step_finish(const mjModel *m, mjData *d, int count);

/* The forward computation up to `stage`: 1 kinematics, 2 and velocities, 3 and position and
   velocity sensors. 0, or -1 after a fatal error (the data is then reset). */
int mpcd_mujoco_forward(const mjModel *m, mjData *d, int stage);

#endif
