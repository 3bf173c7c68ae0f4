/* libfastloss after fork (tests/c_level/test_libfastloss.py): the parent runs a kernel on two
 * threads (an OpenMP parallel region), forks, and the child runs the same call. GNU libgomp
 * cannot start a parallel region in such a child (it would wait forever for the parent's
 * thread pool); the library's fork handler makes the child run on one thread instead, with the
 * same bits. An alarm turns a hang into a failure. Exit 0: the child finished, same bits. */
#include <libfastloss.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 1000003

int main(void) {
    float* x = (float*)malloc(sizeof(float) * N);
    float* t = (float*)malloc(sizeof(float) * N);
    float* g_parent = (float*)malloc(sizeof(float) * N);
    float* g_child = (float*)malloc(sizeof(float) * N);
    if (!x || !t || !g_parent || !g_child) return 3;
    for (int i = 0; i < N; ++i) {
        x[i] = (float)(i % 1000) / 250.0f - 2.0f;
        t[i] = (float)(i % 7) / 3.0f;
    }
    const double parent = fl_huber_loss_grad_f32(x, t, NULL, 0, g_parent, NULL, N, 0.75, FASTLOSS_MEAN, 2);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 4;
    if (pid == 0) {
        alarm(60);
        const double child = fl_huber_loss_grad_f32(x, t, NULL, 0, g_child, NULL, N, 0.75, FASTLOSS_MEAN, 2);
        int same = memcmp(&child, &parent, sizeof child) == 0 && memcmp(g_child, g_parent, sizeof(float) * N) == 0;
        _exit(same ? 0 : 1);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) return 5;
    if (WIFSIGNALED(status)) {
        printf("child killed by signal %d (a hang ends with SIGALRM)\n", WTERMSIG(status));
        return 6;
    }
    printf("openmp %d child exit %d\n", fastloss_openmp(), WEXITSTATUS(status));
    return WEXITSTATUS(status);
}
