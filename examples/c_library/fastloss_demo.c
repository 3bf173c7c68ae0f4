/* A worked example: a plain C program on libfastloss, the C library (no Python anywhere).
 *
 * Build (README, "From C"), against an installed libfastloss (CMake, pkg-config):
 *   cc -std=c11 -O2 fastloss_demo.c $(pkg-config --cflags --libs fastloss) -o fastloss_demo
 * or against the copy the Python package carries:
 *   cc -std=c11 -O2 fastloss_demo.c $(python -m fastloss config --cflags --libs) -o fastloss_demo
 * or with CMake (find_package(fastloss)): this directory's CMakeLists.txt.
 *
 * The same three calls as examples/c_program (the Python-embedding route), same results:
 *   1. binary cross-entropy from logits with a pos_weight per column, loss + gradient;
 *   2. softmax cross-entropy of an (N, C) batch with class weights and label smoothing;
 *   3. a refused call (a class index out of range): NaN back, the gradient untouched.
 * It prints every result with 17 significant digits, one "name value..." line each, so a
 * test can compare them with the Python API.
 */
#include <libfastloss.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { N = 4, C = 3 };

static void print_array(const char* name, const double* a, ptrdiff_t n) {
    printf("%s", name);
    for (ptrdiff_t i = 0; i < n; ++i) printf(" %.17g", a[i]);
    printf("\n");
}

int main(void) {
    /* the header and the library loaded at run time must be the same ABI */
    if (fastloss_abi_version() != FASTLOSS_ABI_VERSION) {
        fprintf(stderr, "libfastloss %s has ABI %d, this program was built for %d\n", fastloss_version(),
                fastloss_abi_version(), FASTLOSS_ABI_VERSION);
        return 1;
    }

    /* 1. BCE with logits on an (N, C) batch, pos_weight repeating over the columns */
    const double logits[N * C] = {-2.0, 0.5, 3.0, 1.0, -0.25, 0.0, 40.0, -40.0, 2.5, -1.5, 0.75, -3.0};
    const double labels[N * C] = {0, 1, 1, 1, 0, 0.5, 1, 0, 1, 0, 1, 0};
    const double pos_weight[C] = {1.0, 2.0, 0.5};
    double grad[N * C];
    double bce = fl_binary_cross_entropy_with_logits_grad_f64(
        logits, labels, NULL, 0, pos_weight, C, grad, NULL, N * C, FASTLOSS_MEAN, 0);

    /* 2. cross-entropy with class indices, a weight per class and label smoothing 0.1 */
    const double scores[N * C] = {2.0, -1.0, 0.5, 0.1, 0.2, 0.3, -3.0, 4.0, 1.0, 1.5, 1.5, -0.5};
    const int64_t classes[N] = {0, 2, 1, 1};
    const double class_weight[C] = {1.0, 0.5, 2.0};
    double ce_grad[N * C];
    double ce = fl_cross_entropy_grad_f64(scores, classes, class_weight, ce_grad, NULL, N, C, 1,
                                          -100, 0.1, FASTLOSS_MEAN, 0);

    /* 3. a class index outside [0, C): refused before anything is written */
    const int64_t bad_classes[N] = {0, 2, 7, 1};
    double untouched[N * C];
    for (int i = 0; i < N * C; ++i) untouched[i] = 42.0;
    double refused = fl_cross_entropy_grad_f64(scores, bad_classes, NULL, untouched, NULL, N, C, 1,
                                               -100, 0.0, FASTLOSS_MEAN, 0);
    int intact = 1;
    for (int i = 0; i < N * C; ++i) intact &= untouched[i] == 42.0;

    printf("bce_with_logits_loss %.17g\n", bce);
    print_array("bce_with_logits_grad", grad, N * C);
    printf("cross_entropy_loss %.17g\n", ce);
    print_array("cross_entropy_grad", ce_grad, N * C);
    printf("refused %s %s\n", isnan(refused) ? "nan" : "number", intact ? "untouched" : "written");
    return 0;
}
