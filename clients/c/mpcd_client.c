/*
 * A minimal mpcd client in C: libzmq and nothing else.
 *
 * Connects a REQ socket, asks for the hello, then drives a simulated Gymnasium Pendulum-v1
 * (the same equations, in double precision) from hanging down for 200 steps with the daemon's
 * actions, sending the state form [theta, theta_dot]. Prints the final angle; exits 0 when
 * every reply was an action echoing its observation's sequence number and the pendulum ends
 * upright, 1 otherwise: also on a reply that is not this protocol's, or an action that is not a
 * finite torque within the pendulum's bounds, which it never applies. With a second argument, a JSON object of task parameters (docs/protocol.md,
 * "Parameters"), it first sets them for its session and exits 2 if the daemon refuses them.
 *
 *     cc -O2 -o mpcd_client clients/c/mpcd_client.c -lzmq -lm
 *     ./mpcd_client tcp://127.0.0.1:5555 ['{"target_angle": 0.1}']
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

enum { HELLO = 1, HELLO_REPLY = 2, OBSERVATION = 3, ACTION = 4, ERROR = 5, PARAMETERS = 7, PARAMETERS_REPLY = 8 };

/* The 32-byte header: "MPCD" | version u16 | type u16 | a u64 | b u64 | c u32 | d u32, little-endian
 * (this example assumes a little-endian host, as x86-64 and arm64 Linux are). */
static void make_header(unsigned char out[32], uint16_t type, uint64_t a) {
    uint16_t version = 1;
    uint64_t b = 0;
    uint32_t c = 0, d = 0;
    memcpy(out, "MPCD", 4);
    memcpy(out + 4, &version, 2);
    memcpy(out + 6, &type, 2);
    memcpy(out + 8, &a, 8);
    memcpy(out + 16, &b, 8);
    memcpy(out + 24, &c, 4);
    memcpy(out + 28, &d, 4);
}

/* Whether a first frame is a whole header of this protocol ("MPCD", version 1) and of `type`:
 * anything else on the endpoint (another program, a newer daemon) is never read as an answer. */
static int is_header(const unsigned char *frame, size_t size, uint16_t type) {
    uint16_t version, got;
    if (size != 32 || memcmp(frame, "MPCD", 4) != 0) return 0;
    memcpy(&version, frame + 4, 2);
    memcpy(&got, frame + 6, 2);
    return version == 1 && got == type;
}

/* Receives one multipart message into frames (at most max, each at most cap bytes). */
static int receive(void *socket, unsigned char frames[][256], size_t sizes[], int max) {
    int count = 0, more = 1;
    while (more) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, socket, 0) < 0) {
            zmq_msg_close(&msg);
            return -1;
        }
        if (count < max) {
            sizes[count] = zmq_msg_size(&msg) < 256 ? zmq_msg_size(&msg) : 256;
            memcpy(frames[count], zmq_msg_data(&msg), sizes[count]);
            count++;
        }
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
    }
    return count;
}

/* Sets some of the session's task parameters: `json` is an object of numbers or arrays of numbers.
 * Returns 0 and prints the parameters in force, or 2 and prints the daemon's refusal (1: no reply). */
static int set_parameters(void *socket, const char *json, uint64_t sequence) {
    unsigned char header[32], frames[4][256];
    size_t sizes[4];
    make_header(header, PARAMETERS, sequence);
    zmq_send(socket, header, 32, ZMQ_SNDMORE);
    zmq_send(socket, json, strlen(json), 0);
    if (receive(socket, frames, sizes, 4) < 2) {
        fprintf(stderr, "no reply to the parameters\n");
        return 1;
    }
    if (is_header(frames[0], sizes[0], ERROR)) {
        fprintf(stderr, "parameters refused: %.*s\n", (int)sizes[1], (const char *)frames[1]);
        return 2;
    }
    if (!is_header(frames[0], sizes[0], PARAMETERS_REPLY)) {
        fprintf(stderr, "the reply to the parameters is not this protocol's\n");
        return 1;
    }
    printf("parameters: %.*s\n", (int)sizes[1], (const char *)frames[1]);
    return 0;
}

int main(int argc, char **argv) {
    const char *endpoint = argc > 1 ? argv[1] : "tcp://127.0.0.1:5555";
    void *context = zmq_ctx_new();
    void *socket = zmq_socket(context, ZMQ_REQ);
    int linger = 0, timeout_ms = 2000;
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    if (zmq_connect(socket, endpoint) != 0) {
        fprintf(stderr, "connect %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    unsigned char header[32], frames[4][256];
    size_t sizes[4];

    make_header(header, HELLO, 0);
    zmq_send(socket, header, 32, 0);
    if (receive(socket, frames, sizes, 4) < 2 || !is_header(frames[0], sizes[0], HELLO_REPLY)) {
        fprintf(stderr, "no hello reply from %s\n", endpoint);
        return 1;
    }
    printf("hello: %.*s\n", (int)(sizes[1] < 120 ? sizes[1] : 120), (const char *)frames[1]);

    if (argc > 2) {
        int refused = set_parameters(socket, argv[2], 1);
        if (refused) return refused;
    }

    double theta = M_PI, theta_dot = 0.0, total_cost = 0.0;
    const double g = 10.0, m = 1.0, l = 1.0, dt = 0.05;
    for (uint64_t seq = 2; seq <= 201; seq++) {
        double state[2] = {theta, theta_dot};
        make_header(header, OBSERVATION, seq);
        zmq_send(socket, header, 32, ZMQ_SNDMORE);
        zmq_send(socket, state, sizeof state, 0);
        int n = receive(socket, frames, sizes, 4);
        uint16_t type;
        uint64_t echoed;
        if (n < 2) {
            fprintf(stderr, "no reply to observation %llu\n", (unsigned long long)seq);
            return 1;
        }
        memcpy(&type, frames[0] + 6, 2);
        memcpy(&echoed, frames[0] + 8, 8);
        if (!is_header(frames[0], sizes[0], ACTION) || echoed != seq || sizes[1] != sizeof(double)) {
            fprintf(stderr, "observation %llu: unexpected reply type %u echoing %llu: %.*s\n", (unsigned long long)seq,
                    type, (unsigned long long)echoed, (int)sizes[1], (const char *)frames[1]);
            return 1;
        }
        double u;
        memcpy(&u, frames[1], sizeof u);
        /* never applied: an action that is not a number or beyond the pendulum's torque of 2 (the
         * daemon's hello says its bounds; a daemon planning for another robot answers with others) */
        if (!isfinite(u) || fabs(u) > 2.0 + 1e-6) {
            fprintf(stderr, "observation %llu: action %g is not a torque in [-2, 2]; not applied\n", (unsigned long long)seq, u);
            return 1;
        }
        u = fmax(-2.0, fmin(2.0, u));
        double wrapped = fmod(theta + M_PI, 2 * M_PI);
        if (wrapped < 0) wrapped += 2 * M_PI;
        wrapped -= M_PI;
        total_cost += wrapped * wrapped + 0.1 * theta_dot * theta_dot + 0.001 * u * u;
        theta_dot += (3 * g / (2 * l) * sin(theta) + 3.0 / (m * l * l) * u) * dt;
        theta_dot = fmax(-8.0, fmin(8.0, theta_dot));
        theta += theta_dot * dt;
    }
    double final_angle = fmod(theta + M_PI, 2 * M_PI);
    if (final_angle < 0) final_angle += 2 * M_PI;
    final_angle -= M_PI;
    printf("200 steps: return %.2f, final angle %.4f rad\n", -total_cost, final_angle);
    zmq_close(socket);
    zmq_ctx_term(context);
    return fabs(final_angle) < 0.2 ? 0 : 1;
}
