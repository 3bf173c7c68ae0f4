/* libfastloss called from many threads at once (tests/c_level/test_libfastloss.py builds it
 * with -fsanitize=thread against a thread-sanitised static libfastloss). Every thread calls
 * kernels of several kinds on shared inputs and its own outputs, again and again, and
 * compares each result with the one the main thread computed alone, bit for bit. Exit 0:
 * all equal (and, under ThreadSanitizer, no data race reported: it exits 66 on one). */
#include <libfastloss.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define ROUNDS 20
#define N 5003 /* several blocks, and a tail */
#define C 7

static float x32[N], t32[N], w32[N];
static double x64[N], y64[N];
static float logits[N * C];
static int64_t labels[N];

typedef struct {
    double loss[4];
    float g_mse[N], g_huber[N], h_huber[N], g_ce[N * C];
    double g_bce[N];
} Results;

static Results reference;

static void compute(Results* r) {
    r->loss[0] = fl_mse_loss_grad_f32(x32, t32, NULL, 0, r->g_mse, NULL, N, FASTLOSS_MEAN, 0);
    r->loss[1] = fl_huber_loss_grad_hess_f32(x32, t32, w32, N, r->g_huber, r->h_huber, NULL, N, 0.5, 0.0,
                                             FASTLOSS_SUM, 0);
    r->loss[2] = fl_binary_cross_entropy_with_logits_grad_f64(x64, y64, NULL, 0, NULL, 0, r->g_bce, NULL, N,
                                                              FASTLOSS_MEAN, 0);
    r->loss[3] = fl_cross_entropy_grad_f32(logits, labels, NULL, r->g_ce, NULL, N, C, 1, -100, 0.1,
                                           FASTLOSS_MEAN, 0);
}

static void* worker(void* arg) {
    long* mismatches = (long*)arg;
    Results* r = (Results*)malloc(sizeof(Results));
    if (!r) return NULL;
    for (int round = 0; round < ROUNDS; ++round) {
        memset(r, 0, sizeof(Results));
        compute(r);
        if (memcmp(r, &reference, sizeof(Results)) != 0) ++*mismatches;
    }
    free(r);
    return NULL;
}

int main(void) {
    unsigned s = 12345u;
    for (int i = 0; i < N; ++i) {
        s = s * 1103515245u + 12345u;
        x32[i] = (float)((s >> 8) % 2000) / 500.0f - 2.0f;
        t32[i] = (float)(i % 17) / 8.0f - 1.0f;
        w32[i] = 0.5f + (float)(i % 5) / 4.0f;
        x64[i] = (double)x32[i] * 3.0;
        y64[i] = (double)(i % 3) / 2.0;
        labels[i] = (i % 11 == 0) ? -100 : (int64_t)(s % C);
        for (int c = 0; c < C; ++c) logits[i * C + c] = (float)((s >> (c + 3)) % 1000) / 100.0f - 5.0f;
    }
    memset(&reference, 0, sizeof reference);
    compute(&reference);
    for (int k = 0; k < 4; ++k)
        if (isnan(reference.loss[k])) {
            fprintf(stderr, "call %d refused\n", k);
            return 2;
        }
    pthread_t threads[THREADS];
    long mismatches[THREADS] = {0};
    for (int i = 0; i < THREADS; ++i)
        if (pthread_create(&threads[i], NULL, worker, &mismatches[i]) != 0) return 3;
    long total = 0;
    for (int i = 0; i < THREADS; ++i) {
        pthread_join(threads[i], NULL);
        total += mismatches[i];
    }
    printf("threads %d rounds %d mismatches %ld\n", THREADS, ROUNDS, total);
    return total == 0 ? 0 : 1;
}
