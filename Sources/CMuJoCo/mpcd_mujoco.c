#define _GNU_SOURCE
#include "mpcd_mujoco.h"

#include <dlfcn.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

static _Thread_local jmp_buf *jump_target = NULL;
static _Thread_local char last_error[512] = "";

static void on_error(const char *message) {
    snprintf(last_error, sizeof last_error, "%s", message ? message : "unknown error");
    if (jump_target) longjmp(*jump_target, 1);
    /* no guarded call is running: nothing to return to */
    fprintf(stderr, "mpcd: MuJoCo error outside a guarded call: %s\n", last_error);
    abort();
}

static void on_warning(const char *message) { (void)message; }

void mpcd_mujoco_install_handlers(void) {
    mju_user_error = on_error;
    mju_user_warning = on_warning;
}

const char *mpcd_mujoco_last_error(void) { return last_error; }

const char *mpcd_mujoco_library_path(void) {
    Dl_info info;
    if (!dladdr((void *)&mj_step, &info) || !info.dli_fname) return "";
    return info.dli_fname;
}

int mpcd_mujoco_library_matches_headers(void) { return mj_version() == mjVERSION_HEADER; }

/* Runs `body` with the error handler able to jump back here. */
#define GUARDED(failure, cleanup, body)                                                             \
    do {                                                                                            \
        jmp_buf here;                                                                               \
        jmp_buf *previous = jump_target;                                                            \
        if (setjmp(here)) {                                                                         \
            jump_target = previous;                                                                 \
            cleanup;                                                                                \
            return failure;                                                                         \
        }                                                                                           \
        jump_target = &here;                                                                        \
        body;                                                                                       \
        jump_target = previous;                                                                     \
    } while (0)

mjModel *mpcd_mujoco_load(const char *path, char *error, int error_size) {
    mjModel *volatile model = NULL;
    GUARDED(NULL, snprintf(error, (size_t)error_size, "%s", last_error), model = mj_loadXML(path, NULL, error, error_size));
    return model;
}

mjData *mpcd_mujoco_make_data(const mjModel *m) {
    mjData *volatile data = NULL;
    GUARDED(NULL, (void)0, data = mj_makeData(m));
    return data;
}

/* Whether MuJoCo found a position, velocity or acceleration out of bounds (and reset the data). */
static int diverged(const mjData *d) {
    return d->warning[mjWARN_BADQPOS].number || d->warning[mjWARN_BADQVEL].number || d->warning[mjWARN_BADQACC].number;
}

int mpcd_mujoco_step(const mjModel *m, mjData *d, int count) {
    d->warning[mjWARN_BADQPOS].number = d->warning[mjWARN_BADQVEL].number = d->warning[mjWARN_BADQACC].number = 0;
    GUARDED(-1, mj_resetData(m, d), for (int i = 0; i < count && !diverged(d); i++) mj_step(m, d));
    return diverged(d) ? -2 : 0;
}

int mpcd_mujoco_step_begin(const mjModel *m, mjData *d) {
    d->warning[mjWARN_BADQPOS].number = d->warning[mjWARN_BADQVEL].number = d->warning[mjWARN_BADQACC].number = 0;
    GUARDED(-1, mj_resetData(m, d), mj_step1(m, d));
    return diverged(d) ? -2 : 0;
}

/* The rest of mj_step after mj_step1. mj_step2 integrates with Euler whatever the model says, so
   for RK4 the rest of mj_forward and the checks are spelled out here in mj_step's order, as
   MuJoCo 2.2.2 (Debian's) orders them. A later library may order them differently: the test
   splitStepsAreWholeSteps compares this path with mj_step on whatever library is linked. */
static void step_rest(const mjModel *m, mjData *d) {
    if (m->opt.integrator != mjINT_RK4) {
        mj_step2(m, d);
        return;
    }
    mj_fwdActuation(m, d);
    mj_fwdAcceleration(m, d);
    mj_fwdConstraint(m, d);
    mj_sensorAcc(m, d);
    mj_checkAcc(m, d);
    if (m->opt.enableflags & mjENBL_FWDINV) mj_compareFwdInv(m, d);
    mj_RungeKutta(m, d, 4);
}

int mpcd_mujoco_step_finish(const mjModel *m, mjData *d, int count) {
    GUARDED(-1, mj_resetData(m, d), {
        if (!diverged(d)) step_rest(m, d);
        for (int i = 1; i < count && !diverged(d); i++) mj_step(m, d);
    });
    return diverged(d) ? -2 : 0;
}

int mpcd_mujoco_forward(const mjModel *m, mjData *d, int stage) {
    GUARDED(-1, mj_resetData(m, d), {
        if (stage >= 3) {
            mj_fwdPosition(m, d);
            mj_sensorPos(m, d);
            mj_fwdVelocity(m, d);
            mj_sensorVel(m, d);
        } else if (stage >= 1) {
            mj_kinematics(m, d);
            if (stage >= 2) {
                mj_comPos(m, d);
                mj_comVel(m, d);
            }
        }
    });
    return 0;
}
